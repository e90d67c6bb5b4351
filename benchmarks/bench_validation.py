"""What validating a dataset costs, against the plain structural load of the same files.

Builds a seeded synthetic dataset (catalog sized like the embedded default, N interaction
events), writes it with the contract writer, then times in the same process:
  baseline  ``load_dataset``: the structural read every later stage does anyway;
  validate  ``validate_dataset``: structure + Great Expectations suites + pyarrow checks.
GX's one-off import is timed apart. The last line printed is one JSON object of figures.

    python -m benchmarks.bench_validation --events 1000000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset, load_dataset, write_dataset
from caprank.data.schemas import CAPABILITIES, INTENTS, INTERACTIONS, LABELS, OUTCOMES, TOOLS
from caprank.data.validation import validate_dataset

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _ids(prefix: str, n: int) -> pa.Array:
    return pa.array([f"{prefix}{i}" for i in range(n)])


def _lists(rng: np.random.Generator, ids: pa.Array, rows: int, low: int, high: int) -> pa.Array:
    sizes = rng.integers(low, high + 1, size=rows)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    items = ids.take(pa.array(rng.integers(0, len(ids), size=int(offsets[-1]))))
    return pa.ListArray.from_arrays(pa.array(offsets), items)


def synthetic_dataset(cfg: CaprankConfig, events: int) -> Dataset:
    """A valid dataset: every id resolves, every value in range, newest event fresh."""
    rng = np.random.default_rng(cfg.data.seed)
    synth = cfg.data.synth
    n_tools, n_caps = synth.n_tools, synth.n_capabilities
    n_intents = n_caps * synth.intents_per_capability
    tool_ids, cap_ids, intent_ids = _ids("t", n_tools), _ids("c", n_caps), _ids("q", n_intents)
    tools = pa.table(
        [tool_ids, _ids("tool ", n_tools), _ids("does thing ", n_tools),
         _ids("cat", n_tools).take(pa.array(rng.integers(0, synth.n_categories, n_tools)))],
        schema=TOOLS,
    )  # fmt: skip
    caps = pa.table(
        [cap_ids, _ids("capability ", n_caps),
         _lists(rng, tool_ids, n_caps, 1, synth.max_tools_per_capability),
         pa.array([NOW - timedelta(days=60)] * n_caps, pa.timestamp("us", tz="UTC"))],
        schema=CAPABILITIES,
    )  # fmt: skip
    intents = pa.table([intent_ids, _ids("please do ", n_intents)], schema=INTENTS)
    labels = pa.table(
        [intent_ids, cap_ids.take(pa.array(np.arange(n_intents) % n_caps)),
         pa.array(np.ones(n_intents, np.int8)),
         pa.array(np.where(rng.random(n_intents) < synth.test_fraction, "test", "train"))],
        schema=LABELS,
    )  # fmt: skip
    slate = cfg.data.simulate.slate_size
    seconds = rng.integers(0, synth.days * 86_400, size=events)
    stamps = np.datetime64(NOW.replace(tzinfo=None), "us") - seconds.astype("timedelta64[s]")
    candidates = _lists(rng, cap_ids, events, slate, slate)
    rank = rng.integers(1, slate + 1, size=events)
    selected = pc_take_list_item(candidates, rank - 1, slate)
    feedback = rng.integers(1, 6, size=events).astype(np.int8)
    interactions = pa.table(
        [_ids("e", events), pa.array(stamps, pa.timestamp("us", tz="UTC")),
         _ids("s", events // 3 + 1).take(pa.array(np.arange(events) // 3)),
         pa.nulls(events, pa.string()),
         intent_ids.take(pa.array(rng.integers(0, n_intents, events))),
         pa.array(["find me something"] * events),
         _lists(rng, tool_ids, events, 0, 3), candidates, selected,
         pa.array(rank.astype(np.int32)),
         pa.array(np.array(OUTCOMES)[rng.integers(0, 3, events)]),
         pa.array(rng.gamma(2.0, 150.0, events)),
         pa.array(feedback, mask=rng.random(events) > cfg.data.simulate.feedback_rate),
         pa.array(rng.uniform(0.05, 1.0, events)),
         pa.array(["bm25"] * events)],
        schema=INTERACTIONS,
    )  # fmt: skip
    return Dataset(tools, caps, intents, labels, interactions, {"source": "bench_validation"})


def pc_take_list_item(lists: pa.ListArray, index: np.ndarray, width: int) -> pa.Array:
    """Item ``index[i]`` of fixed-width list ``i``."""
    return lists.flatten().take(pa.array(np.arange(len(lists)) * width + index))


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = CaprankConfig()

    start = time.perf_counter()
    import great_expectations  # noqa: F401  (timed once, apart from the runs)

    gx_import_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as tmp:
        root = write_dataset(synthetic_dataset(cfg, args.events), Path(tmp) / "ds")
        validate_dataset(root, cfg, now=NOW)  # warm-up
        load_s = _best(lambda: load_dataset(root), args.repeats)
        validate_s = _best(lambda: validate_dataset(root, cfg, now=NOW), args.repeats)
        report = validate_dataset(root, cfg, now=NOW)
    if not report.ok:
        raise SystemExit(f"benchmark dataset should be valid: {report.headline()}")
    figures = {
        "benchmark": "validation",
        "events": args.events,
        "rows_total": sum(n or 0 for n in report.rows.values()),
        "checks": len(report.checks),
        "gx_import_s": round(gx_import_s, 3),
        "load_s": round(load_s, 3),
        "validate_s": round(validate_s, 3),
        "validate_over_load": round(validate_s / load_s, 2),
        "events_per_s": round(args.events / validate_s),
        "machine": "2-core CPU, no GPU",
    }
    print(f"load_dataset {load_s:.3f}s, validate_dataset {validate_s:.3f}s ({report.headline()})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
