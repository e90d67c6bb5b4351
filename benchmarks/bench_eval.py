"""Benchmark of the evaluation library at 20,000 queries x 1,000 items.

Measures, in one run and on the same seeded data:
- ``ranking_metrics`` (ranks of relevant items only) against a plain numpy baseline that
  fully sorts every row, and against ranx and trec_eval (pytrec_eval via ir-measures) on a
  1,000-query slice (their inputs are dicts, which do not scale to 20M cells);
- ``diversity_metrics`` (partitioned top-k) against a full stable sort;
- the gate's paired bootstrap (1,000 resamples of 20,000 queries).
Prints progress lines and, last, one JSON object of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from caprank.config import EvaluationConfig
from caprank.evaluation.gate import paired_bootstrap_delta
from caprank.evaluation.metrics import diversity_metrics, ranking_metrics


def _best_of(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def make_data(n_queries: int, n_items: int, seed: int) -> tuple[np.ndarray, sp.csr_matrix]:
    """Scores with signal on 1-3 graded relevant items per query, rounded to 3 decimals so
    ties are common (as with BM25 or quantized scores)."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_queries, n_items)).astype(np.float32)
    n_rel = rng.integers(1, 4, n_queries)
    rows = np.repeat(np.arange(n_queries), n_rel)
    cols = np.concatenate([rng.choice(n_items, k, replace=False) for k in n_rel])
    grades = rng.integers(1, 4, rows.size).astype(np.float64)
    scores[rows, cols] += 1.5
    rel = sp.csr_matrix((grades, (rows, cols)), shape=(n_queries, n_items))
    return np.round(scores, 1), rel


def sort_baseline(scores: np.ndarray, rel: sp.csr_matrix, ks: list[int]) -> dict[str, float]:
    """Textbook version: stable-sort every row, gather grades in rank order, accumulate."""
    order = np.argsort(-scores, axis=1, kind="stable")
    dense = rel.toarray()
    gains = np.take_along_axis(dense, order, axis=1)
    hits = gains > 0
    positions = np.arange(1, scores.shape[1] + 1)
    discount = 1.0 / np.log2(positions + 1.0)
    ideal = -np.sort(-dense, axis=1)
    n_rel = hits.sum(axis=1)
    first = hits.argmax(axis=1) + 1
    precision = np.cumsum(hits, axis=1) / positions
    out = {"mrr": float(np.mean(1.0 / first))}
    for k in ks:
        out[f"hit@{k}"] = float(np.mean(first <= k))
        idcg = (ideal[:, :k] * discount[:k]).sum(axis=1)
        out[f"ndcg@{k}"] = float(np.mean((gains[:, :k] * discount[:k]).sum(axis=1) / idcg))
        out[f"map@{k}"] = float(np.mean((precision[:, :k] * hits[:, :k]).sum(axis=1) / n_rel))
    out["ndcg"] = float(np.mean((gains * discount).sum(axis=1) / (ideal * discount).sum(axis=1)))
    out["map"] = float(np.mean((precision * hits).sum(axis=1) / n_rel))
    return out


def ranx_eval(scores: np.ndarray, rel: sp.csr_matrix, ks: list[int]) -> tuple[float, float]:
    """Seconds to build ranx's Run/Qrels and to evaluate (warm numba), ranking passed as
    distinct scores in our tie order."""
    import ranx

    n_q, n_items = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    lil = rel.tolil()
    start = time.perf_counter()
    run = ranx.Run(
        {f"q{q}": {f"d{i}": float(n_items - p) for p, i in enumerate(order[q])} for q in range(n_q)}
    )
    qrels = ranx.Qrels(
        {
            f"q{q}": {f"d{i}": int(g) for i, g in zip(lil.rows[q], lil.data[q], strict=True)}
            for q in range(n_q)
        }
    )
    build = time.perf_counter() - start
    metrics = ["mrr", "ndcg", "map", *(f"{m}@{k}" for k in ks for m in ("hit_rate", "ndcg", "map"))]
    ranx.evaluate(qrels, run, metrics)  # compile / warm up
    seconds, _ = _best_of(lambda: ranx.evaluate(qrels, run, metrics), 3)
    return build, seconds


