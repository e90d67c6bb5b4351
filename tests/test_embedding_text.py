"""Text side of the embed stage: offline packaged encoder, catalog texts, the cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from caprank.data.schemas import CAPABILITIES, TOOLS
from caprank.embeddings.cache import EmbeddingCache, encode_cached
from caprank.embeddings.catalog_text import (
    capability_text,
    capability_texts,
    tool_text,
    tool_texts,
)
from caprank.embeddings.text import encode_texts, load_encoder
from caprank.errors import DataError

MODEL = "all-MiniLM-L6-v2"
TEXTS = ["Book a table for two tonight", "Convert 20 euros to dollars", "weather in Lyon"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_packaged_encoder_is_offline_and_repeatable():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    first = encode_texts(TEXTS, MODEL, batch_size=2, device="cpu")
    load_encoder.cache_clear()  # a second, fresh load of the model from disk
    second = encode_texts(TEXTS, MODEL, batch_size=3, device="cpu")
    assert first.shape == (3, 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(first, second, atol=1e-6)
    assert float(first[0] @ first[1]) < 0.5  # different sentences, different vectors


def test_catalog_text_builders():
    assert tool_text("Weather API", "  Current   weather\nby city ") == (
        "Weather API: Current weather by city"
    )
    assert tool_text("Weather API", "Weather API") == "Weather API"
    text = capability_text("Plan a trip", [("Flights", "search flights"), ("Hotels", "")])
    assert text == "Plan a trip Tools: Flights: search flights; Hotels."
    tools = pa.Table.from_pylist(
        [
            {"tool_id": "t1", "name": "Flights", "description": "search", "category": "x"},
            {"tool_id": "t2", "name": "Hotels", "description": "book", "category": "x"},
        ],
        schema=TOOLS,
    )
    caps = pa.Table.from_pylist(
        [
            {"capability_id": "c1", "description": "Trip", "tool_ids": ["t2", "t1"]},
            {"capability_id": "c2", "description": "Bad", "tool_ids": ["t1", "t9"]},
        ],
        schema=CAPABILITIES,
    )
    assert tool_texts(tools) == ["Flights: search", "Hotels: book"]
    assert capability_texts(caps.slice(0, 1), tools) == [
        "Trip Tools: Hotels: book; Flights: search."
    ]
    with pytest.raises(DataError, match=r"caps.parquet, field 'tool_ids', row 1: .*'t9'"):
        capability_texts(caps, tools, source="caps.parquet")


def test_cache_hits_after_unchanged_run_and_misses_on_change(tmp_path):
    cache = EmbeddingCache(tmp_path, MODEL)
    vecs, stats = encode_cached([*TEXTS, TEXTS[0]], MODEL, cache, device="cpu")
    assert (stats.hits, stats.misses) == (0, 3)  # distinct texts
    np.testing.assert_array_equal(vecs[0], vecs[3])

    again = EmbeddingCache(tmp_path, MODEL)  # a new process would start like this
    vecs2, stats2 = encode_cached([*TEXTS, TEXTS[0]], MODEL, again, device="cpu")
    assert (stats2.hits, stats2.misses, stats2.hit_rate) == (3, 0, 1.0)
    np.testing.assert_array_equal(vecs, vecs2)

    changed = [*TEXTS[:2], "weather in Lyon tomorrow"]
    vecs3, stats3 = encode_cached(changed, MODEL, again, device="cpu")
    assert (stats3.hits, stats3.misses) == (2, 1)
    np.testing.assert_array_equal(vecs3[:2], vecs[:2])
    np.testing.assert_allclose(vecs3[2], encode_texts([changed[2]], MODEL, device="cpu")[0])
    index = json.loads((cache.dir / "index.json").read_text())
    assert index["model"] == MODEL and index["dim"] == 384
    assert [s["rows"] for s in index["shards"]] == [3, 1]
    assert len(EmbeddingCache(tmp_path, MODEL)) == 4
    # another model id never sees these vectors
    assert len(EmbeddingCache(tmp_path, "BAAI/bge-m3")) == 0


def test_cache_survives_a_broken_shard_and_refuses_wrong_dims(tmp_path):
    cache = EmbeddingCache(tmp_path, MODEL)
    encode_cached(TEXTS, MODEL, cache, device="cpu")
    shard = next(cache.dir.glob("shard-*.parquet"))
    shard.write_bytes(b"not parquet")
    vecs, stats = encode_cached(TEXTS, MODEL, EmbeddingCache(tmp_path, MODEL), device="cpu")
    assert stats.misses == 3 and vecs.shape == (3, 384)
    with pytest.raises(DataError, match="384-dim"):
        cache.put_many(["k"], np.ones((1, 8), dtype=np.float32))
