"""Capability features as model inputs: which columns, log-scaled counts, standardized.

The scaler is fitted on the training catalog and stored in the bundle; serving feeds raw
Feast values through the same transform. A missing or stale row gets the raw value whose
transform is the training mean, i.e. a standardized zero (neutral).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Numeric columns of the capability feature table the model reads (usage windows are
# matched by prefix); counts and times are heavy-tailed, so they go through log1p.
BASE_COLUMNS = (
    "tool_count",
    "avg_execution_time_ms",
    "success_rate",
    "usage_count_total",
    "pagerank_score",
    "clustering_coefficient",
)
LOG_PREFIXES = ("usage_count_", "avg_execution_time_ms", "tool_count")


def feature_columns(table: pa.Table) -> list[str]:
    cols = [c for c in BASE_COLUMNS if c in table.column_names]
    cols += sorted(c for c in table.column_names if c.startswith("usage_count_") and c not in cols)
    return cols


def latest_rows(table: pa.Table, capability_ids: Sequence[str], columns: Sequence[str]):
    """(C, F) raw values from each capability's latest snapshot; NaN where it has none."""
    out = np.full((len(capability_ids), len(columns)), np.nan, dtype=np.float64)
    if table.num_rows == 0 or not columns:
        return out
    order = pc.sort_indices(table, [("event_timestamp", "ascending")])
    table = table.take(order)
    pos = {c: i for i, c in enumerate(capability_ids)}
    ids = table["capability_id"].to_pylist()
    cols = [table[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in columns]
    for r, cid in enumerate(ids):  # later snapshots overwrite earlier ones
        i = pos.get(cid)
        if i is not None:
            out[i] = [col[r] for col in cols]
    return out


@dataclass(frozen=True)
class FeatureScaler:
    columns: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    @property
    def log_mask(self) -> np.ndarray:
        return np.array([c.startswith(LOG_PREFIXES) for c in self.columns], dtype=bool)

    def _log(self, raw: np.ndarray) -> np.ndarray:
        x = np.array(raw, dtype=np.float64)
        m = self.log_mask
        x[:, m] = np.log1p(np.maximum(x[:, m], 0.0))
        return x

    @classmethod
    def fit(cls, columns: Sequence[str], raw: np.ndarray) -> FeatureScaler:
        probe = cls(tuple(columns), np.zeros(len(columns)), np.ones(len(columns)))
        x = probe._log(raw)
        mean = np.nan_to_num(np.nanmean(x, axis=0)) if x.size else np.zeros(len(columns))
        std = np.nan_to_num(np.nanstd(x, axis=0)) if x.size else np.ones(len(columns))
        std = np.where(std > 1e-6, std, 1.0)
        return cls(tuple(columns), mean, std)

    def transform(self, raw: np.ndarray | None, n: int) -> np.ndarray:
        """Standardized (n, F) float32; NaN (missing) entries become 0."""
        if raw is None or not self.columns:
            return np.zeros((n, len(self.columns)), dtype=np.float32)
        z = (self._log(raw) - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0).astype(np.float32)

    def neutral_raw(self) -> np.ndarray:
        """Raw values that standardize to zero (for missing or stale rows)."""
        raw = self.mean.copy()
        m = self.log_mask
        raw[m] = np.expm1(raw[m])
        return raw

    def to_json(self) -> dict:
        return {
            "columns": list(self.columns),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict) -> FeatureScaler:
        return cls(
            tuple(data["columns"]),
            np.asarray(data["mean"], dtype=np.float64),
            np.asarray(data["std"], dtype=np.float64),
        )


# The raw feature rows the bundle was trained with (each training capability's latest
# snapshot), stored in the bundle: what the MLflow pyfunc ranks with, as the server
# ranks with the same rows read from Feast's online store.
REFERENCE_FILE = "features.parquet"


def reference_table(
    capability_ids: Sequence[str], columns: Sequence[str], raw: np.ndarray
) -> pa.Table:
    """``capability_id`` plus one float64 column per feature (NaN where no snapshot)."""
    data = {"capability_id": pa.array(list(capability_ids), pa.string())}
    for j, name in enumerate(columns):
        data[name] = pa.array(np.asarray(raw[:, j], dtype=np.float64))
    return pa.table(data)
