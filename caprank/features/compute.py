"""Per-capability features as daily snapshots, point-in-time correct and vectorized.

A snapshot at time t describes each capability as it was known just before t: it uses
only events with ``timestamp < t`` and only capabilities in the catalog at t
(``created_at`` empty or ``<= t``). Every such capability gets a row, used or not.

How the columns are defined (t is the snapshot time):

- ``tool_count``: number of tool ids in the composition (its length).
- ``usage_count_total``: events selecting the capability before t.
- ``usage_count_<d>d``: events in ``[t - d days, t)``, one per ``features.windows_days``.
- ``success_rate``: outcome score (success 1, partial ``partial_success_weight``, failure
  0) shrunk toward the global rate before t with ``success_prior_strength`` pseudo-events:
  ``(score_sum + m * p0) / (n + m)``. An unused capability gets p0, the global rate; with
  no events at all p0 is ``success_prior_mean``.
- ``avg_execution_time_ms``: mean execution time of its events before t; an unused
  capability gets the global mean before t (0.0 when there is no event at all).
- ``pagerank_score``, ``clustering_coefficient``: see ``caprank.features.graph``.

How: every event is put in the bucket of the first grid time after it (the grid holds
the snapshot times and each snapshot time minus each window), counts and sums per
(capability, bucket) come from one ``bincount`` each, and a cumulative sum over buckets
gives "events before grid time g" for every capability and every g at once. Any value
at t is then a difference of two columns of that cumulative table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.data.schemas import OUTCOMES, TABLES, capability_features_schema, usage_count_column
from caprank.errors import DataError
from caprank.features.graph import capability_graph_features, incidence_matrix

SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US


def to_epoch_us(when: datetime) -> int:
    """Microseconds since the epoch; naive datetimes are taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * SECOND_US + delta.microseconds


def _from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))


