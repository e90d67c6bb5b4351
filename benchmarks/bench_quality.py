"""Ranking quality on ToolLens: SHGAT vs BM25, dense cosine and logistic regression.

Three settings, each trained from scratch with the resolved config (defaults unless
``--set`` overrides), on 2 CPU threads unless told otherwise:

* ``warm``: the official split (every test capability has training intents);
* ``cold``: the importer's cold split (a seeded 20% of capabilities never in training);
* ``logs``: setting (b): no labels in training, only interaction logs simulated under
  the weak BM25 logging policy (epsilon-greedy); evaluated on the held-out test labels
  beside that logging policy's own ranking.

SHGAT is scored exactly as serving and the evaluation reports score it: the trained
bundle is loaded with ``caprank.online.models.load_model_dir`` and ranked through its
``ranker``. Metrics are capability-level MRR, Hit@1/3/10 and NDCG@10 on all 463
capabilities. The last line of output is one JSON object keyed by split and ranker.

    python -m benchmarks.bench_quality --toollens ../shared/data/toollens
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from caprank.config import load_config
from caprank.data.dataset import load_dataset, write_dataset
from caprank.data.simulate import simulate, simulation_metadata
from caprank.data.toollens import import_toollens
from caprank.embeddings.stage import embed
from caprank.evaluation.bootstrap import mean_interval
from caprank.evaluation.metrics import ranking_metrics
from caprank.evaluation.queries import queries_from_labels
from caprank.evaluation.stage import default_baselines, encode_intents
from caprank.files import atomic_write_json
from caprank.online.catalog import catalog_from_tables
from caprank.online.models import load_model_dir
from caprank.training.stage import train

KEEP = ("mrr", "hit@1", "hit@3", "hit@10", "ndcg@10")
CI_KEEP = ("mrr", "hit@1", "hit@3", "hit@5", "hit@10", "ndcg@10", "map")


def metrics(scores: np.ndarray, rel) -> dict[str, float]:
    m = ranking_metrics(scores, rel, [1, 3, 10]).means()
    return {k: round(float(m[k]), 4) for k in KEEP}


def metrics_ci(scores: np.ndarray, rel, cfg) -> dict[str, list[float]]:
    """Every metric as [mean, low, high]: a percentile bootstrap over test queries
    (``evaluation.bootstrap_samples`` resamples at ``evaluation.confidence``)."""
    per_query = ranking_metrics(scores, rel, [1, 3, 5, 10]).per_query
    ev = cfg.evaluation
    out = {}
    for k in CI_KEEP:
        iv = mean_interval(per_query[k], ev.bootstrap_samples, ev.confidence, ev.seed)
        out[k] = [round(iv.estimate, 4), round(iv.low, 4), round(iv.high, 4)]
    return out


def baseline_scores(ds, cfg, queries, catalog) -> dict[str, np.ndarray]:
    """The evaluate stage's baselines (BM25, dense cosine, logistic regression fit on the
    non-test labels) on the test queries, so that each gets per-query values for its
    interval."""
    baselines = default_baselines(ds, cfg, cfg.embedding.text_model)
    return {name: make(queries, catalog) for name, make in baselines.items()}


def served_scores(bundle_dir: Path, cfg, catalog, texts: list[str], vecs: np.ndarray) -> np.ndarray:
    """Scores through the serving path: load_model_dir(...).ranker, one intent at a time."""
    ranker = load_model_dir(bundle_dir, cfg, catalog, None).ranker
    return np.stack(
        [ranker.score(ranker.query(v, t), None) for v, t in zip(vecs, texts, strict=True)]
    )


def train_split(ds, emb_dir: Path, out: Path, cfg) -> dict:
    """Train from scratch (no tracking, no resume); the figures of the training run."""
    started = time.perf_counter()
    result = train(ds, cfg, emb_dir, out, track=False, resume=False)
    wall = time.perf_counter() - started
    return {
        "steps": result.fit.steps,
        "best_step": result.fit.best_step,
        "best_valid_mrr": round(result.fit.best_valid_mrr, 4),
        "fit_seconds": round(result.fit.seconds, 1),
        "stage_seconds": round(wall, 1),
        "experiences_per_s": round(result.fit.experiences_per_s, 1),
        "experiences": result.summary["experiences"],
        "sources": result.summary["sources"],
    }


def run_split(name: str, ds_dir: Path, emb_dir: Path, out: Path, cfg, reuse: bool) -> dict:
    ds = load_dataset(ds_dir)
    bundle_dir, train_file = out / name / "bundle", out / name / "train.json"
    if reuse and (bundle_dir / "bundle.json").is_file():  # score the bundle trained before
        train_row = json.loads(train_file.read_text()) if train_file.is_file() else None
    else:
        train_row = train_split(ds, emb_dir, out / name, cfg)
        atomic_write_json(train_file, train_row)
    queries = queries_from_labels(ds, "test")
    catalog = catalog_from_tables(ds.tools, ds.capabilities, "toollens")
    texts, rel = [str(t) for t in queries.texts], queries.relevance
    vecs = encode_intents(texts, cfg.embedding.text_model, cfg)
    scored = {"shgat": served_scores(bundle_dir, cfg, catalog, texts, vecs)}
    scored.update(baseline_scores(ds, cfg, queries, catalog))
    if name == "logs":
        # the simulator's logging policy ranks by the same BM25 over the same capability
        # text (plus exploration): its greedy ranking is the bm25 row
        scored.pop("logreg", None)  # it learns from labels, which this setting does not use
    row = {ranker: metrics(scores, rel) for ranker, scores in scored.items()}
    row["ci"] = {ranker: metrics_ci(scores, rel, cfg) for ranker, scores in scored.items()}
    row["train"] = train_row
    print(f"{name}: {json.dumps(row)}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toollens", default=os.environ.get("TOOLLENS", "../shared/data/toollens"))
    parser.add_argument("--work", default=".bench/quality", help="datasets, embeddings, bundles")
    parser.add_argument("--home", default=".bench/home", help="run directory (embedding cache)")
    parser.add_argument("--splits", default="warm,cold,logs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--reuse", action="store_true", help="score bundles a previous run left in --work"
    )
    args = parser.parse_args()
    work = Path(args.work)
    cfg = load_config(
        overrides=[
            f"paths.home={args.home}",
            f"training.torch_threads={args.threads}",
            *args.overrides,
        ]
    )
    emb_dir = work / "embeddings"
    datasets = {}
    for split in ("official", "cold"):
        path = work / f"toollens-{split}"
        if not path.exists():
            write_dataset(import_toollens(args.toollens, split=split), path)
        datasets[split] = path
    if not emb_dir.exists():  # the catalog (and so the embeddings) is the same for both
        embed(load_dataset(datasets["official"]), cfg, emb_dir)
    logs_dir = work / "toollens-logs"
    if "logs" in args.splits and not logs_dir.exists():
        ds = load_dataset(datasets["official"])
        ds.interactions = simulate(ds, cfg)
        write_dataset(ds, logs_dir, simulation=simulation_metadata(ds.interactions))
    log_cfg = cfg.model_copy(deep=True)
    log_cfg.training.source = "interactions"
    out: dict = {}
    plan = {
        "warm": (datasets["official"], cfg),
        "cold": (datasets["cold"], cfg),
        "logs": (logs_dir, log_cfg),
    }
    for name in args.splits.split(","):
        ds_dir, run_cfg = plan[name]
        out[name] = run_split(name, ds_dir, emb_dir, work / "runs", run_cfg, args.reuse)
    out["machine"] = f"{os.cpu_count()}-core CPU VM, no GPU, torch threads {args.threads}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
