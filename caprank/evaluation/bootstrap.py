"""Seeded percentile bootstrap, shared by metric intervals, the gate and off-policy estimates.

Resample indices are drawn in chunks so that 1,000 resamples of 20,000 queries never hold
more than a few million indices at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

# Upper bound on indices held in memory at once (resamples x rows per chunk).
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile-bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def bootstrap_statistics(
    columns: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    samples: int,
    seed: int,
) -> np.ndarray:
    """``statistic`` over ``samples`` row resamples of the aligned ``columns``.

    ``statistic`` receives one resampled ``(chunk, n)`` array per column and returns one
    value per resample. Rows are drawn with replacement from ``numpy.random.default_rng(seed)``.
    """
    n = len(columns[0])
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    if any(len(c) != n for c in columns):
        raise ValueError("bootstrap columns must have the same length")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_CELLS // n)
    out = np.empty(samples, dtype=np.float64)
    for start in range(0, samples, per_chunk):
        stop = min(samples, start + per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = statistic(*(c[idx] for c in columns))
    return out


def percentile_interval(estimate: float, stats: np.ndarray, confidence: float) -> Interval:
    """Equal-tailed percentile interval; resamples where the statistic is undefined are dropped."""
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return Interval(float(estimate), float("nan"), float("nan"), confidence)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return Interval(float(estimate), float(low), float(high), confidence)


def mean_interval(values: np.ndarray, samples: int, confidence: float, seed: int) -> Interval:
    """Mean of ``values`` with a percentile-bootstrap interval (resampling rows)."""
    values = np.asarray(values, dtype=np.float64)
    stats = bootstrap_statistics((values,), lambda v: v.mean(axis=1), samples, seed)
    return percentile_interval(float(values.mean()), stats, confidence)
