"""Capability features held in the server's memory, and the freshness policy on them.

The server reads every catalog capability's features from Feast's online store in one
batched call (``caprank.features.store.online_features``) at load time and again on
refresh, never per request. Each row carries its snapshot time; a row older than
``features.max_staleness_hours`` (or missing) is **not** used: the model gets a
neutral row instead (the training mean, which standardizes to zero), the count of such
rows is exported as a metric, and responses say the features were stale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from caprank.config import CaprankConfig
from caprank.files import text_hash

log = logging.getLogger(__name__)

TIMESTAMP = "event_timestamp"


@dataclass(frozen=True)
class FeatureSnapshot:
    """Online feature rows aligned to the catalog order, and when they were read."""

    ids: tuple[str, ...]
    table: pa.Table | None  # one row per id, in order; None: no feature store
    read_at: datetime
    max_age_hours: float
    error: str = ""
    _stale: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _oldest: datetime | None = field(default=None, repr=False)
    _n_stale: int = field(default=0, repr=False)  # counted once: read on every request

    def __post_init__(self) -> None:
        stale = np.ones(len(self.ids), dtype=bool)
        if self.table is not None and TIMESTAMP in self.table.column_names:
            limit = self.read_at.timestamp() - self.max_age_hours * 3600.0
            stamps = self.table[TIMESTAMP].to_pylist()
            stale = np.array([t is None or t.timestamp() < limit for t in stamps], dtype=bool)
        object.__setattr__(self, "_stale", stale)
        object.__setattr__(self, "_n_stale", int(stale.sum()))
        oldest = None
        if self.table is not None and TIMESTAMP in self.table.column_names:
            stamps = [t for t in self.table[TIMESTAMP].to_pylist() if t is not None]
            oldest = min(stamps) if stamps else None
        object.__setattr__(self, "_oldest", oldest)

    @property
    def available(self) -> bool:
        return self.table is not None

    @property
    def stale_mask(self) -> np.ndarray:
        """True where a row is missing or older than the staleness limit."""
        return self._stale

    @property
    def n_stale(self) -> int:
        return self._n_stale

    def age_hours(self, now: datetime | None = None) -> float | None:
        """Age of the oldest snapshot among present rows (None when nothing is present)."""
        if self._oldest is None:
            return None
        return ((now or datetime.now(UTC)) - self._oldest).total_seconds() / 3600.0

    def matrix(self, columns: Sequence[str], neutral: Sequence[float]) -> np.ndarray:
        """(n, len(columns)) float32 features with stale or missing rows set to ``neutral``."""
        n = len(self.ids)
        out = np.tile(np.asarray(neutral, dtype=np.float32), (n, 1))
        if self.table is None or not columns:
            return out.reshape(n, len(columns))
        fresh = ~self._stale
        for j, name in enumerate(columns):
            if name not in self.table.column_names:
                continue
            col = pc.cast(self.table[name], pa.float64())  # nulls become NaN below, in bulk
            values = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            use = fresh & ~np.isnan(values)
            out[use, j] = values[use]
        return out

    def text_vectors(self, texts: Sequence[str], text_model: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, vectors): the published text embeddings (the embed stage's, through
        Feast) that ``text_model`` made from exactly ``texts[row]`` (same sha256). A
        vector depends only on the model and the text, so its age does not matter;
        encoding it again at start-up would only repeat the embed stage's work."""
        names = {"text_embedding", "text_sha256", "text_model"}
        empty = np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        if self.table is None or not names <= set(self.table.column_names):
            return empty
        shas = self.table["text_sha256"].to_pylist()
        models = self.table["text_model"].to_pylist()
        vectors = self.table["text_embedding"].combine_chunks()
        rows = [
            i
            for i, (text, sha, model) in enumerate(zip(texts, shas, models, strict=True))
            if model == text_model and sha is not None and vectors[i].is_valid
            and sha == text_hash(text)
        ]  # fmt: skip
        if not rows:
            return empty
        offsets = vectors.offsets.to_numpy()
        flat = vectors.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        lengths = {int(offsets[i + 1] - offsets[i]) for i in rows}
        if len(lengths) != 1:
            return empty  # mixed dimensions: not one model's output after all
        out = np.stack([flat[offsets[i] : offsets[i + 1]] for i in rows])
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return np.asarray(rows, dtype=np.int64), out


def read_snapshot(
    cfg: CaprankConfig, ids: Sequence[str], now: datetime | None = None
) -> FeatureSnapshot:
    """Read all ``ids`` from the online store in one call.

    With no Feast registry yet (nothing was ever published) or an unreachable store, the
    snapshot is empty and every row counts as stale; the server keeps serving.
    """
    now = now or datetime.now(UTC)
    limit = cfg.features.max_staleness_hours
    ids = tuple(ids)
    if not cfg.services.feast_registry and not (cfg.feast_dir() / "registry.db").exists():
        return FeatureSnapshot(ids, None, now, limit, error="no Feast registry (never published)")
    try:
        from caprank.features.store import online_features, open_store

        table = online_features(open_store(cfg), ids)
    except Exception as exc:  # a broken store must not take serving down
        log.warning("online feature read failed: %s", exc)
        return FeatureSnapshot(ids, None, now, limit, error=f"{type(exc).__name__}: {exc}")
    return FeatureSnapshot(ids, table, now, limit)
