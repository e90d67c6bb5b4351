"""The temporal split of a dataset without labels: its log, cut in time order.

A dataset whose only signal is its interaction log (``logs_only``) has no labeled
intents to validate or test on. Its log is cut by time instead (``temporal_split``):
the oldest events train, the next validate (early stopping, calibration), the latest
test (the evaluate stage, with IPS/SNIPS beside the ranking metrics). numpy only, so
the training image imports it (``caprank.training.data``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caprank.config import EvaluationConfig
from caprank.data.dataset import Dataset
from caprank.data.schemas import TABLES
from caprank.errors import DataError


@dataclass(frozen=True)
class TemporalSplit:
    """Train / valid / test of an interaction log by time: events before ``valid_start``
    train, those in [valid_start, test_start) validate, the rest test. What a dataset
    without labels is trained, validated and tested on (docs/evaluation.md)."""

    valid_start: np.datetime64
    test_start: np.datetime64

    def assign(self, timestamps: np.ndarray) -> np.ndarray:
        """'train', 'valid' or 'test' for each timestamp."""
        ts = np.asarray(timestamps, dtype="datetime64[us]")
        out = np.full(ts.shape, "train", dtype=object)
        out[ts >= self.valid_start] = "valid"
        out[ts >= self.test_start] = "test"
        return out

    def bounds(self, test_end: np.datetime64) -> dict[str, str]:
        """The period starts as ISO strings (a protocol fold's window)."""
        return {
            "valid_start": str(self.valid_start),
            "test_start": str(self.test_start),
            "test_end": str(test_end),
        }


def temporal_split(
    timestamps: np.ndarray,
    valid_fraction: float,
    test_fraction: float,
    source: str = TABLES["interactions"].file,
) -> TemporalSplit:
    """Cut a log in time order: the latest ``test_fraction`` of its events test, the
    ``valid_fraction`` before them validate. Cuts fall between distinct timestamps, so
    events logged at the same instant stay together; each part must hold events."""
    ts = np.sort(np.asarray(timestamps, dtype="datetime64[us]"))
    n = ts.size
    if valid_fraction <= 0 or test_fraction <= 0 or valid_fraction + test_fraction >= 1:
        raise ValueError("valid and test fractions must be > 0 and sum to less than 1")
    test_start = ts[min(n - 1, round(n * (1 - test_fraction)))] if n else None
    valid_start = ts[round(n * (1 - test_fraction - valid_fraction))] if n else None
    split = None if n == 0 else TemporalSplit(valid_start, test_start)
    if split is not None:
        parts = split.assign(ts)
        if all((parts == p).any() for p in ("train", "valid", "test")):
            return split
    raise DataError(
        source,
        f"{n} events at {np.unique(ts).size} distinct times cannot be cut into train, "
        f"valid ({valid_fraction:g}) and test ({test_fraction:g}) periods",
        field="timestamp",
    )


def logs_only(ds: Dataset) -> bool:
    """A dataset with an interaction log and no labels: trained, validated and tested on
    its log's ``temporal_split``."""
    return ds.labels.num_rows == 0 and ds.interactions.num_rows > 0


def log_splits(ds: Dataset, cfg: EvaluationConfig) -> tuple[TemporalSplit, np.ndarray]:
    """The ``temporal_split`` of ``ds``'s log by ``cfg.temporal_valid_fraction`` and
    ``cfg.temporal_test_fraction``, and the part ('train', 'valid', 'test') of each row."""
    ts = ds.interactions["timestamp"].to_numpy(zero_copy_only=False)
    file = TABLES["interactions"].file
    source = str(ds.root / file) if ds.root is not None else file
    split = temporal_split(ts, cfg.temporal_valid_fraction, cfg.temporal_test_fraction, source)
    return split, split.assign(ts)
