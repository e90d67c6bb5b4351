"""Reference and current windows of the interaction log, as per-event numeric columns.

The current window is the last ``monitoring.current_days`` days of the log (ending at its
last event), the reference window the ``monitoring.reference_days`` days before it. Only
the first event of each session is kept: the requests of one session share a topic, so
its events are not independent draws, and the tests (KS, two-proportion z) assume they
are (with all events, category shares raised false alarms in 2 of 20 drift-free seeds).
Each kept event becomes one row of numbers whose distribution a drift moves:

- ``reward``: 1 success, 0.5 partial, 0 failure (a tool that starts failing);
- ``execution_time_ms`` and ``rank`` (slow tools; a ranking that stops working);
- ``tool_count`` of the executed capability;
- ``category.<name>``: 1 when the capability's first tool is of that category (a shift
  in what users ask for);
- ``tool_success.<tool>``: 1 when the event used that tool and succeeded, for the
  ``monitoring.top_tools`` tools with the most reference-window traffic (a tool that
  starts failing moves its own column far more than the overall reward: successes are
  rare enough that their share has a small variance).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from caprank.config import MonitoringConfig
from caprank.data.dataset import Dataset
from caprank.errors import DataError
from caprank.monitoring.drift import DriftWindow

REWARD = {"success": 1.0, "partial": 0.5, "failure": 0.0}


@dataclass(frozen=True)
class WindowBounds:
    """Half-open [start, end) times of both windows."""

    reference_start: datetime
    current_start: datetime
    end: datetime
    reference_events: int
    current_events: int

    def to_dict(self) -> dict:
        return {
            "reference": [self.reference_start.isoformat(), self.current_start.isoformat()],
            "current": [self.current_start.isoformat(), self.end.isoformat()],
            "reference_events": self.reference_events,
            "current_events": self.current_events,
        }


def _capability_columns(ds: Dataset) -> tuple[dict[str, str], dict[str, int], dict[str, object]]:
    tool_cat = dict(
        zip(ds.tools["tool_id"].to_pylist(), ds.tools["category"].to_pylist(), strict=True)
    )
    category, size, created = {}, {}, {}
    for cap, tools, made in zip(
        ds.capabilities["capability_id"].to_pylist(),
        ds.capabilities["tool_ids"].to_pylist(),
        ds.capabilities["created_at"].to_pylist(),
        strict=True,
    ):
        tools = tools or []
        category[cap] = tool_cat.get(tools[0], "unknown") if tools else "unknown"
        size[cap] = len(tools)
        created[cap] = made
    return category, size, created


def event_frame(
    events: pa.Table,
    ds: Dataset,
    window_start: datetime,
    categories: list[str],
    tools: list[str] = (),
) -> pd.DataFrame:
    """The per-event columns (module docstring) of ``events``, all in one window."""
    category, size, _ = _capability_columns(ds)
    caps = events["selected_capability"].to_pylist()
    unknown = [c for c in caps if c not in category]
    if unknown:
        raise DataError(
            "interactions", f"unknown capability {unknown[0]!r}", field="selected_capability"
        )
    outcomes = events["outcome"].to_pylist()
    frame = pd.DataFrame(
        {
            "reward": [REWARD.get(o, np.nan) for o in outcomes],
            "execution_time_ms": events["execution_time_ms"].to_numpy(zero_copy_only=False),
            "rank": events["rank"].to_numpy(zero_copy_only=False).astype(float),
            "tool_count": [float(size[c]) for c in caps],
        }
    )
    cats = np.asarray([category[c] for c in caps], dtype=object)
    for name in categories:
        frame[f"category.{name}"] = (cats == name).astype(float)
    if tools:
        tool_sets = dict(
            zip(
                ds.capabilities["capability_id"].to_pylist(),
                ds.capabilities["tool_ids"].to_pylist(),
                strict=True,
            )
        )
        succeeded = np.asarray([o == "success" for o in outcomes])
        for tool in tools:
            used = np.asarray([tool in (tool_sets[c] or ()) for c in caps])
            frame[f"tool_success.{tool}"] = (used & succeeded).astype(float)
    return frame


def first_of_sessions(events: pa.Table) -> pa.Table:
    """The earliest event of each session (events without a session id are kept)."""
    if events.num_rows == 0:
        return events
    order = pc.sort_indices(events, [("timestamp", "ascending"), ("event_id", "ascending")])
    events = events.take(order)
    seen: set[str] = set()
    keep = []
    for i, sid in enumerate(events["session_id"].to_pylist()):
        if sid is None or sid not in seen:
            keep.append(i)
            if sid is not None:
                seen.add(sid)
    return events.take(pa.array(keep, pa.int64()))


def busiest_tools(events: pa.Table, ds: Dataset, n: int) -> list[str]:
    """The ``n`` tools used by the most events (ties by tool id)."""
    if n == 0 or events.num_rows == 0:
        return []
    tool_sets = dict(
        zip(
            ds.capabilities["capability_id"].to_pylist(),
            ds.capabilities["tool_ids"].to_pylist(),
            strict=True,
        )
    )
    counts: dict[str, int] = {}
    for cap in events["selected_capability"].to_pylist():
        for tool in set(tool_sets.get(cap) or ()):
            counts[tool] = counts.get(tool, 0) + 1
    return sorted(counts, key=lambda t: (-counts[t], t))[:n]


def split_windows(
    ds: Dataset, cfg: MonitoringConfig, end: datetime | None = None
) -> tuple[DriftWindow, DriftWindow, WindowBounds]:
    """Reference and current ``DriftWindow``s (features only) of the dataset's log."""
    reference, current, bounds, _ = split_windows_with_events(ds, cfg, end)
    return reference, current, bounds


