"""Feast with the embedded defaults: apply, materialize, online and historical reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from caprank.cli import main
from caprank.config import CaprankConfig
from caprank.data.dataset import write_dataset
from caprank.data.schemas import CAPABILITY_FEATURES_FILE
from caprank.errors import DataError
from caprank.features.stage import (
    METADATA_PREFIX,
    build_features,
    last_snapshot,
    publish_features,
    table_content_hash,
)
from tests.feature_data import EVENTS, at, tiny_dataset

pytest.importorskip("feast")

from caprank.features.store import (
    historical_features,
    online_features,
    open_store,
)


@pytest.fixture
def cfg(tmp_path) -> CaprankConfig:
    config = CaprankConfig()
    config.paths.home = tmp_path / "home"
    return config


def latest_offline(path: Path) -> dict[str, dict]:
    table = pq.read_table(path)
    last = pc.max(table["event_timestamp"])
    rows = table.filter(pc.equal(table["event_timestamp"], last)).to_pylist()
    return {r["capability_id"]: r for r in rows}


def test_build_writes_parquet_with_provenance(cfg, tmp_path):
    ds = tiny_dataset()
    result = build_features(ds, cfg, tmp_path / "out", as_of=at(2))
    assert result.offline_path == tmp_path / "out" / CAPABILITY_FEATURES_FILE
    assert (result.rows, result.capabilities, result.snapshots) == (3 + 3 + 4, 4, 3)
    assert result.summary["events_used"] == 5 and result.summary["events_total"] == 7
    assert result.input_hash == table_content_hash(ds.capabilities, ds.interactions)
    meta = pq.read_schema(result.offline_path).metadata
    assert meta[f"{METADATA_PREFIX}input_hash".encode()].decode() == result.input_hash
    assert meta[f"{METADATA_PREFIX}as_of".encode()].decode() == at(2).isoformat()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp
    # the hash follows content, not chunking
    again = tiny_dataset()
    assert table_content_hash(again.capabilities, again.interactions) == result.input_hash
    changed = tiny_dataset(events=EVENTS[:-1])
    assert table_content_hash(changed.capabilities, changed.interactions) != result.input_hash


def test_publish_apply_materialize_and_online_read(cfg, tmp_path):
    built = build_features(tiny_dataset(), cfg, tmp_path / "out", as_of=at(1))
    published = publish_features(cfg, built.offline_path, last_snapshot(built.offline_path))
    assert published.feature_views == ["capability_features"]
    assert published.registry == str((cfg.feast_dir() / "registry.db").resolve())
    assert Path(published.online_store).is_file()
    assert published.materialized_until == at(1)

    store = open_store(cfg)
    online = online_features(store)  # every capability of the offline table, one batch
    want = latest_offline(built.offline_path)
    assert sorted(online["capability_id"].to_pylist()) == sorted(want)
    for row in online.to_pylist():
        expected = want[row["capability_id"]]
        assert row["event_timestamp"] == at(1)
        for name in ("usage_count_total", "usage_count_1d", "success_rate", "pagerank_score"):
            assert row[name] == pytest.approx(expected[name]), name

    # an unknown id gets a row of nulls, in place
    some = online_features(store, ["c2", "nope"])
    assert some["capability_id"].to_pylist() == ["c2", "nope"]
    assert some["usage_count_total"].to_pylist() == [want["c2"]["usage_count_total"], None]
    nothing = online_features(store, [])
    assert nothing.num_rows == 0 and nothing.schema.names == online.schema.names

    # incremental: a rebuild with a later snapshot reaches the online store
    rebuilt = build_features(tiny_dataset(), cfg, tmp_path / "out")
    end = last_snapshot(rebuilt.offline_path)
    assert end > at(2)
    publish_features(cfg, rebuilt.offline_path, end)
    fresh = {r["capability_id"]: r for r in online_features(open_store(cfg)).to_pylist()}
    assert fresh["c1"]["usage_count_total"] == 4 and want["c1"]["usage_count_total"] == 2
    assert "c3" in fresh  # created on day 2: absent from the first build
    assert fresh["c1"]["event_timestamp"] == end


def test_historical_features_are_point_in_time(cfg, tmp_path):
    built = build_features(tiny_dataset(), cfg, tmp_path / "out")
    publish_features(cfg, built.offline_path, at(0))
    offline = pq.read_table(built.offline_path).to_pandas()
    entity = pd.DataFrame(
        {
            "capability_id": ["c1", "c1", "c2", "c3", "c1", "c4"],
            "event_timestamp": [at(1, 12), at(2), at(2, 6), at(1, 12), at(-1), at(30)],
            "label": [1, 2, 3, 4, 5, 6],
        }
    )
    got = historical_features(open_store(cfg), entity)
    assert got["label"].tolist() == [1, 2, 3, 4, 5, 6]  # every row, in order
    for _, row in got.iterrows():
        when = row["event_timestamp"]
        past = offline[
            (offline["capability_id"] == row["capability_id"])
            & (offline["event_timestamp"] <= when)
        ]
        if past.empty:  # before the first snapshot (c1 at day -1), or not yet created (c3)
            assert pd.isna(row["usage_count_total"])
            continue
        snap = past.sort_values("event_timestamp").iloc[-1]
        assert row["usage_count_total"] == snap["usage_count_total"]
        assert row["success_rate"] == pytest.approx(snap["success_rate"])
    # the row at exactly day 2 joins the day-2 snapshot, built from events before day 2
    assert got.loc[1, "usage_count_total"] == 3


def test_publish_rejects_a_table_built_with_other_windows(cfg, tmp_path):
    built = build_features(tiny_dataset(), cfg, tmp_path / "out")
    cfg.features.windows_days = [1, 7, 90]
    with pytest.raises(DataError) as err:
        publish_features(cfg, built.offline_path, at(3))
    assert err.value.field == "usage_count_90d"
    with pytest.raises(DataError, match="not found"):
        publish_features(cfg, tmp_path / "missing.parquet", at(3))


def test_cli_build_and_publish(tmp_path, capsys):
    data = write_dataset(tiny_dataset(), tmp_path / "data")
    home = tmp_path / "home"
    code = main(
        ["--set", f"paths.home={home}", "features", "build", "--data", str(data), "--publish"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["build"]["offline_path"] == str(home / "features" / CAPABILITY_FEATURES_FILE)
    assert report["build"]["snapshots"] == 4
    assert report["publish"]["online_store"].startswith(str((home / "feast").resolve()))
    assert datetime.fromisoformat(report["publish"]["materialized_until"]) > at(2)

    assert main(["features", "build", "--data", str(tmp_path / "nope")]) == 2
    assert "dataset directory does not exist" in capsys.readouterr().err


def test_cli_as_of(tmp_path, capsys):
    data = write_dataset(tiny_dataset(), tmp_path / "data")
    out = tmp_path / "f"
    args = ["features", "build", "--data", str(data), "--out", str(out), "--as-of", "2026-10-02"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    last = datetime.fromisoformat(report["build"]["summary"]["last_snapshot"])
    assert last == datetime(2026, 10, 2, tzinfo=UTC)
    assert "publish" not in report


def test_embedding_views_join_the_ranker_service_once_their_table_is_there(cfg, tmp_path):
    """Every view is registered on each publish; the embedding view (keyed by capability)
    is materialized, and read through the ranker service, once its table sits beside
    the features."""
    import pyarrow as pa

    from caprank.data.schemas import CAPABILITY_EMBEDDINGS, EMBEDDING_TABLES
    from caprank.files import atomic_write_parquet

    built = build_features(tiny_dataset(), cfg, tmp_path / "out")
    first = publish_features(cfg, built.offline_path, last_snapshot(built.offline_path))
    assert first.feature_views == ["capability_features"]  # no embedding table yet
    registered = {v.name for v in open_store(cfg).list_feature_views()}
    assert registered == {"capability_features", "capability_embeddings", "tool_embeddings"}

    vectors = {"c1": [1.0, 0.0], "c2": [0.0, 1.0], "c3": [0.5, 0.5], "c4": [0.25, 0.75]}
    n = len(vectors)
    table = pa.table(
        {
            "capability_id": list(vectors),
            "text_sha256": ["x"] * n,
            "text_embedding": list(vectors.values()),
            "graph_embedding": list(vectors.values()),
            "hybrid_embedding": list(vectors.values()),
            "text_model": ["m"] * n,
            "params_json": ["{}"] * n,
            "input_hash": ["h"] * n,
            "computed_at": [at(3)] * n,
            "event_timestamp": [at(0)] * n,
        },
        schema=CAPABILITY_EMBEDDINGS,
    )
    file = EMBEDDING_TABLES["capability_embeddings"].file
    atomic_write_parquet(table, built.offline_path.parent / file)
    result = publish_features(cfg, built.offline_path, last_snapshot(built.offline_path))
    assert result.feature_views == ["capability_features", "capability_embeddings"]
    online = online_features(open_store(cfg), ["c2", "c1"])
    assert online.schema.field("hybrid_embedding").type == pa.list_(pa.float32())
    assert online["hybrid_embedding"].to_pylist() == [[0.0, 1.0], [1.0, 0.0]]
    assert online["usage_count_total"].to_pylist() == [2, 4]
