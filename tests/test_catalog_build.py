"""The catalog build at 10,000 capabilities goes through the batch path: the encoder runs
ceil(n / batch_size) forward passes over length-sorted batches (little padding), a warm
embedding cache runs none, and the feature matrix is read column by column in bulk.

The ONNX session is replaced by a counting stand-in (the real tokenizer still runs), so the
test checks the shape of the work, not its speed."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from caprank.config import CaprankConfig
from caprank.embeddings import backend as backend_mod
from caprank.embeddings.backend import TextBackend
from caprank.embeddings.cache import model_slug
from caprank.model.serving import BundleBuilder
from caprank.online.catalog import Catalog
from caprank.online.features import FeatureSnapshot
from caprank.online.intents import serving_backend
from caprank.online.models import dense_builder
from caprank.online.ranker import DenseBuilder

MODEL = "all-MiniLM-L6-v2"
N = 10_000
BATCH = 128
WORDS = [
    "search",
    "book",
    "flight",
    "hotel",
    "convert",
    "currency",
    "weather",
    "report",
    "email",
    "invoice",
]


class CountingSession:
    """Stands in for ``onnxruntime.InferenceSession``: records each batch's shape."""

    def __init__(self, dim: int):
        self.dim = dim
        self.shapes: list[tuple[int, int]] = []
        self.real_tokens = 0

    def run(self, _outputs, feed):
        ids = feed["input_ids"]
        self.shapes.append(ids.shape)
        self.real_tokens += int(feed["attention_mask"].sum())
        rng = np.random.default_rng(len(self.shapes))
        return [rng.standard_normal((ids.shape[0], self.dim)).astype(np.float32)]


@pytest.fixture()
def counting_encoder(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = TextBackend("onnx", onnx_dir=str(tmp_path_factory.mktemp("onnx")), threads=1)
    enc = backend_mod.load_onnx(MODEL, "cpu", backend)
    session = CountingSession(enc.dim)
    monkeypatch.setattr(enc, "session", session)
    yield backend, session
    backend_mod.load_onnx.cache_clear()  # the next user gets a real session again


def _catalog(n: int) -> Catalog:
    rng = np.random.default_rng(0)
    texts = tuple(
        f"capability {i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(2, 60))))
        for i in range(n)
    )
    ids = tuple(f"cap-{i}" for i in range(n))
    return Catalog(ids=ids, tools=tuple(("t",) for _ in ids), texts=texts, source="synthetic")


def test_ten_thousand_capabilities_encode_in_length_sorted_batches(counting_encoder, tmp_path):
    backend, session = counting_encoder
    catalog = _catalog(N)
    builder = DenseBuilder(
        MODEL, cache_root=str(tmp_path), batch_size=BATCH, device="cpu", backend=backend
    )
    ranker = builder.build(catalog)
    assert ranker.keys.shape == (N, 384)
    np.testing.assert_allclose(np.linalg.norm(ranker.keys, axis=1), 1.0, atol=1e-5)
    assert len(session.shapes) == math.ceil(N / BATCH)
    assert all(rows <= BATCH for rows, _ in session.shapes)
    padded = sum(rows * seq for rows, seq in session.shapes)
    assert padded <= 1.05 * session.real_tokens  # sorted by length: almost no padding

    again = builder.build(catalog)  # warm embedding cache: no forward pass at all
    assert len(session.shapes) == math.ceil(N / BATCH)
    np.testing.assert_array_equal(again.keys, ranker.keys)


def test_feature_matrix_for_ten_thousand_rows_is_read_in_bulk():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ids = tuple(f"cap-{i}" for i in range(N))
    values = [None if i % 7 == 0 else float(i) for i in range(N)]
    stamps = [now - timedelta(hours=48 if i % 5 == 0 else 1) for i in range(N)]
    table = pa.table(
        {
            "success_rate": pa.array(values, pa.float64()),
            "calls": pa.array([i if i % 3 else None for i in range(N)], pa.int64()),
            "event_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
        }
    )
    snap = FeatureSnapshot(ids, table, now, max_age_hours=24.0)
    out = snap.matrix(["success_rate", "calls", "absent"], [0.5, -1.0, 9.0])
    assert out.shape == (N, 3) and out.dtype == np.float32
    i = np.arange(N)
    fresh = i % 5 != 0
    np.testing.assert_array_equal(
        out[:, 0], np.where(fresh & (i % 7 != 0), i, 0.5).astype(np.float32)
    )
    np.testing.assert_array_equal(
        out[:, 1], np.where(fresh & (i % 3 != 0), i, -1.0).astype(np.float32)
    )
    assert (out[:, 2] == 9.0).all()


def test_bundle_builder_encodes_new_items_on_the_serving_backend(counting_encoder, tmp_path):
    """A trained model's new capabilities go through the same batch path and cache."""
    backend, session = counting_encoder
    texts = list(_catalog(1000).texts)
    builder = BundleBuilder(
        SimpleNamespace(text_model=MODEL), str(tmp_path), BATCH, "cpu", backend=backend
    )
    vecs = builder._encode(texts)
    assert vecs.shape == (1000, 384) and len(session.shapes) == math.ceil(1000 / BATCH)
    assert (tmp_path / model_slug(MODEL)).is_dir()  # fp32 shares torch's cache folder
    builder._encode(texts)
    assert len(session.shapes) == math.ceil(1000 / BATCH)


def test_serving_builders_take_the_configured_backend(tmp_path):
    cfg = CaprankConfig.model_validate({"paths": {"home": str(tmp_path)}})
    assert dense_builder(cfg).backend == serving_backend(cfg, catalog=True)
    assert dense_builder(cfg).backend.name == "onnx" and dense_builder(cfg).batch_size == 64
