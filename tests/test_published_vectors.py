"""The dense catalog build reuses the text vectors the embed stage published to Feast
(same model, same text) and encodes only the rest (issue 16: a cold start on a large
catalog must not repeat the embed stage's work)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from caprank.embeddings.backend import TextBackend
from caprank.files import text_hash
from caprank.online.catalog import Catalog
from caprank.online.features import FeatureSnapshot
from caprank.online.ranker import DenseBuilder

MODEL = "some-model"


class Recording(TextBackend):
    """A backend whose vectors are known, recording what it was asked to encode."""

    def encode(self, texts, model, batch_size, device):
        self.__dict__.setdefault("asked", []).extend(texts)
        return np.tile(np.array([0.0, 1.0], dtype=np.float32), (len(texts), 1))


def snapshot(texts: list[str], shas: list[str | None], models: list[str], vecs) -> FeatureSnapshot:
    table = pa.table(
        {
            "capability_id": [f"c{i}" for i in range(len(texts))],
            "text_sha256": shas,
            "text_model": models,
            "text_embedding": pa.array(vecs, pa.list_(pa.float32())),
        }
    )
    ids = tuple(table["capability_id"].to_pylist())
    return FeatureSnapshot(ids, table, datetime.now(UTC), 24.0)


def test_published_vectors_are_reused_and_only_the_rest_encoded():
    texts = ["first text", "second text", "third text", "fourth text"]
    cat = Catalog(ids=tuple(f"c{i}" for i in range(4)), tools=(("t",),) * 4,
                  texts=tuple(texts), source="test")  # fmt: skip
    snap = snapshot(
        texts,
        [text_hash(texts[0]), text_hash("an older text"), text_hash(texts[2]), text_hash(texts[3])],
        [MODEL, MODEL, "another-model", MODEL],
        [[3.0, 4.0], [1.0, 0.0], [1.0, 0.0], None],
    )
    backend = Recording()
    keys = DenseBuilder(MODEL, backend=backend).build(cat, snap).keys
    # row 0 reused (normalized); row 1's text changed, row 2's model differs, row 3 has none
    assert backend.asked == texts[1:]
    np.testing.assert_allclose(keys[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(keys[1:], [[0.0, 1.0]] * 3)


def test_without_a_snapshot_or_with_int8_everything_is_encoded():
    texts = ["only text"]
    cat = Catalog(ids=("c0",), tools=(("t",),), texts=tuple(texts), source="test")
    snap = snapshot(texts, [text_hash(texts[0])], [MODEL], [[1.0, 0.0]])
    for backend, features in ((Recording(), None), (Recording(name="onnx", quantize=True), snap)):
        keys = DenseBuilder(MODEL, backend=backend).build(cat, features).keys
        assert backend.asked == texts
        np.testing.assert_allclose(keys, [[0.0, 1.0]])
