"""The statistics of a two-arm comparison, peeking-safe.

The decision uses the mixture sequential probability ratio test (mSPRT, Johari et al.,
"Always valid inference", 2017): the difference estimate d (treatment - control) with
variance V is compared with a normal mixture N(0, tau^2) over the true difference, giving

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))

and 1 / Lambda is a p-value that stays valid however often it is looked at; the
always-valid p-value is its running minimum over the looks. Rejecting when it falls to
``alpha`` keeps the false-positive rate at most ``alpha`` under continuous monitoring
(asymptotically: the variance is estimated). The matching confidence sequence is
``d +- msprt_threshold(V) * sqrt(V)``. ``tau`` is the minimum detectable effect: the
mixture then weighs the effects the experiment is sized for.

A fixed-horizon Wald interval and p-value are reported beside them for reference only:
they are not valid under peeking and never drive a decision.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtr, ndtri  # the normal cdf and its inverse, as fast ufuncs


def msprt_threshold(var, tau: float, alpha: float):
    """|d| / sqrt(V) at which the mSPRT rejects at level ``alpha`` (array or scalar)."""
    var = np.asarray(var, dtype=float)
    t2 = tau * tau
    return np.sqrt((var + t2) / t2 * (2.0 * math.log(1.0 / alpha) + np.log((var + t2) / var)))


def msprt_log_lambda(diff, var, tau: float):
    """Log of the mixture likelihood ratio of a zero difference (array or scalar)."""
    diff, var = np.asarray(diff, dtype=float), np.asarray(var, dtype=float)
    t2 = tau * tau
    return 0.5 * np.log(var / (var + t2)) + t2 * diff * diff / (2.0 * var * (var + t2))


def smoothed_rate(successes, n):
    """(s + 1) / (n + 2): a rate whose variance p(1 - p) is never zero."""
    return (np.asarray(successes, dtype=float) + 1.0) / (np.asarray(n, dtype=float) + 2.0)


def proportion_diff(s_c, n_c, s_t, n_t):
    """Difference of rates (treatment - control) and its variance, per look (arrays)."""
    n_c, n_t = np.asarray(n_c, dtype=float), np.asarray(n_t, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.where((n_c > 0) & (n_t > 0), np.asarray(s_t) / n_t - np.asarray(s_c) / n_c, 0.0)
    pc, pt = smoothed_rate(s_c, n_c), smoothed_rate(s_t, n_t)
    var = pc * (1 - pc) / np.maximum(n_c, 1.0) + pt * (1 - pt) / np.maximum(n_t, 1.0)
    return diff, var


def always_valid_p(diff, var, n_c, n_t, tau: float, min_per_arm: int) -> np.ndarray:
    """Running minimum of 1 / Lambda over looks in time order; 1 until both arms hold
    ``min_per_arm`` outcomes (a rate on a handful of outcomes is not yet normal)."""
    p = np.atleast_1d(np.minimum(1.0, np.exp(-msprt_log_lambda(diff, var, tau))))
    ready = (np.atleast_1d(n_c) >= min_per_arm) & (np.atleast_1d(n_t) >= min_per_arm)
    return np.minimum.accumulate(np.where(ready, p, 1.0))


@dataclass(frozen=True)
class Comparison:
    """Treatment vs control on one metric at the latest look."""

    metric: str
    control: float
    treatment: float
    diff: float
    ci_low: float  # always-valid (confidence sequence)
    ci_high: float
    p_value: float  # always-valid: running minimum over the looks
    fixed_ci_low: float  # fixed-horizon Wald: reference only, not peeking-safe
    fixed_ci_high: float
    fixed_p_value: float
    looks: int
    crossed_look: int | None  # first look at which p_value <= alpha

    def to_dict(self) -> dict:
        return asdict(self)


def comparison(
    metric: str,
    control: float,
    treatment: float,
    diff: float,
    var: float,
    p_values: np.ndarray,
    tau: float,
    alpha: float,
) -> Comparison:
    """Assemble a ``Comparison`` from the latest estimate and the p-value trajectory."""
    half = float(msprt_threshold(var, tau, alpha)) * math.sqrt(var)
    z_fixed = float(ndtri(1.0 - alpha / 2.0)) * math.sqrt(var)
    crossed = np.flatnonzero(p_values <= alpha)
    return Comparison(
        metric=metric,
        control=float(control),
        treatment=float(treatment),
        diff=float(diff),
        ci_low=float(diff - half),
        ci_high=float(diff + half),
        p_value=float(p_values[-1]) if len(p_values) else 1.0,
        fixed_ci_low=float(diff - z_fixed),
        fixed_ci_high=float(diff + z_fixed),
        fixed_p_value=float(2.0 * ndtr(-abs(diff) / math.sqrt(var))),
        looks=len(p_values),
        crossed_look=int(crossed[0]) + 1 if len(crossed) else None,
    )


def compare_proportions(
    metric: str, s_c, n_c, s_t, n_t, *, tau: float, alpha: float, min_per_arm: int
) -> Comparison:
    """Rates compared over cumulative counts per look (the last entry is the latest)."""
    s_c, n_c, s_t, n_t = (np.atleast_1d(np.asarray(x, dtype=float)) for x in (s_c, n_c, s_t, n_t))
    diff, var = proportion_diff(s_c, n_c, s_t, n_t)
    p = always_valid_p(diff, var, n_c, n_t, tau, min_per_arm)
    rate_c = s_c[-1] / n_c[-1] if n_c[-1] else 0.0
    rate_t = s_t[-1] / n_t[-1] if n_t[-1] else 0.0
    return comparison(metric, rate_c, rate_t, diff[-1], var[-1], p, tau, alpha)


def compare_means(
    metric: str,
    control: tuple[float, float, int],
    treatment: tuple[float, float, int],
    *,
    tau: float,
    alpha: float,
    min_per_arm: int,
) -> Comparison:
    """Means (mean, variance, n) compared at the latest look (Welch variance)."""
    (mc, vc, nc), (mt, vt, nt) = control, treatment
    var = max(vc / max(nc, 1) + vt / max(nt, 1), 1e-12)
    p = always_valid_p(mt - mc, var, nc, nt, tau, min_per_arm)
    return comparison(metric, mc, mt, mt - mc, var, p, tau, alpha)
