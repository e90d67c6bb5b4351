"""Interaction rows for experiment tests: outcomes of one version at given times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from caprank.data.schemas import INTERACTIONS
from caprank.files import atomic_write_parquet


def outcome_table(
    version: str, outcomes: list[str], seconds, ms=10.0, users: list[str] | None = None
) -> pa.Table:
    n = len(outcomes)
    seconds = np.broadcast_to(np.asarray(seconds, dtype=float), (n,))
    when = pa.array((seconds * 1e6).astype(np.int64)).cast(INTERACTIONS.field("timestamp").type)
    cols = {
        "event_id": [f"{version}-{i}" for i in range(n)],
        "timestamp": when,
        "session_id": [f"s{i}" for i in range(n)],
        "user_id": users or [f"u{i}" for i in range(n)],
        "intent_id": [None] * n,
        "intent_text": ["find a recipe"] * n,
        "context_tools": [[]] * n,
        "candidate_ids": [["c1"]] * n,
        "selected_capability": ["c1"] * n,
        "rank": [1] * n,
        "outcome": outcomes,
        "execution_time_ms": np.broadcast_to(np.asarray(ms, dtype=float), (n,)).tolist(),
        "feedback": [None] * n,
        "propensity": [1.0] * n,
        "model_version": [version] * n,
    }
    return pa.table(cols, schema=INTERACTIONS.remove_metadata())


def write_outcomes(feedback_dir: Path, name: str, table: pa.Table) -> None:
    """Store ``table`` as one compacted part of a feedback log."""
    atomic_write_parquet(table, Path(feedback_dir) / "interactions" / f"part-{name}.parquet")


def rates(rng: np.random.Generator, n: int, p_success: float, p_failure: float) -> list[str]:
    """``n`` seeded outcomes with the given success and failure probabilities."""
    u = rng.uniform(size=n)
    failed = np.where(u < p_success + p_failure, "failure", "partial")
    out = np.where(u < p_success, "success", failed)
    return out.tolist()
