"""The narrow protocol the server ranks through, and the dense fallback that implements it.

A ``Ranker`` is built once per (model, catalog, feature snapshot) and is immutable: all
that does not depend on the request (capability representations, features) is computed
in ``build``, so a request costs one intent embedding (cached) and one matrix product.
A trained bundle's ``RankIndex`` fits the same protocol through a thin adapter.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from caprank.embeddings.backend import TORCH, TextBackend
from caprank.online.catalog import Catalog
from caprank.online.features import FeatureSnapshot

log = logging.getLogger(__name__)

# Gathering candidate rows before the product copies them (10,000 x 384 floats: 15 MB);
# above this share of the catalog one product over every row, then a gather of the
# scores, costs less.
FULL_PRODUCT_SHARE = 0.125


def candidate_scores(keys: np.ndarray, query: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    """``keys[idx] @ query`` (every row when ``idx`` is None), computed the cheaper way."""
    if idx is None:
        return keys @ query
    if len(idx) >= FULL_PRODUCT_SHARE * len(keys):
        return (keys @ query)[idx]
    return keys[idx] @ query


def _finite(scores: np.ndarray) -> np.ndarray:
    """``scores``, checked once (a diverged model must not serve an arbitrary order): what
    the cache hands out later needs no check."""
    if not np.isfinite(scores).all():
        raise FloatingPointError("the model produced non-finite scores")
    return scores


class ScoreCache:
    """A cached intent's scores over the whole catalog, per ranker, kept in an LRU of at
    most ``max_bytes``: a later cache hit gathers its candidates' scores (microseconds)
    instead of a product over their rows (0.1-0.3 ms for 1,000 rows of 384 floats that
    are not in the CPU's caches). An entry is valid for the very ranker and intent vector
    it was computed from (a rebuilt ranker or a re-encoded intent computes it again; an
    entry holds its ranker weakly, so a swapped-out model is not kept alive); the first
    hit of an intent pays one product over every row. Scores with a NaN or infinity are
    refused (``FloatingPointError``) and never cached."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._data: OrderedDict[tuple[int, str], tuple[weakref.ref, np.ndarray, np.ndarray]]
        self._data = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def scores(
        self, ranker: Ranker, text: str, vec: np.ndarray, idx: np.ndarray | None, rows: int
    ) -> np.ndarray:
        """``ranker``'s scores of rows ``idx`` (every row when None; ``rows`` in all) for
        intent ``text`` whose vector is ``vec``, from the cache when they are there. A
        catalog whose scores (float32) would not fit is scored as without a cache."""
        if rows * 4 > self.max_bytes:
            return _finite(ranker.score(ranker.query(vec, text), idx))
        key = (id(ranker), text)
        with self._lock:
            item = self._data.get(key)
            if item is not None and item[0]() is ranker and item[1] is vec:
                self._data.move_to_end(key)
                full = item[2]
            else:
                full = None
        if full is None:
            full = _finite(ranker.score(ranker.query(vec, text), None))
            self._put(key, (weakref.ref(ranker), vec, full))
        return full if idx is None else full[idx]

    def _put(self, key: tuple[int, str], item: tuple) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            self.nbytes += item[2].nbytes - (old[2].nbytes if old is not None else 0)
            self._data[key] = item
            while self.nbytes > self.max_bytes and len(self._data) > 1:
                self.nbytes -= self._data.popitem(last=False)[1][2].nbytes


class Ranker(Protocol):
    """Scores catalog rows for one intent; rows follow the catalog it was built on."""

    text_model: str  # sentence-transformers id the intents must be encoded with
    has_value_head: bool

    def query(self, intent_vec: np.ndarray, text: str) -> np.ndarray:
        """The per-intent representation ``score`` takes (cacheable per intent)."""
        ...

    def score(self, query: np.ndarray, candidate_idx: np.ndarray | None) -> np.ndarray:
        """Scores (higher is better) of the candidate rows, or of every row when None."""
        ...

    def success_probability(
        self, intent_vec: np.ndarray, text: str, candidate_idx: np.ndarray
    ) -> np.ndarray | None:
        """Value-head estimate for a few rows (the returned top-k), None without a head."""
        ...


class RankerBuilder(Protocol):
    """A loaded model artifact that can (re)build its ranker for a catalog and features."""

    kind: str
    text_model: str
    uses_features: bool

    def build(self, catalog: Catalog, features: FeatureSnapshot | None) -> Ranker: ...


@dataclass(frozen=True)
class DenseRanker:
    """Cosine between the intent embedding and each capability's text embedding."""

    text_model: str
    keys: np.ndarray  # (C, d) L2-normalized capability text embeddings
    has_value_head: bool = False

    def query(self, intent_vec: np.ndarray, text: str) -> np.ndarray:
        return intent_vec

    def score(self, query: np.ndarray, candidate_idx: np.ndarray | None) -> np.ndarray:
        return candidate_scores(self.keys, query, candidate_idx)

    def success_probability(self, intent_vec, text, candidate_idx) -> None:
        return None


@dataclass(frozen=True)
class DenseBuilder:
    """Builds a ``DenseRanker``: each capability's text vector as the embed stage published
    it to Feast (same model, same text), else encoded once through the disk cache, so a
    server's first start on a large catalog does not repeat the embed stage's work."""

    text_model: str
    cache_root: str | None = None
    batch_size: int = 64
    device: str = "auto"
    backend: TextBackend = TORCH
    kind: str = "dense"
    uses_features: bool = False

    def build(self, catalog: Catalog, features: FeatureSnapshot | None = None) -> DenseRanker:
        from caprank.embeddings.backend import cache_for
        from caprank.embeddings.cache import encode_cached

        texts = list(catalog.texts)
        # published vectors stand in where this backend shares torch's cache namespace
        # (fp32 agrees within the tested tolerance; int8 keeps its own vectors)
        shares = self.backend.cache_model(self.text_model) == self.text_model
        rows, published = (
            features.text_vectors(texts, self.text_model)
            if features is not None and shares
            else (np.zeros(0, dtype=np.int64), None)
        )
        todo = np.setdiff1d(np.arange(len(texts)), rows)
        cache = cache_for(self.cache_root, self.text_model, self.backend)
        encoded, _ = encode_cached(
            [texts[i] for i in todo],
            self.text_model,
            cache,
            self.batch_size,
            self.device,
            self.backend.encode,
        )
        if not len(rows):
            return DenseRanker(self.text_model, np.ascontiguousarray(encoded, dtype=np.float32))
        log.info("catalog: %d published text vectors reused, %d encoded", len(rows), len(todo))
        keys = np.zeros((len(texts), published.shape[1]), dtype=np.float32)
        keys[rows] = published
        if len(todo):
            keys[todo] = encoded
        return DenseRanker(self.text_model, keys)
