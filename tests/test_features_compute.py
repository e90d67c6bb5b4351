"""Capability feature snapshots: hand-computed values, point-in-time correctness, errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from caprank.config import CaprankConfig, resolve
from caprank.data.schemas import INTERACTIONS, capability_features_schema
from caprank.errors import ConfigError, DataError
from caprank.features.compute import compute_capability_features, default_snapshot_times
from caprank.features.graph import capability_graph_features, incidence_matrix
from tests.feature_data import EVENTS, at, interactions, random_dataset, tiny_dataset

STAMP = datetime(2030, 1, 1, tzinfo=UTC)


def rows_at(table: pa.Table, when: datetime) -> dict[str, dict]:
    """{capability_id: row} of the snapshot at ``when`` (its time and computed_at dropped)."""
    stamps = table["event_timestamp"]
    snap = table.filter(pc.equal(stamps, pa.scalar(when, stamps.type)))
    return {
        r.pop("capability_id"): r
        for r in snap.drop_columns(["event_timestamp", "computed_at"]).to_pylist()
    }


def test_default_snapshots_are_day_boundaries_plus_end():
    times = default_snapshot_times(tiny_dataset())
    # first event on day 0 (01:00), last on day 2 at 07:00
    assert times[:3] == [at(0), at(1), at(2)]
    assert times[3] == datetime(2026, 10, 3, 7, 0, 1, tzinfo=UTC)  # next second after the last
    assert default_snapshot_times(tiny_dataset(), end=at(1, 6)) == [at(0), at(1), at(1, 6)]


def test_hand_computed_snapshot():
    cfg = CaprankConfig()  # prior strength 5, partial counts 0.5, windows 1/7/30 days
    table = compute_capability_features(tiny_dataset(), cfg, [at(2)], computed_at=STAMP)
    assert table.schema.equals(capability_features_schema(), check_metadata=False)
    rows = rows_at(table, at(2))
    # Events before day 2: c1 success/failure/partial (100, 300, 200 ms),
    # c2 success/success (50, 70 ms). Global rate p0 = 3.5 / 5 = 0.7, mean 720 / 5 = 144 ms.
    c1, c2, c3, c4 = rows["c1"], rows["c2"], rows["c3"], rows["c4"]
    assert c1["success_rate"] == pytest.approx((1.5 + 5 * 0.7) / (3 + 5))
    assert c2["success_rate"] == pytest.approx((2.0 + 5 * 0.7) / (2 + 5))
    assert c3["success_rate"] == pytest.approx(0.7) == c4["success_rate"]  # unused: prior
    assert c1["avg_execution_time_ms"] == pytest.approx(200.0)
    assert c2["avg_execution_time_ms"] == pytest.approx(60.0)
    assert c4["avg_execution_time_ms"] == pytest.approx(144.0)  # unused: global mean
    assert (c1["usage_count_total"], c1["usage_count_1d"], c1["usage_count_7d"]) == (3, 1, 3)
    assert (c2["usage_count_total"], c2["usage_count_1d"], c2["usage_count_30d"]) == (2, 1, 2)
    assert (c3["usage_count_total"], c4["usage_count_7d"]) == (0, 0)
    assert [r["tool_count"] for r in (c1, c2, c3, c4)] == [2, 2, 1, 1]
    assert {r["feature_version"] for r in rows.values()} == {cfg.features.feature_version}
    assert set(table["computed_at"].to_pylist()) == {STAMP}


def test_no_events_gives_priors_for_every_capability():
    ds = tiny_dataset(events=[])
    table = compute_capability_features(ds, CaprankConfig(), [at(5)])
    rows = rows_at(table, at(5))
    assert sorted(rows) == ["c1", "c2", "c3", "c4"]
    assert {r["success_rate"] for r in rows.values()} == {0.5}  # success_prior_mean
    assert {r["avg_execution_time_ms"] for r in rows.values()} == {0.0}
    assert {r["usage_count_total"] for r in rows.values()} == {0}


def test_window_edges_are_half_open():
    events = [(at(1), "c1", "success", 10.0), (at(2), "c1", "success", 10.0)]
    table = compute_capability_features(tiny_dataset(events), CaprankConfig(), [at(2)])
    rows = rows_at(table, at(2))
    # the event at exactly t - 1 day is inside [t - 1d, t); the one at exactly t is not
    assert (rows["c1"]["usage_count_1d"], rows["c1"]["usage_count_total"]) == (1, 1)


def test_capability_appears_when_created():
    table = compute_capability_features(tiny_dataset(), CaprankConfig(), [at(1), at(2)])
    assert "c3" not in rows_at(table, at(1))
    assert "c3" in rows_at(table, at(2))  # created_at == t counts as in the catalog
    assert table.num_rows == 3 + 4


def test_snapshot_ignores_later_events():
    cfg = CaprankConfig()
    cfg.features.graph_co_usage = True  # co-usage edges must be point-in-time too
    times = [at(1), at(2)]
    base = compute_capability_features(tiny_dataset(), cfg, times, computed_at=STAMP)
    later = [
        (at(2), "c2", "failure", 5000.0),  # exactly at t: not before t
        (at(2, 1), "c4", "failure", 9000.0),
        (at(9), "c1", "failure", 1.0),
    ]
    grown = tiny_dataset(EVENTS + later)
    again = compute_capability_features(grown, cfg, times, computed_at=STAMP)
    assert again.equals(base)
    moved = compute_capability_features(grown, cfg, [at(2, 2)], computed_at=STAMP)
    assert rows_at(moved, at(2, 2))["c4"]["usage_count_total"] == 1


def test_each_snapshot_equals_a_log_truncated_at_it():
    ds = random_dataset(seed=3)
    cfg = CaprankConfig()
    cfg.features.graph_co_usage = True
    full = compute_capability_features(ds, cfg, computed_at=STAMP)
    times = default_snapshot_times(ds)
    assert len(times) == 7
    ts = ds.interactions["timestamp"]
    for when in times[1:-1]:
        cut = ds.interactions.filter(pc.less(ts, pa.scalar(when, ts.type)))
        alone = compute_capability_features(
            replace(ds, interactions=cut), cfg, [when], computed_at=STAMP
        )
        got, want = rows_at(alone, when), rows_at(full, when)
        assert got.keys() == want.keys()
        for cap, row in want.items():  # equal up to float summation order
            assert got[cap] == pytest.approx(row, rel=1e-12), cap


def test_graph_columns_come_from_the_catalog_at_each_snapshot():
    cfg = CaprankConfig()
    table = compute_capability_features(tiny_dataset(), cfg, [at(1)])
    rows = rows_at(table, at(1))
    inc, _ = incidence_matrix([["t1", "t2"], ["t2", "t3"], ["t1"]])  # c1, c2, c4 (no c3 yet)
    pagerank, clustering = capability_graph_features(inc, cfg.features)
    got = [rows[c]["pagerank_score"] for c in ("c1", "c2", "c4")]
    np.testing.assert_allclose(got, pagerank)
    assert [rows[c]["clustering_coefficient"] for c in ("c1", "c2", "c4")] == list(clustering)


def test_deterministic_and_configurable_windows():
    cfg = CaprankConfig()
    cfg.features.windows_days = [2, 14]
    ds = random_dataset(seed=1)
    one = compute_capability_features(ds, cfg, computed_at=STAMP)
    two = compute_capability_features(ds, cfg, computed_at=STAMP)
    assert one.equals(two)
    assert "usage_count_2d" in one.column_names and "usage_count_1d" not in one.column_names
    assert pc.all(pc.greater_equal(one["usage_count_14d"], one["usage_count_2d"])).as_py()


def _with_events(rows: list[dict]):
    ds = tiny_dataset()
    return replace(ds, interactions=pa.Table.from_pylist(rows, schema=INTERACTIONS))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("selected_capability", "c99", "not in the catalog"),
        ("outcome", "great", "outcome must be one of"),
        ("execution_time_ms", -1.0, ">= 0"),
    ],
)
def test_bad_events_name_row_and_field(field, value, message):
    rows = interactions().to_pylist()
    rows[4][field] = value
    with pytest.raises(DataError) as err:
        compute_capability_features(_with_events(rows), CaprankConfig())
    assert (err.value.row, err.value.field) == (4, field)
    assert message in str(err.value)


def test_duplicate_capability_ids_are_an_error():
    ds = tiny_dataset()
    caps = pa.concat_tables([ds.capabilities, ds.capabilities.slice(0, 1)])
    with pytest.raises(DataError, match="unique"):
        compute_capability_features(replace(ds, capabilities=caps), CaprankConfig())


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("features.windows_days=[7, 7]", "distinct"),
        ("features.windows_days=[0]", ">= 1"),
        ("features.partial_success_weight=2", "<= 1"),
        ("features.feast_project=my-project", "pattern"),
    ],
)
def test_feature_settings_are_checked(override, fragment):
    with pytest.raises(ConfigError) as err:
        resolve(environ={}, overrides=[override])
    assert err.value.key.startswith("features.") and fragment in str(err.value)


def test_build_takes_naive_as_of_as_utc(tmp_path, monkeypatch):
    import time

    from caprank.features.stage import build_features

    monkeypatch.setenv("TZ", "America/New_York")  # a local zone must not leak in
    time.tzset()
    try:
        as_of = at(1).replace(tzinfo=None)
        naive = build_features(tiny_dataset(), CaprankConfig(), tmp_path / "a", as_of=as_of)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert naive.summary["last_snapshot"] == at(1).isoformat()
    meta = pq.read_schema(naive.offline_path).metadata
    assert meta[b"caprank.as_of"].decode() == at(1).isoformat()
