"""ToolLens dense text baseline: cosine(intent, capability text) with the packaged model.

Ranks all 463 capabilities for each of the 1,877 intents of the official test split
(``caprank.evaluation.baselines.dense_scores``) and scores the rankings with
``caprank.evaluation.metrics`` (MRR, Hit@1, Hit@10, NDCG@10; the metrics equal trec_eval's,
``tests/test_eval_crosscheck.py``). Two capability texts are compared: the importer's
description alone, and ``capability_text`` (description plus each tool's name and
description), which is what the embed stage encodes.

    python -m benchmarks.toollens_dense --toollens ../shared/data/toollens
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from caprank.config import load_config
from caprank.data.toollens import import_toollens
from caprank.embeddings.cache import embed_texts
from caprank.embeddings.catalog_text import capability_texts
from caprank.evaluation.baselines import dense_scores
from caprank.evaluation.metrics import ranking_metrics

KEEP = ("mrr", "hit@1", "hit@10", "ndcg@10")


def rank_metrics(
    intent_ids: list[str], cap_ids: list[str], scores: np.ndarray, relevant: dict[str, set[str]]
) -> dict[str, float]:
    """The evaluation library's metrics; ``scores[i, j]`` scores capability j for intent i."""
    col = {c: j for j, c in enumerate(cap_ids)}
    rel = [{col[c]: 1.0 for c in relevant[q]} for q in intent_ids]
    means = ranking_metrics(scores, rel, [1, 10]).means()
    return {name: round(float(means[name]), 4) for name in KEEP}


def dense_baseline(toollens: str | Path, home: str | Path) -> dict:
    """Metrics of the dense cosine baseline on the official test split, per text variant."""
    cfg = load_config(overrides=[f"paths.home={home}"])
    ds = import_toollens(toollens)
    labels = ds.labels.filter(ds.labels["split"].to_numpy(zero_copy_only=False) == "test")
    relevant: dict[str, set[str]] = {}
    for q, c in zip(
        labels["intent_id"].to_pylist(), labels["capability_id"].to_pylist(), strict=True
    ):
        relevant.setdefault(q, set()).add(c)
    text_of = dict(
        zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
    )
    intent_ids = sorted(relevant, key=int)
    cap_ids = ds.capabilities["capability_id"].to_pylist()
    start = time.perf_counter()
    intents, _ = embed_texts([text_of[q] for q in intent_ids], cfg)
    variants = {
        "description": ds.capabilities["description"].to_pylist(),
        "capability_text": capability_texts(ds.capabilities, ds.tools),
    }
    out: dict = {"intents": len(intent_ids), "capabilities": len(cap_ids)}
    for name, texts in variants.items():
        caps, _ = embed_texts(texts, cfg)
        out[name] = rank_metrics(intent_ids, cap_ids, dense_scores(intents, caps), relevant)
    out["seconds"] = round(time.perf_counter() - start, 2)
    out["model"] = cfg.embedding.text_model
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toollens", default=os.environ.get("TOOLLENS", "../shared/data/toollens"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        print(json.dumps(dense_baseline(args.toollens, home)))


if __name__ == "__main__":
    main()
