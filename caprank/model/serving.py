"""The serving adapter over a bundle: ``RankerBuilder``/``Ranker`` for ``caprank.online``.

``build(catalog, features)`` precomputes a ``RankIndex`` for the serving catalog's order
(new capabilities and tools are encoded from text through the embedding cache); the
ranker's ``query`` is the intent's query vector, ``score`` one matrix product, and
``success_probability`` the value head's expected reward through the bundle's
calibration (``caprank.model.calibration``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from caprank.model.bundle import Bundle
from caprank.model.index import RankIndex
from caprank.online.ranker import candidate_scores


class TextRuntime(Protocol):
    """What the builder needs of serving's text backend (``caprank.embeddings.backend.
    TextBackend``, passed by ``caprank.online.models``; the training path, through the
    MLflow pyfunc, never passes one, so it never reaches the ONNX code)."""

    def cache_model(self, model: str) -> str: ...

    def encode(self, texts: list[str], model: str, batch_size: int, device: str) -> np.ndarray: ...


@dataclass(frozen=True)
class BundleRanker:
    index: RankIndex
    text_model: str
    has_value_head: bool = True

    def query(self, intent_vec: np.ndarray, text: str) -> np.ndarray:
        return self.index.queries(np.asarray(intent_vec)[None, :], [text])[0]

    def score(self, query: np.ndarray, candidate_idx: np.ndarray | None) -> np.ndarray:
        return candidate_scores(self.index.keys, query, candidate_idx)

    def success_probability(
        self, intent_vec: np.ndarray, text: str, candidate_idx: np.ndarray
    ) -> np.ndarray:
        return self.index.success_probability(intent_vec, text, candidate_idx)

    def channels(self) -> tuple[str, ...]:
        """Names of the score channels (``SHGAT.channel_slices``), for their importance."""
        return tuple(self.index.model.channel_slices())

    def without_channel(self, name: str) -> BundleRanker:
        """This ranker with one channel's key columns zeroed: its scores lose exactly
        that channel's term (``caprank.evaluation.importance``)."""
        keys = self.index.keys.copy()
        keys[:, self.index.model.channel_slices()[name]] = 0.0
        return replace(self, index=replace(self.index, keys=keys))


@dataclass(frozen=True)
class BundleBuilder:
    bundle: Bundle
    cache_root: str | None = None
    batch_size: int = 64
    device: str = "auto"
    backend: TextRuntime | None = None  # serving's text runtime; None: torch
    kind: str = "shgat"
    uses_features: bool = True
    meta: dict = field(default_factory=dict)

    @property
    def text_model(self) -> str:
        return self.bundle.text_model

    def _encode(self, texts: list[str]) -> np.ndarray:
        from caprank.embeddings.cache import EmbeddingCache, encode_cached
        from caprank.embeddings.text import encode_texts

        model, backend = self.text_model, self.backend
        namespace = backend.cache_model(model) if backend is not None else model
        cache = EmbeddingCache(self.cache_root, namespace) if self.cache_root else None
        encode = backend.encode if backend is not None else encode_texts
        vecs, _ = encode_cached(texts, model, cache, self.batch_size, self.device, encode)
        return vecs

    def build(self, catalog, features=None) -> BundleRanker:
        tool_texts: dict[str, str] = {}
        if catalog.tool_table is not None:
            from caprank.embeddings.catalog_text import tool_texts as texts_of

            tool_texts = dict(
                zip(
                    catalog.tool_table["tool_id"].to_pylist(),
                    texts_of(catalog.tool_table),
                    strict=True,
                )
            )
        raw = None
        scaler = self.bundle.scaler
        if features is not None and features.available and scaler.columns:
            raw = features.matrix(list(scaler.columns), scaler.neutral_raw()).astype(np.float64)
        inputs = self.bundle.catalog_inputs(
            catalog.ids, catalog.tools, catalog.texts, tool_texts, raw, self._encode
        )
        return BundleRanker(self.bundle.index(inputs), self.text_model)
