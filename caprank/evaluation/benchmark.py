"""Ranking quality of any dataset in the data contract: SHGAT against the baselines.

``benchmark_dataset`` embeds the catalog, trains SHGAT from scratch with the resolved
config (no tracking, no resume), and scores it exactly as serving does (the bundle
loaded with ``caprank.online.models.load_model_dir``, ranked through its ``ranker``)
beside the evaluate stage's baselines (BM25, dense cosine, logistic regression) on the
same held-out queries the evaluate stage uses (``caprank.evaluation.heldout``): the
test labels, or for a dataset without labels the latest period of its log. What
``caprank benchmark`` and ``make bench-quality`` print (docs/benchmarks.md).

With ``embedding.finetune.enabled`` the embed stage fine-tunes the encoder on the
dataset's training pairs; SHGAT is trained and served on the fine-tuned vectors, the
``dense`` row stays the base encoder's cosine and ``dense_ft`` is the fine-tuned one's.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset, load_dataset
from caprank.evaluation.bootstrap import mean_interval
from caprank.evaluation.heldout import held_out
from caprank.evaluation.metrics import ranking_metrics
from caprank.evaluation.stage import default_baselines, encode_intents
from caprank.files import atomic_write_json

KEEP = ("mrr", "hit@1", "hit@3", "hit@5", "hit@10", "ndcg@10")
CI_KEEP = (*KEEP, "map")
CUTOFFS = [1, 3, 5, 10]


def metrics(scores: np.ndarray, rel) -> dict[str, float]:
    """Capability-level MRR, Hit@1/3/5/10 and NDCG@10, means over the queries."""
    m = ranking_metrics(scores, rel, CUTOFFS).means()
    return {k: round(float(m[k]), 4) for k in KEEP}


def metrics_ci(scores: np.ndarray, rel, cfg: CaprankConfig) -> dict[str, list[float]]:
    """Every metric as [mean, low, high]: a percentile bootstrap over test queries
    (``evaluation.bootstrap_samples`` resamples at ``evaluation.confidence``)."""
    per_query = ranking_metrics(scores, rel, CUTOFFS).per_query
    ev = cfg.evaluation
    out = {}
    for k in CI_KEEP:
        iv = mean_interval(per_query[k], ev.bootstrap_samples, ev.confidence, ev.seed)
        out[k] = [round(iv.estimate, 4), round(iv.low, 4), round(iv.high, 4)]
    return out


def evidence_segments(
    scored: dict[str, np.ndarray], queries, with_evidence: set[str], cfg: CaprankConfig
) -> dict[str, dict]:
    """MRR [mean, low, high] of every ranker on the queries whose answer SHGAT has
    training evidence for (an id row: ``with_evidence``) and on those whose answer it
    has none for (scored by the prior alone): the seen and unseen segments."""
    labels = {
        c: "with evidence" if c in with_evidence else "without evidence" for c in queries.item_ids
    }
    seg = queries.segments(labels)
    out: dict[str, dict] = {}
    for name in ("with evidence", "without evidence"):
        rows = np.flatnonzero(seg == name)
        if rows.size:
            rel = queries.relevance[rows]
            out[name] = {"queries": int(rows.size)} | {
                ranker: metrics_ci(scores[rows], rel, cfg)["mrr"]
                for ranker, scores in scored.items()
            }
    return out


def served_scores(bundle_dir: Path, cfg, catalog, texts: list[str], vecs: np.ndarray) -> np.ndarray:
    """Scores through the serving path: load_model_dir(...).ranker, one intent at a time."""
    from caprank.online.models import load_model_dir

    ranker = load_model_dir(bundle_dir, cfg, catalog, None).ranker
    return np.stack(
        [ranker.score(ranker.query(v, t), None) for v, t in zip(vecs, texts, strict=True)]
    )


def train_run(ds: Dataset, emb_dir: Path, out: Path, cfg: CaprankConfig) -> dict:
    """Train from scratch (no tracking, no resume); the figures of the training run."""
    from caprank.training.stage import train

    started = time.perf_counter()
    result = train(ds, cfg, emb_dir, out, track=False, resume=False)
    wall = time.perf_counter() - started
    return {
        "steps": result.fit.steps,
        "best_step": result.fit.best_step,
        "best_valid_mrr": round(result.fit.best_valid_mrr, 4),
        "valid_without_evidence": round(result.fit.valid_without_evidence, 4),
        "fit_seconds": round(result.fit.seconds, 1),
        "stage_seconds": round(wall, 1),
        "experiences_per_s": round(result.fit.experiences_per_s, 1),
        "experiences": result.summary["experiences"],
        "sources": result.summary["sources"],
        "linear_start": result.fit.linear_start,
    }


def _finetune_row(emb_dir: Path) -> dict | None:
    """The fine-tuning figures the embed stage recorded (None: the base encoder)."""
    from caprank.embeddings.stage import MANIFEST

    summary = json.loads((emb_dir / MANIFEST).read_text(encoding="utf-8"))
    ft = summary.get("finetune")
    return None if ft is None else {k: ft[k] for k in ("name", "steps", "seconds", "pairs")}


def ensure_embeddings(ds: Dataset, cfg: CaprankConfig, emb_dir: Path) -> Path:
    """The embed stage's output for ``ds``'s catalog, computed once per work folder."""
    from caprank.embeddings.stage import embed

    if not emb_dir.exists():
        embed(ds, cfg, emb_dir)
    return emb_dir


def benchmark_dataset(
    ds_dir: str | Path,
    cfg: CaprankConfig,
    work: str | Path,
    *,
    emb_dir: Path | None = None,
    reuse: bool = False,
    drop: tuple[str, ...] = (),
) -> dict:
    """Train on ``ds_dir`` under ``work`` and score SHGAT and the baselines on its
    held-out queries; one row of the benchmark's JSON. ``reuse`` scores the bundle a
    previous run left in ``work``; ``drop`` leaves baselines out of the row."""
    from caprank.embeddings.stage import load_embeddings
    from caprank.online.catalog import catalog_from_tables

    ds = load_dataset(ds_dir)
    work = Path(work)
    emb_dir = ensure_embeddings(ds, cfg, emb_dir or work / "embeddings")
    text_model = load_embeddings(emb_dir, cfg).text_model  # registers a fine-tuned one
    bundle_dir, train_file = work / "bundle", work / "train.json"
    if reuse and (bundle_dir / "bundle.json").is_file():
        train_row = json.loads(train_file.read_text()) if train_file.is_file() else None
    else:
        train_row = train_run(ds, emb_dir, work, cfg)
        atomic_write_json(train_file, train_row)
    test = held_out(ds, cfg)
    queries = test.queries
    catalog = catalog_from_tables(ds.tools, ds.capabilities, str(ds_dir))
    texts, rel = [str(t) for t in queries.texts], queries.relevance
    vecs = encode_intents(texts, text_model, cfg)
    scored = {"shgat": served_scores(bundle_dir, cfg, catalog, texts, vecs)}
    for name, make in default_baselines(ds, cfg, cfg.embedding.text_model).items():
        if name not in drop:
            scored[name] = make(queries, catalog)
    if text_model != cfg.embedding.text_model and "dense" not in drop:
        scored["dense_ft"] = default_baselines(ds, cfg, text_model)["dense"](queries, catalog)
    row: dict = {ranker: metrics(scores, rel) for ranker, scores in scored.items()}
    row["ci"] = {ranker: metrics_ci(scores, rel, cfg) for ranker, scores in scored.items()}
    bundle_meta = json.loads((bundle_dir / "bundle.json").read_text(encoding="utf-8"))
    row["segments"] = evidence_segments(scored, queries, set(bundle_meta["id_capabilities"]), cfg)
    row["train"] = train_row
    row["finetune"] = _finetune_row(emb_dir)
    row["test"] = {"queries": len(queries), "items": queries.n_items, "from": test.describe()}
    return row


def machine(threads: int) -> str:
    return f"{os.cpu_count()}-core CPU VM, no GPU, torch threads {threads}"