def trec_eval(scores: np.ndarray, rel: sp.csr_matrix, ks: list[int]) -> float:
    import ir_measures
    from ir_measures import AP, RR, Success, nDCG

    n_q, n_items = scores.shape
    coo = rel.tocoo()
    start = time.perf_counter()
    qrels = [
        ir_measures.Qrel(str(q), str(i), int(g))
        for q, i, g in zip(coo.row, coo.col, coo.data, strict=True)
    ]
    run = [
        ir_measures.ScoredDoc(str(q), str(i), float(scores[q, i]))
        for q in range(n_q)
        for i in range(n_items)
    ]
    measures = [RR, nDCG, AP, *(m @ k for k in ks for m in (Success, nDCG, AP))]
    ir_measures.pytrec_eval.calc_aggregate(measures, qrels, run)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--slice", type=int, default=1_000, help="queries for ranx/trec_eval")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = EvaluationConfig()
    ks = list(cfg.cutoffs)
    scores, rel = make_data(args.queries, args.items, cfg.seed)
    print(f"data: {args.queries} queries x {args.items} items, {rel.nnz} relevant entries")

    ours_s, ours = _best_of(lambda: ranking_metrics(scores, rel, ks), args.repeats)
    base_s, base = _best_of(lambda: sort_baseline(scores, rel, ks), args.repeats)
    means = ours.means()
    worst = max(abs(means[name] - base[name]) for name in base)
    assert worst < 1e-6, f"baseline disagrees by {worst}"
    print(f"ranking_metrics {ours_s:.3f} s; full-sort baseline {base_s:.3f} s")

    top_s, _ = _best_of(lambda: diversity_metrics(scores, cfg.coverage_k), args.repeats)
    sort_s, _ = _best_of(
        lambda: np.argsort(-scores, axis=1, kind="stable")[:, : cfg.coverage_k], args.repeats
    )
    print(f"diversity top-{cfg.coverage_k} {top_s:.3f} s; full stable sort {sort_s:.3f} s")

    per_query = ours.per_query["mrr"]
    other = np.roll(per_query, 1)
    boot_s, _ = _best_of(
        lambda: paired_bootstrap_delta(
            per_query, other, cfg.bootstrap_samples, cfg.confidence, cfg.seed
        ),
        args.repeats,
    )
    print(f"paired bootstrap ({cfg.bootstrap_samples} x {args.queries}) {boot_s:.3f} s")

    sl = slice(0, args.slice)
    small_scores, small_rel = scores[sl], rel[sl]
    small_s, _ = _best_of(lambda: ranking_metrics(small_scores, small_rel, ks), args.repeats)
    ranx_build, ranx_s = ranx_eval(small_scores, small_rel, ks)
    trec_s = trec_eval(small_scores, small_rel, ks)
    print(
        f"slice of {args.slice}: ours {small_s:.4f} s; ranx build {ranx_build:.2f} s + "
        f"evaluate {ranx_s:.3f} s; trec_eval (with input conversion) {trec_s:.2f} s"
    )

    figures = {
        "benchmark": "bench-eval",
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.python_version()}",
        "queries": args.queries,
        "items": args.items,
        "ranking_metrics_s": round(ours_s, 4),
        "full_sort_baseline_s": round(base_s, 4),
        "speedup_vs_full_sort": round(base_s / ours_s, 2),
        "diversity_topk_s": round(top_s, 4),
        "full_sort_topk_s": round(sort_s, 4),
        "speedup_topk_vs_sort": round(sort_s / top_s, 2),
        "paired_bootstrap_s": round(boot_s, 4),
        "slice_queries": args.slice,
        "slice_ours_s": round(small_s, 4),
        "slice_ranx_evaluate_s": round(ranx_s, 4),
        "slice_ranx_build_s": round(ranx_build, 3),
        "slice_trec_eval_s": round(trec_s, 3),
        "speedup_vs_ranx_evaluate": round(ranx_s / small_s, 2),
        "speedup_vs_trec_eval": round(trec_s / small_s, 2),
        "max_abs_diff_vs_baseline": worst,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
