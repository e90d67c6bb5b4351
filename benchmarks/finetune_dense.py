"""Dense cosine with the base encoder against the fine-tuned one, on ToolLens.

For each setting (``warm``: the official split; ``cold``: the importer's cold split, 20%
of capabilities never in training), fine-tunes the packaged encoder on that setting's
training pairs exactly as the embed stage does (``caprank.training.data.train_pairs``:
train labels only), then ranks all 463 capabilities for every test intent by cosine with
either encoder. Metrics: MRR, Hit@1/5/10, NDCG@10 with 95% bootstrap intervals.

    python -m benchmarks.finetune_dense --toollens ../shared/data/toollens --splits warm,cold
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from caprank.config import load_config
from caprank.data.toollens import import_toollens
from caprank.embeddings.cache import embed_texts
from caprank.embeddings.catalog_text import capability_texts
from caprank.embeddings.finetune import finetune_encoder
from caprank.evaluation.baselines import dense_scores
from caprank.evaluation.benchmark import metrics_ci
from caprank.training.data import train_pairs


def setting(toollens: str, split: str, cfg, work: Path) -> dict:
    """Base and fine-tuned dense cosine on one ToolLens split's test labels."""
    ds = import_toollens(toollens, split=split)
    cap_ids = ds.capabilities["capability_id"].to_pylist()
    cap_texts = capability_texts(ds.capabilities, ds.tools)
    catalog = dict(zip(cap_ids, cap_texts, strict=True))
    text_of = dict(
        zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
    )
    test = ds.labels.filter(ds.labels["split"].to_numpy(zero_copy_only=False) == "test")
    relevant: dict[str, set[str]] = {}
    for q, c in zip(test["intent_id"].to_pylist(), test["capability_id"].to_pylist(), strict=True):
        relevant.setdefault(q, set()).add(c)
    intent_ids = sorted(relevant)
    col = {c: j for j, c in enumerate(cap_ids)}
    rel = [{col[c]: 1.0 for c in relevant[q]} for q in intent_ids]
    texts = [text_of[q] for q in intent_ids]

    pairs = train_pairs(ds, cfg)
    base = cfg.embedding.text_model
    ft = finetune_encoder(
        pairs,
        catalog,
        base,
        cfg.embedding.finetune,
        work / split,
        seed=cfg.embedding.seed,
        threads=cfg.training.torch_threads,
        encode=lambda t: embed_texts(t, cfg)[0],
    )
    out: dict = {"pairs": len(pairs), "finetune": {k: v for k, v in ft.info().items()}}
    for name, model in (("dense", base), ("dense_ft", ft.name)):
        q = embed_texts(texts, cfg, text_model=model)[0]
        c = embed_texts(cap_texts, cfg, text_model=model)[0]
        out[name] = {k: v for k, v in metrics_ci(dense_scores(q, c), rel, cfg).items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toollens", default=os.environ.get("TOOLLENS", "../shared/data/toollens"))
    parser.add_argument("--work", default=".bench/finetune")
    parser.add_argument("--home", default=".bench/home")
    parser.add_argument("--splits", default="warm,cold")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cfg = load_config(
        overrides=[
            f"paths.home={args.home}",
            f"training.torch_threads={args.threads}",
            *args.overrides,
        ]
    )
    out: dict = {}
    for name in args.splits.split(","):
        started = time.perf_counter()
        split = {"warm": "official", "cold": "cold"}[name]
        out[name] = setting(args.toollens, split, cfg, Path(args.work))
        out[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name}: {json.dumps(out[name])}", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
