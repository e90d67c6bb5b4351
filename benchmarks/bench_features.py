"""Benchmark: capability feature snapshots over 1,000,000 events.

Generates a seeded interaction log (~300 capabilities, 30 days) conforming to the
interactions schema, times ``compute_capability_features`` and, as the same-run
baseline, a straightforward implementation that filters and groups the log with pandas
once per snapshot and window and assembles rows capability by capability (graph features
with networkx). Both outputs are compared before any figure is printed. Also times the
whole stage, ``build_features`` (compute, input content hash, atomic Parquet write).
The last output line is one JSON object.

    python benchmarks/bench_features.py [--events N] [--capabilities N] [--days N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from networkx.algorithms import bipartite

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.data.schemas import (
    CAPABILITIES,
    INTERACTIONS,
    OUTCOMES,
    TOOLS,
    empty_table,
    usage_count_column,
)
from caprank.features.compute import compute_capability_features, default_snapshot_times
from caprank.features.stage import build_features

START = datetime(2026, 10, 1, tzinfo=UTC)


def _lists(values: pa.Array, lengths: np.ndarray) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def synthetic_dataset(n_events: int, n_caps: int, days: int, seed: int) -> Dataset:
    """A seeded catalog and log; popularity is Zipf-like, some capabilities arrive late."""
    rng = np.random.default_rng(seed)
    n_tools = max(4, int(n_caps * 0.8))
    tool_ids = pa.array([f"tool{i:04d}" for i in range(n_tools)])
    tools = pa.table(
        {"tool_id": tool_ids, "name": tool_ids, "description": tool_ids, "category": tool_ids},
        schema=TOOLS,
    )
    cap_ids = pa.array([f"cap{i:05d}" for i in range(n_caps)])
    sizes = rng.integers(1, 5, n_caps)
    cap_tools = pc.take(tool_ids, pa.array(rng.integers(0, n_tools, sizes.sum())))
    created = np.full(n_caps, None, dtype=object)
    late = rng.choice(n_caps, n_caps // 10, replace=False)
    created[late] = [START + timedelta(days=float(d)) for d in rng.uniform(0, days, len(late))]
    caps = pa.table(
        {
            "capability_id": cap_ids,
            "description": cap_ids,
            "tool_ids": _lists(cap_tools, sizes),
            "created_at": pa.array(created.tolist(), type=CAPABILITIES.field("created_at").type),
        },
        schema=CAPABILITIES,
    )

    popularity = 1.0 / np.arange(1, n_caps + 1) ** 0.8
    selected = rng.choice(n_caps, n_events, p=popularity / popularity.sum())
    start_us = int(START.timestamp() * 1e6)
    ts = np.sort(rng.integers(start_us, start_us + days * 86_400_000_000, n_events))
    success_p = rng.uniform(0.3, 0.95, n_caps)[selected]
    draw = rng.random(n_events)
    outcome = np.where(draw < success_p, 0, np.where(draw < success_p + 0.1, 1, 2))
    n_context = rng.integers(1, 4, n_events)
    slate = 5
    ids = pc.binary_join_element_wise("e", pa.array(np.arange(n_events)).cast(pa.string()), "")
    sessions = pa.array(np.arange(n_events) // 3).cast(pa.string())
    log = pa.table(
        {
            "event_id": ids,
            "timestamp": pa.array(ts).cast(INTERACTIONS.field("timestamp").type),
            "session_id": sessions,
            "user_id": pa.nulls(n_events, pa.string()),
            "intent_id": pa.nulls(n_events, pa.string()),
            "intent_text": pa.array(np.full(n_events, "find something")),
            "context_tools": _lists(
                pc.take(tool_ids, pa.array(rng.integers(0, n_tools, n_context.sum()))), n_context
            ),
            "candidate_ids": _lists(
                pc.take(cap_ids, pa.array(rng.integers(0, n_caps, n_events * slate))),
                np.full(n_events, slate),
            ),
            "selected_capability": pc.take(cap_ids, pa.array(selected)),
            "rank": pa.array(rng.integers(1, slate + 1, n_events).astype(np.int32)),
            "outcome": pc.take(pa.array(OUTCOMES), pa.array(outcome)),
            "execution_time_ms": pa.array(rng.lognormal(5.0, 0.8, n_events)),
            "feedback": pa.nulls(n_events, pa.int8()),
            "propensity": pa.array(rng.uniform(0.05, 1.0, n_events)),
            "model_version": pa.array(np.full(n_events, "bench")),
        },
        schema=INTERACTIONS,
    )
    return Dataset(
        tools=tools,
        capabilities=caps,
        intents=empty_table("intents"),
        labels=empty_table("labels"),
        interactions=log,
    )


def baseline_features(ds: Dataset, cfg: CaprankConfig) -> pd.DataFrame:
    """The straightforward version: pandas filters/groupbys per snapshot, rows per capability."""
    fcfg = cfg.features
    log = ds.interactions.select(
        ["timestamp", "selected_capability", "outcome", "execution_time_ms"]
    ).to_pandas()
    log["score"] = log["outcome"].map(
        {"success": 1.0, "partial": fcfg.partial_success_weight, "failure": 0.0}
    )
    catalog = ds.capabilities.to_pylist()
    rows = []
    for snap in default_snapshot_times(ds):
        t = pd.Timestamp(snap)
        past = log[log["timestamp"] < t]
        groups = past.groupby("selected_capability")
        n, score, exec_sum = groups.size(), groups["score"].sum(), groups["execution_time_ms"].sum()
        windows = {}
        for d in fcfg.windows_days:
            recent = past[past["timestamp"] >= t - pd.Timedelta(days=d)]
            windows[d] = recent.groupby("selected_capability").size()
        p0 = past["score"].mean() if len(past) else fcfg.success_prior_mean
        exec0 = past["execution_time_ms"].mean() if len(past) else 0.0
        present = [c for c in catalog if c["created_at"] is None or c["created_at"] <= snap]
        graph = nx.Graph()
        for c in present:
            graph.add_node(c["capability_id"])
            graph.add_edges_from((c["capability_id"], ("tool", x)) for x in c["tool_ids"])
        rank = nx.pagerank(graph, alpha=fcfg.pagerank_damping, tol=1e-12, max_iter=1000)
        proj = bipartite.projected_graph(graph, [c["capability_id"] for c in present])
        clustering = nx.clustering(proj)
        m = fcfg.success_prior_strength
        for c in present:
            cid = c["capability_id"]
            k = int(n.get(cid, 0))
            row = {
                "capability_id": cid,
                "event_timestamp": t,
                "tool_count": len(c["tool_ids"]),
                "avg_execution_time_ms": exec_sum.get(cid, 0.0) / k if k else exec0,
                "success_rate": (score.get(cid, 0.0) + m * p0) / (k + m) if k + m else p0,
                "usage_count_total": k,
                "pagerank_score": rank[cid] * graph.number_of_nodes(),
                "clustering_coefficient": clustering[cid],
            }
            for d in fcfg.windows_days:
                row[usage_count_column(d)] = int(windows[d].get(cid, 0))
            rows.append(row)
    return pd.DataFrame(rows)


def _same(fast: pa.Table, slow: pd.DataFrame) -> None:
    got = fast.to_pandas().sort_values(["event_timestamp", "capability_id"], ignore_index=True)
    want = slow.sort_values(["event_timestamp", "capability_id"], ignore_index=True)
    for col in want.columns:
        if col in ("capability_id", "event_timestamp"):
            assert (got[col] == want[col]).all(), col
        else:
            np.testing.assert_allclose(got[col], want[col], rtol=1e-6, atol=1e-9, err_msg=col)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--capabilities", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = CaprankConfig()

    t0 = time.perf_counter()
    ds = synthetic_dataset(args.events, args.capabilities, args.days, args.seed)
    gen_s = time.perf_counter() - t0
    print(f"generated {args.events} events in {gen_s:.1f}s", flush=True)

    t0 = time.perf_counter()
    fast = compute_capability_features(ds, cfg)
    fast_s = time.perf_counter() - t0
    print(f"compute_capability_features: {fast_s:.2f}s, {fast.num_rows} rows", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        built = build_features(ds, cfg, Path(tmp))
        build_s = time.perf_counter() - t0
    print(f"build_features (compute + input hash + Parquet): {build_s:.2f}s", flush=True)

    t0 = time.perf_counter()
    slow = baseline_features(ds, cfg)
    slow_s = time.perf_counter() - t0
    print(f"baseline (pandas per snapshot): {slow_s:.2f}s, {len(slow)} rows", flush=True)
    _same(fast, slow)

    print(
        json.dumps(
            {
                "benchmark": "features",
                "events": args.events,
                "capabilities": args.capabilities,
                "days": args.days,
                "snapshots": int(pc.count_distinct(fast["event_timestamp"]).as_py()),
                "rows": fast.num_rows,
                "seconds": round(fast_s, 3),
                "events_per_s": round(args.events / fast_s),
                "build_features_seconds": round(build_s, 3),
                "build_rows": built.rows,
                "baseline_seconds": round(slow_s, 3),
                "speedup_vs_baseline": round(slow_s / fast_s, 2),
                "outputs_match": True,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
