"""Tiny hand-made datasets for the feature tests, built with the contract schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from caprank.data.dataset import Dataset
from caprank.data.schemas import CAPABILITIES, INTERACTIONS, TOOLS, empty_table

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def at(day: float, hours: float = 0.0) -> datetime:
    return T0 + timedelta(days=day, hours=hours)


def catalog() -> tuple[pa.Table, pa.Table]:
    """Tools t1..t4; c1=[t1,t2], c2=[t2,t3], c3=[t4] (added on day 2), c4=[t1] (never used)."""
    tools = pa.Table.from_pylist(
        [
            {"tool_id": t, "name": t, "description": f"tool {t}", "category": "x"}
            for t in ("t1", "t2", "t3", "t4")
        ],
        schema=TOOLS,
    )
    rows = [("c1", ["t1", "t2"], None), ("c2", ["t2", "t3"], None), ("c3", ["t4"], at(2))]
    rows.append(("c4", ["t1"], None))
    caps = pa.Table.from_pylist(
        [
            {"capability_id": c, "description": f"capability {c}", "tool_ids": t, "created_at": w}
            for c, t, w in rows
        ],
        schema=CAPABILITIES,
    )
    return tools, caps


def event(i: int, when: datetime, cap: str, outcome: str, ms: float, context=("t1",)) -> dict:
    return {
        "event_id": f"e{i}",
        "timestamp": when,
        "session_id": f"s{i}",
        "user_id": "u",
        "intent_id": None,
        "intent_text": "do something",
        "context_tools": list(context),
        "candidate_ids": ["c1", "c2", "c3", "c4"],
        "selected_capability": cap,
        "rank": 1,
        "outcome": outcome,
        "execution_time_ms": ms,
        "feedback": None,
        "propensity": 0.5,
        "model_version": "test",
    }


# (when, capability, outcome, execution ms)
EVENTS = [
    (at(0, 1), "c1", "success", 100.0),
    (at(0, 5), "c1", "failure", 300.0),
    (at(0, 23), "c2", "success", 50.0),
    (at(1, 2), "c1", "partial", 200.0),
    (at(1, 12), "c2", "success", 70.0),
    (at(2, 6), "c3", "failure", 1000.0),
    (at(2, 7), "c1", "success", 100.0),
]


def interactions(events=EVENTS, start: int = 0) -> pa.Table:
    rows = [event(start + i, *e) for i, e in enumerate(events)]
    return pa.Table.from_pylist(rows, schema=INTERACTIONS)


def tiny_dataset(events=EVENTS) -> Dataset:
    tools, caps = catalog()
    return Dataset(
        tools=tools,
        capabilities=caps,
        intents=empty_table("intents"),
        labels=empty_table("labels"),
        interactions=interactions(events),
    )


def random_dataset(seed: int = 0, n_events: int = 400, days: int = 6) -> Dataset:
    """A seeded random log over the tiny catalog (with varied context tools)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    caps = ["c1", "c2", "c3", "c4"]
    events = []
    for _ in range(n_events):
        when = T0 + timedelta(seconds=int(rng.integers(0, days * 86_400)))
        cap = caps[int(rng.integers(0, 4))]
        if cap == "c3" and when < at(2):
            cap = "c1"
        outcome = ("success", "partial", "failure")[int(rng.integers(0, 3))]
        events.append((when, cap, outcome, float(rng.gamma(2.0, 100.0))))
    tools, catalog_caps = catalog()
    rows = [
        event(i, *e, context=rng.choice(["t1", "t2", "t3", "t4", "t9"], 2).tolist())
        for i, e in enumerate(events)
    ]
    return Dataset(
        tools=tools,
        capabilities=catalog_caps,
        intents=empty_table("intents"),
        labels=empty_table("labels"),
        interactions=pa.Table.from_pylist(rows, schema=INTERACTIONS),
    )
