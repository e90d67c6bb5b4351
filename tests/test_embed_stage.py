"""The embed stage end to end on a small catalog with logs: tables, cache, graph, failures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from caprank.cli import cli
from caprank.config import load_config
from caprank.data.dataset import Dataset, write_dataset
from caprank.data.schemas import (
    CAPABILITIES,
    EMBEDDING_TABLES,
    INTENTS,
    INTERACTIONS,
    LABELS,
    TOOLS,
)
from caprank.embeddings.catalog_graph import build_catalog_graph
from caprank.embeddings.stage import embed, load_embeddings
from caprank.embeddings.validation import EmbeddingValidationError
from caprank.errors import DataError

NOW = datetime(2026, 10, 31, 6, tzinfo=UTC)
T0 = datetime(2026, 10, 1, 9, tzinfo=UTC)
TOPICS = {
    "weather": ["forecast by city", "air quality index", "sunrise and sunset times"],
    "finance": ["currency exchange rates", "stock quotes", "crypto prices"],
    "food": ["recipe search by ingredient", "grocery delivery", "restaurant booking"],
    "travel": ["flight search", "hotel availability", "train timetables"],
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _cfg(home, *extra):
    small = [
        "embedding.node2vec.walks_per_node=5",
        "embedding.node2vec.epochs=1",
        "embedding.node2vec.batch_size=128",
        "embedding.device=cpu",
    ]
    return load_config(overrides=[f"paths.home={home}", *small, *extra])


def _event(i, session, cap, minutes, outcome="success", intent=None):
    return {
        "event_id": f"e{i}",
        "timestamp": T0 + timedelta(minutes=minutes),
        "session_id": session,
        "user_id": "u1",
        "intent_id": intent,
        "intent_text": "something",
        "context_tools": [],
        "candidate_ids": [cap],
        "selected_capability": cap,
        "rank": 1,
        "outcome": outcome,
        "execution_time_ms": 10.0,
        "feedback": None,
        "propensity": 0.5,
        "model_version": "test",
    }


def small_dataset(same_tool_text: bool = False) -> Dataset:
    tools, caps = [], []
    for topic, apis in TOPICS.items():
        for j, api in enumerate(apis):
            name = "Generic tool" if same_tool_text else f"{topic} {api}"
            desc = "Does things." if same_tool_text else f"Returns {api} for {topic} apps."
            tools.append({"tool_id": f"{topic}-{j}", "name": name, "description": desc})
        ids = [f"{topic}-{j}" for j in range(3)]
        for k, members in enumerate([ids[:1], ids[1:], ids, ids[::2], ids[2:]]):
            caps.append(
                {
                    "capability_id": f"{topic}-cap{k}",
                    "description": f"{topic} workflow {k} using " + " and ".join(members),
                    "tool_ids": members,
                }
            )
    for t in tools:
        t["category"] = t["tool_id"].split("-")[0]
    events = [
        # a training session chaining weather-cap0 -> food-cap1 twice
        _event(1, "s1", "weather-cap0", 0),
        _event(2, "s1", "food-cap1", 1),
        _event(3, "s2", "weather-cap0", 60),
        _event(4, "s2", "food-cap1", 61),
        # after the cutoff: travel-cap0 -> finance-cap0 must not count
        _event(5, "s3", "travel-cap0", 60 * 24 * 20),
        _event(6, "s3", "finance-cap0", 60 * 24 * 20 + 1),
        # an intent labelled for test: its session must not count either
        _event(7, "s4", "travel-cap1", 120, intent="q-test"),
        _event(8, "s4", "finance-cap1", 121, intent="q-test"),
        # a failed selection does not chain
        _event(9, "s5", "food-cap2", 180),
        _event(10, "s5", "travel-cap2", 181, outcome="failure"),
    ]
    labels = [
        {"intent_id": "q-train", "capability_id": "food-cap1", "grade": 1, "split": "train"},
        {"intent_id": "q-test", "capability_id": "travel-cap1", "grade": 1, "split": "test"},
    ]
    intents = [{"intent_id": "q-train", "text": "dinner"}, {"intent_id": "q-test", "text": "trip"}]
    return Dataset(
        pa.Table.from_pylist(tools, schema=TOOLS),
        pa.Table.from_pylist(caps, schema=CAPABILITIES),
        pa.Table.from_pylist(intents, schema=INTENTS),
        pa.Table.from_pylist(labels, schema=LABELS),
        pa.Table.from_pylist(events, schema=INTERACTIONS),
    )


def test_embed_writes_validated_feast_ready_tables(tmp_path):
    ds, cfg = small_dataset(), _cfg(tmp_path / "home")
    res = embed(ds, cfg, tmp_path / "out", now=NOW)
    assert (res.n_tools, res.n_capabilities) == (12, 20)
    assert (res.cache.hits, res.cache.misses) == (0, 32)
    for name, path, n in (
        ("tool_embeddings", res.tool_path, 12),
        ("capability_embeddings", res.capability_path, 20),
    ):
        table = pq.read_table(path)
        assert table.schema.equals(EMBEDDING_TABLES[name].schema, check_metadata=False)
        assert table.num_rows == n
        for col, width in (("text_embedding", 384), ("graph_embedding", 64)):
            assert set(pa.compute.list_value_length(table[col]).to_pylist()) == {width}
        assert set(table["event_timestamp"].to_pylist()) == {NOW}
        params = json.loads(table["params_json"][0].as_py())
        assert params["node2vec"]["walk_length"] == 15 and params["hybrid_dim"] == 448
    manifest = json.loads((tmp_path / "out" / "embeddings.json").read_text())
    assert manifest["graph"]["membership_edges"] == 36 and manifest["cache"]["misses"] == 32

    emb = load_embeddings(tmp_path / "out", cfg, now=NOW + timedelta(hours=1))
    assert emb.capabilities.ids[:2] == ["weather-cap0", "weather-cap1"]
    assert emb.capabilities.hybrid.shape == (20, 448) and emb.tools.graph.shape == (12, 64)
    np.testing.assert_allclose(np.linalg.norm(emb.tools.hybrid, axis=1), 1.0, atol=1e-5)
    assert emb.text_model == "all-MiniLM-L6-v2" and emb.input_hash == res.summary["input_hash"]

    # a second run on unchanged data: every text from the cache, identical tables
    again = embed(ds, cfg, tmp_path / "out2", now=NOW)
    assert again.cache_hit_rate == 1.0
    for name in ("tool_embeddings.parquet", "capability_embeddings.parquet"):
        assert pq.read_table(tmp_path / "out2" / name).equals(
            pq.read_table(tmp_path / "out" / name)
        )


def test_coselection_edges_come_from_training_period_only():
    ds = small_dataset()
    cfg = load_config(overrides=["embedding.node2vec.coselection_weight=2.0"]).embedding.node2vec
    g = build_catalog_graph(ds, cfg, train_until=T0 + timedelta(days=10))
    assert g.stats["coselection_edges"] == 1 and g.stats["interactions_used"] == 5
    row = {c: g.num_tools + i for i, c in enumerate(g.capability_ids)}

    def weight(a, b):
        lo, hi = g.graph.rowptr[row[a]], g.graph.rowptr[row[a] + 1]
        nbrs = dict(zip(g.graph.col[lo:hi].tolist(), g.graph.weight[lo:hi].tolist(), strict=True))
        return nbrs.get(row[b], 0.0)

    assert weight("weather-cap0", "food-cap1") == pytest.approx(2.0 * np.log1p(2))
    assert weight("travel-cap0", "finance-cap0") == 0.0  # after the cutoff
    assert weight("travel-cap1", "finance-cap1") == 0.0  # test intent
    assert weight("food-cap2", "travel-cap2") == 0.0  # failed selection
    everything = build_catalog_graph(ds, cfg)
    assert everything.stats["coselection_edges"] == 2  # the post-cutoff pair joins
    off = load_config(overrides=["embedding.node2vec.coselection_weight=0"]).embedding.node2vec
    assert build_catalog_graph(ds, off).stats["coselection_edges"] == 0


def test_failed_validation_stores_nothing(tmp_path):
    cfg = _cfg(tmp_path / "home")
    out = tmp_path / "out"
    embed(small_dataset(), cfg, out, now=NOW)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(EmbeddingValidationError) as err:
        embed(small_dataset(same_tool_text=True), cfg, out, now=NOW + timedelta(days=1))
    assert "nothing stored: [not_collapsed] text_embedding" in str(err.value)
    assert "tool_embeddings.parquet" in str(err.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_loader_and_guard_errors(tmp_path):
    cfg = _cfg(tmp_path / "home")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing to replace"):
        embed(small_dataset(), cfg, foreign, now=NOW)
    assert (foreign / "notes.txt").read_text() == "keep me"

    embed(small_dataset(), cfg, tmp_path / "a", now=NOW)
    with pytest.raises(
        EmbeddingValidationError, match=r"not loaded: \[staleness\].*12 of 12 items"
    ):
        load_embeddings(tmp_path / "a", cfg, now=NOW + timedelta(hours=30))
    embed(small_dataset(), _cfg(tmp_path / "home", "embedding.seed=99"), tmp_path / "b", now=NOW)
    (tmp_path / "b" / "tool_embeddings.parquet").replace(tmp_path / "a" / "tool_embeddings.parquet")
    with pytest.raises(DataError, match="different runs"):
        load_embeddings(tmp_path / "a", cfg, now=NOW)


def test_cli_embed(tmp_path):
    data = write_dataset(small_dataset(), tmp_path / "data")
    args = [
        "--set",
        f"paths.home={tmp_path / 'home'}",
        "--set",
        "embedding.node2vec.epochs=1",
        "--set",
        "embedding.node2vec.walks_per_node=5",
        "embed",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "emb"),
        "--train-until",
        "2026-10-11T00:00:00+00:00",
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{") :])
    assert summary["capabilities"] == 20 and summary["graph"]["coselection_edges"] == 1
    assert (tmp_path / "emb" / "capability_embeddings.parquet").exists()
    bad = CliRunner().invoke(
        cli, [*args[:6], "embed", "--data", str(data), "--out", "x", "--train-until", "yesterday"]
    )
    assert bad.exit_code != 0 and "ISO" in bad.output