def split_windows_with_events(
    ds: Dataset, cfg: MonitoringConfig, end: datetime | None = None
) -> tuple[DriftWindow, DriftWindow, WindowBounds, pa.Table]:
    """``split_windows`` and the current window's kept events (first of each session)."""
    ref_events, cur_events, span = window_events(ds, cfg, end)
    reference, current, bounds = windows_from_events(ds, cfg, ref_events, cur_events, span)
    return reference, current, bounds, cur_events


def windows_from_events(
    ds: Dataset,
    cfg: MonitoringConfig,
    ref_events: pa.Table,
    cur_events: pa.Table,
    span: tuple[datetime, datetime, datetime],
) -> tuple[DriftWindow, DriftWindow, WindowBounds]:
    """The two ``DriftWindow``s (features) of ``window_events``' output."""
    reference_start, current_start, end = span
    categories = sorted(set(ds.tools["category"].to_pylist()))
    tools = busiest_tools(ref_events, ds, cfg.top_tools)
    bounds = WindowBounds(
        reference_start, current_start, end, ref_events.num_rows, cur_events.num_rows
    )
    reference = DriftWindow(
        features=event_frame(ref_events, ds, reference_start, categories, tools)
    )
    current = DriftWindow(features=event_frame(cur_events, ds, current_start, categories, tools))
    return reference, current, bounds


def window_events(
    ds: Dataset, cfg: MonitoringConfig, end: datetime | None = None
) -> tuple[pa.Table, pa.Table, tuple[datetime, datetime, datetime]]:
    """The kept events (first of each session) of the reference and current windows, and
    the windows' (reference start, current start, end)."""
    log = ds.interactions
    if log.num_rows == 0:
        raise DataError("interactions", "no events: nothing to monitor")
    stamps = log["timestamp"]
    last = pc.max(stamps).as_py()
    end = end or last + timedelta(microseconds=1)
    current_start = end - timedelta(days=cfg.current_days)
    reference_start = current_start - timedelta(days=cfg.reference_days)
    ts = pa.scalar
    in_ref = pc.and_(
        pc.greater_equal(stamps, ts(reference_start, stamps.type)),
        pc.less(stamps, ts(current_start, stamps.type)),
    )
    in_cur = pc.and_(
        pc.greater_equal(stamps, ts(current_start, stamps.type)),
        pc.less(stamps, ts(end, stamps.type)),
    )
    ref_events = first_of_sessions(log.filter(in_ref))
    cur_events = first_of_sessions(log.filter(in_cur))
    return ref_events, cur_events, (reference_start, current_start, end)
