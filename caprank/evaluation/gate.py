"""The promotion gate: is the challenger better than the production model? Pure functions.

Rule (all thresholds from ``cfg.evaluation``):

1. Guardrails: scoring p99 latency <= ``max_scoring_p99_ms`` and ECE <= ``max_ece``
   (a model without success probabilities, e.g. the dense ranker, has no ECE: that
   check is left out and the reason says so).
2. Floor: the challenger's mean primary metric >= ``min_primary``.
3. With a production model: a paired bootstrap over the same queries gives a
   ``confidence`` interval of mean(challenger - production) on the primary metric; the
   challenger is improved only if the interval's lower bound > ``min_improvement``.
   Without one, passing 1 and 2 is enough.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caprank.config import EvaluationConfig
from caprank.errors import DataError
from caprank.evaluation.bootstrap import Interval, bootstrap_statistics, percentile_interval


@dataclass
class GateDecision:
    """The decision and everything it was based on."""

    improved: bool
    reason: str
    metric: str
    challenger: float
    production: float | None
    delta: Interval | None  # challenger - production, with its bootstrap interval
    checks: dict[str, bool] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "improved": self.improved,
            "reason": self.reason,
            "metric": self.metric,
            "challenger": self.challenger,
            "production": self.production,
            "delta": None if self.delta is None else self.delta.to_dict(),
            "checks": self.checks,
            "measured": self.measured,
        }


def paired_bootstrap_delta(
    challenger: np.ndarray, production: np.ndarray, samples: int, confidence: float, seed: int
) -> Interval:
    """Mean of per-query differences with a percentile interval; queries are resampled
    as pairs, so both models are always compared on the same resampled queries."""
    a = np.asarray(challenger, dtype=np.float64).ravel()
    b = np.asarray(production, dtype=np.float64).ravel()
    if a.size != b.size:
        raise DataError("production", f"{b.size} per-query values, challenger has {a.size}")
    for name, arr in (("challenger", a), ("production", b)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise DataError(name, "per-query metric is not finite", row=int(bad[0]))
    diff = a - b
    stats = bootstrap_statistics((diff,), lambda d: d.mean(axis=1), samples, seed)
    return percentile_interval(float(diff.mean()), stats, confidence)


def decide(
    challenger: np.ndarray,
    production: np.ndarray | None,
    *,
    ece: float | None,
    scoring_p99_ms: float,
    cfg: EvaluationConfig,
    challenger_query_ids: np.ndarray | None = None,
    production_query_ids: np.ndarray | None = None,
) -> GateDecision:
    """Gate on ``cfg.primary_metric``, given its per-query values for the challenger and
    (when one is deployed) for production on the same queries in the same order."""
    metric = cfg.primary_metric
    ch = np.asarray(challenger, dtype=np.float64).ravel()
    if ch.size == 0:
        raise DataError("challenger", "no per-query values")
    if (
        production is not None
        and challenger_query_ids is not None
        and production_query_ids is not None
        and not np.array_equal(np.asarray(challenger_query_ids), np.asarray(production_query_ids))
    ):
        raise DataError("production", "per-query values are not on the same queries in order")
    checks = {"latency": bool(scoring_p99_ms <= cfg.max_scoring_p99_ms)}
    measured = {"scoring_p99_ms": float(scoring_p99_ms)}
    if ece is not None:
        checks["calibration"] = bool(ece <= cfg.max_ece)
        measured["ece"] = float(ece)
    checks["floor"] = bool(ch.mean() >= cfg.min_primary)
    failures = []
    if not checks["latency"]:
        failures.append(f"p99 {scoring_p99_ms:.1f} ms > {cfg.max_scoring_p99_ms:.1f} ms")
    if not checks.get("calibration", True):
        failures.append(f"ECE {ece:.3f} > {cfg.max_ece:.3f}")
    if not checks["floor"]:
        failures.append(f"{metric} {ch.mean():.4f} < floor {cfg.min_primary:.4f}")

    delta = None
    prod_mean = None
    if production is not None:
        delta = paired_bootstrap_delta(
            ch, production, cfg.bootstrap_samples, cfg.confidence, cfg.seed
        )
        prod_mean = float(np.mean(production))
        checks["beats_production"] = bool(delta.low > cfg.min_improvement)
        if not checks["beats_production"]:
            failures.append(
                f"{metric} gain {delta.estimate:+.4f}, {cfg.confidence:.0%} CI "
                f"[{delta.low:+.4f}, {delta.high:+.4f}] does not clear {cfg.min_improvement:+.4f}"
            )

    improved = not failures
    if improved and delta is not None:
        reason = (
            f"improved: {metric} {ch.mean():.4f} vs production {prod_mean:.4f}, gain "
            f"{delta.estimate:+.4f} ({cfg.confidence:.0%} CI [{delta.low:+.4f}, "
            f"{delta.high:+.4f}] > {cfg.min_improvement:+.4f}); guardrails pass"
        )
    elif improved:
        reason = (
            f"improved: no production model; {metric} {ch.mean():.4f} >= floor "
            f"{cfg.min_primary:.4f} and guardrails pass"
        )
    else:
        reason = "not improved: " + "; ".join(failures)
    if ece is None:
        reason += " (no success probabilities: calibration not checked)"
    return GateDecision(
        improved, reason, metric, float(ch.mean()), prod_mean, delta, checks, measured
    )