def epoch_us(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch (UTC)."""
    col = pc.cast(column, pa.timestamp("us", tz="UTC"))
    return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)


def _table_file(ds: Dataset, name: str) -> str:
    return str(Path(ds.root) / TABLES[name].file) if ds.root is not None else f"<{name}>"


def default_snapshot_times(ds: Dataset, end: datetime | None = None) -> list[datetime]:
    """UTC day boundaries from the first event's day up to ``end``, plus ``end`` itself.

    ``end`` defaults to the first whole second after the newest event, so the last
    snapshot sees the whole log (and prints, and round-trips through Feast's
    second-resolution online timestamps, exactly). With no events: just ``end`` (or now
    when ``end`` is not given).
    """
    ts = ds.interactions.column("timestamp")
    if len(ts) == 0 or ts.null_count == len(ts):
        return [end or datetime.now(UTC).replace(microsecond=0)]
    us = epoch_us(ts.drop_null())
    first, last = int(us.min()), int(us.max())
    end_us = to_epoch_us(end) if end is not None else (last // SECOND_US + 1) * SECOND_US
    start = first - first % DAY_US
    grid = [*range(start, end_us, DAY_US), end_us]
    return [_from_us(us) for us in sorted(set(grid))]


def _event_codes(ds: Dataset, cap_ids: pa.Array) -> tuple[np.ndarray, ...]:
    """(timestamp us, capability index, outcome index, execution ms) per event, checked."""
    inter = ds.interactions
    file = _table_file(ds, "interactions")
    for name in ("timestamp", "selected_capability", "outcome", "execution_time_ms"):
        col = inter.column(name)
        if col.null_count:
            row = int(pc.index(pc.is_null(col), True).as_py())
            raise DataError(file, "value is missing", row=row, field=name)
    ts = epoch_us(inter.column("timestamp"))
    cap = pc.index_in(inter.column("selected_capability"), value_set=cap_ids)
    if cap.null_count:
        bad = pc.is_null(cap)
        raise DataError(
            file,
            "selected capability is not in the catalog",
            row=int(pc.index(bad, True).as_py()),
            field="selected_capability",
            examples=pc.unique(pc.filter(inter.column("selected_capability"), bad)).to_pylist()[:5],
        )
    outcome = pc.index_in(inter.column("outcome"), value_set=pa.array(OUTCOMES))
    if outcome.null_count:
        bad = pc.is_null(outcome)
        raise DataError(
            file,
            f"outcome must be one of {list(OUTCOMES)}",
            row=int(pc.index(bad, True).as_py()),
            field="outcome",
            examples=pc.unique(pc.filter(inter.column("outcome"), bad)).to_pylist()[:5],
        )
    exec_ms = inter.column("execution_time_ms").to_numpy().astype(np.float64, copy=False)
    bad_time = ~np.isfinite(exec_ms) | (exec_ms < 0)
    if bad_time.any():
        raise DataError(
            file,
            "execution time must be a finite number >= 0",
            row=int(np.flatnonzero(bad_time)[0]),
            field="execution_time_ms",
        )
    codes = outcome.to_numpy(zero_copy_only=False)
    return ts, cap.to_numpy(zero_copy_only=False).astype(np.int64), codes, exec_ms


def _cumulative(
    cap: np.ndarray, bucket: np.ndarray, weights: np.ndarray | None, n_caps: int, n_grid: int
) -> np.ndarray:
    """cum[c, g] = sum of weights of capability c's events with bucket <= g."""
    width = n_grid + 1
    flat = np.bincount(cap * width + bucket, weights=weights, minlength=n_caps * width)
    return np.cumsum(flat.reshape(n_caps, width)[:, :n_grid], axis=1)


def _usage_stats(
    ts: np.ndarray,
    cap: np.ndarray,
    score: np.ndarray,
    exec_ms: np.ndarray,
    snaps: np.ndarray,
    n_caps: int,
    cfg: CaprankConfig,
) -> dict[str, np.ndarray]:
    """Usage, success and latency columns as (capability, snapshot) matrices."""
    fcfg = cfg.features
    windows_us = [d * DAY_US for d in fcfg.windows_days]
    grid = np.unique(np.concatenate([snaps] + [snaps - w for w in windows_us]))
    at_snap = np.searchsorted(grid, snaps)
    bucket = np.searchsorted(grid, ts, side="right")  # ts < grid[g]  <=>  bucket <= g
    counts = _cumulative(cap, bucket, None, n_caps, len(grid))
    n = counts[:, at_snap]
    scores = _cumulative(cap, bucket, score, n_caps, len(grid))[:, at_snap]
    exec_sum = _cumulative(cap, bucket, exec_ms, n_caps, len(grid))[:, at_snap]

    n_all = n.sum(axis=0)
    has_events = n_all > 0
    p0 = np.full(len(snaps), fcfg.success_prior_mean)
    np.divide(scores.sum(axis=0), n_all, out=p0, where=has_events)
    m = fcfg.success_prior_strength
    success = np.broadcast_to(p0, n.shape).copy()
    np.divide(scores + m * p0, n + m, out=success, where=(n + m) > 0)
    exec_prior = np.zeros(len(snaps))
    np.divide(exec_sum.sum(axis=0), n_all, out=exec_prior, where=has_events)
    avg_exec = np.broadcast_to(exec_prior, n.shape).copy()
    np.divide(exec_sum, n, out=avg_exec, where=n > 0)

    out = {"usage_count_total": n, "success_rate": success, "avg_execution_time_ms": avg_exec}
    for d, w in zip(fcfg.windows_days, windows_us, strict=True):
        out[usage_count_column(d)] = n - counts[:, np.searchsorted(grid, snaps - w)]
    return out


def _co_usage_by_snapshot(
    ds: Dataset,
    ts: np.ndarray,
    cap: np.ndarray,
    snaps: np.ndarray,
    n_caps: int,
    tool_index: dict[str, int],
) -> list[sp.csr_matrix]:
    """Capability x context-tool counts over the events before each snapshot."""
    context = ds.interactions.column("context_tools").combine_chunks()
    event = pc.list_parent_indices(context).to_numpy(zero_copy_only=False)
    known = pa.array(sorted(tool_index, key=tool_index.__getitem__))
    tool = pc.index_in(pc.list_flatten(context), value_set=known).to_numpy(zero_copy_only=False)
    # A pair counts for snapshot j when its event's bucket is <= j.
    pair_bucket = np.searchsorted(snaps, ts, side="right")[event]
    order = np.argsort(pair_bucket, kind="stable")
    bounds = np.searchsorted(pair_bucket[order], np.arange(len(snaps) + 1))
    shape = (n_caps, len(tool_index))
    running = sp.csr_matrix(shape)
    out: list[sp.csr_matrix] = []
    for j in range(len(snaps)):
        idx = order[bounds[j] : bounds[j + 1]]
        if len(idx):
            running = running + sp.csr_matrix(
                (np.ones(len(idx)), (cap[event[idx]], tool[idx])), shape=shape
            )
        out.append(running)
    return out


def _graph_stats(
    ds: Dataset,
    ts: np.ndarray,
    cap: np.ndarray,
    snaps: np.ndarray,
    present: np.ndarray,
    cfg: CaprankConfig,
) -> dict[str, np.ndarray]:
    """PageRank and clustering as (capability, snapshot) matrices over present capabilities."""
    fcfg = cfg.features
    tool_lists = ds.capabilities.column("tool_ids").to_pylist()
    tool_names = {t for tools in tool_lists for t in tools}
    if fcfg.graph_co_usage:
        context = pc.list_flatten(ds.interactions.column("context_tools"))
        tool_names |= set(pc.unique(context).to_pylist())
    tool_index = {t: i for i, t in enumerate(sorted(tool_names))}
    inc, _ = incidence_matrix(tool_lists, tool_index)
    n_caps = inc.shape[0]
    co_usage = None
    if fcfg.graph_co_usage:
        co_usage = _co_usage_by_snapshot(ds, ts, cap, snaps, n_caps, tool_index)
    pagerank = np.zeros(present.shape)
    clustering = np.zeros(present.shape)
    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    for j in range(len(snaps)):
        rows = np.flatnonzero(present[:, j])
        if co_usage is None:  # the graph only changes when the catalog does
            key = rows.tobytes()
            if key not in cache:
                cache[key] = capability_graph_features(inc[rows], fcfg)
            pr, cc = cache[key]
        else:
            pr, cc = capability_graph_features(inc[rows], fcfg, co_usage[j][rows])
        pagerank[rows, j] = pr
        clustering[rows, j] = cc
    return {"pagerank_score": pagerank, "clustering_coefficient": clustering}


def _check_unique_ids(ds: Dataset, cap_ids: pa.Array) -> None:
    counts = pc.value_counts(cap_ids)
    dupes = counts.filter(pc.greater(pc.struct_field(counts, "counts"), 1))
    if len(dupes):
        raise DataError(
            _table_file(ds, "capabilities"),
            "capability ids must be unique",
            field="capability_id",
            examples=[d["values"] for d in dupes.to_pylist()][:5],
        )


def compute_capability_features(
    ds: Dataset,
    cfg: CaprankConfig,
    snapshot_times: Sequence[datetime] | None = None,
    *,
    computed_at: datetime | None = None,
) -> pa.Table:
    """Daily snapshots of every capability's features (schema: ``capability_features_schema``).

    ``snapshot_times`` default to ``default_snapshot_times(ds)``. Rows are ordered by
    snapshot time, then catalog order. All columns but ``computed_at`` (wall clock unless
    given) are a pure function of the inputs.
    """
    fcfg = cfg.features
    schema = capability_features_schema(fcfg.windows_days)
    caps = ds.capabilities
    cap_ids = caps.column("capability_id").combine_chunks()
    _check_unique_ids(ds, cap_ids)
    times = snapshot_times if snapshot_times else default_snapshot_times(ds)
    snaps = np.unique(np.asarray([to_epoch_us(t) for t in times], dtype=np.int64))

    ts, cap, outcome, exec_ms = _event_codes(ds, cap_ids)
    score = np.array([1.0, fcfg.partial_success_weight, 0.0])[outcome]
    stats = _usage_stats(ts, cap, score, exec_ms, snaps, len(cap_ids), cfg)

    created = caps.column("created_at")
    created_us = epoch_us(created.fill_null(pa.scalar(0, created.type)))
    present = created_us[:, None] <= snaps[None, :]
    present[np.asarray(created.is_null()), :] = True
    stats |= _graph_stats(ds, ts, cap, snaps, present, cfg)

    # One row per (snapshot, capability in the catalog at it): snapshot-major.
    snap_idx, cap_idx = np.nonzero(present.T)
    tool_count = pc.list_value_length(caps.column("tool_ids")).to_numpy(zero_copy_only=False)
    stamp = to_epoch_us(computed_at or datetime.now(UTC))
    columns = {
        "capability_id": pc.take(cap_ids, pa.array(cap_idx)),
        "event_timestamp": pa.array(snaps[snap_idx]),
        "tool_count": pa.array(tool_count[cap_idx]),
        "feature_version": pa.array(np.full(len(cap_idx), fcfg.feature_version)),
        "computed_at": pa.array(np.full(len(cap_idx), stamp)),
    }
    columns |= {name: pa.array(mat[cap_idx, snap_idx]) for name, mat in stats.items()}
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)
