"""Rewards from logged outcomes (seed 002 §2.1): what an executed capability earned.

success / partial / failure map to ``RewardConfig`` values; a latency penalty per second
of execution time is subtracted, and a 1-5 user rating, when present, adds
``feedback_weight * (rating - 3) / 2`` (so a neutral 3 changes nothing).
"""

from __future__ import annotations

import numpy as np

from caprank.config import RewardConfig
from caprank.data.schemas import OUTCOMES
from caprank.errors import DataError


def outcome_values(cfg: RewardConfig) -> dict[str, float]:
    return {"success": cfg.success, "partial": cfg.partial, "failure": cfg.failure}


def rewards(
    outcomes,
    execution_time_ms=None,
    feedback=None,
    cfg: RewardConfig | None = None,
    source: str = "interactions",
) -> np.ndarray:
    """Vectorized reward per event; ``feedback`` entries may be None/NaN (no rating)."""
    cfg = cfg or RewardConfig()
    out = np.asarray(outcomes, dtype=object)
    values = outcome_values(cfg)
    bad = [i for i, o in enumerate(out) if o not in values]
    if bad:
        raise DataError(
            source,
            f"unknown outcome {out[bad[0]]!r} (expected one of {OUTCOMES})",
            row=bad[0],
            field="outcome",
        )
    r = np.array([values[o] for o in out], dtype=np.float64)
    if execution_time_ms is not None:
        t = np.asarray(execution_time_ms, dtype=np.float64)
        if np.any(t < 0) or np.any(~np.isfinite(t)):
            row = int(np.flatnonzero((t < 0) | ~np.isfinite(t))[0])
            raise DataError(
                source, "execution time must be >= 0", row=row, field="execution_time_ms"
            )
        r -= cfg.latency_penalty_per_s * t / 1000.0
    if feedback is not None:
        fb = np.array([np.nan if f is None else float(f) for f in feedback], dtype=np.float64)
        given = ~np.isnan(fb)
        if np.any((fb[given] < 1) | (fb[given] > 5)):
            row = int(np.flatnonzero(given & ((fb < 1) | (fb > 5)))[0])
            raise DataError(source, "feedback must be a 1-5 rating", row=row, field="feedback")
        r[given] += cfg.feedback_weight * (fb[given] - 3.0) / 2.0
    return r


def reward(
    outcome: str,
    execution_time_ms: float = 0.0,
    feedback: int | None = None,
    cfg: RewardConfig | None = None,
) -> float:
    """The reward of one event (see ``rewards``)."""
    return float(rewards([outcome], [execution_time_ms], [feedback], cfg)[0])
