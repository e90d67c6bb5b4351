"""How many outcomes an experiment needs: the closed form, and what the sequential test adds.

``fixed_n`` is the textbook two-proportion sample size (Fleiss, without continuity
correction; unequal arms by the allocation ratio k = treatment / control) for a two-sided
test at ``alpha`` with ``power`` against an absolute lift ``mde`` over ``baseline``:

    n_c = [z(1-a/2) sqrt(p(1-p)(1 + 1/k)) + z(power) sqrt(p1 q1 + p2 q2 / k)]^2 / mde^2

with p the allocation-weighted mean rate. It is what a single look at the end needs.
People look every hour, so the decision uses an always-valid test (``analysis.msprt``),
which pays for peeking with more samples: ``sequential_n`` is the smallest control-arm
size at which the mSPRT's final-look power alone reaches ``power`` (conservative: an
earlier crossing only adds power). The experiment runs until that, or ``max_duration_h``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy.stats import norm

from caprank.experiments.analysis import msprt_threshold


def _rates(baseline: float, mde: float) -> tuple[float, float]:
    if not 0.0 < baseline < 1.0:
        raise ValueError(f"baseline rate must be in (0, 1), got {baseline}")
    if not 0.0 < mde < 1.0 - baseline:
        raise ValueError(f"mde must be in (0, 1 - baseline = {1 - baseline:.4f}), got {mde}")
    return baseline, baseline + mde


def fixed_n(baseline: float, mde: float, alpha: float, power: float, share: float = 0.5) -> int:
    """Control-arm outcomes for a single-look two-sided test (closed form, rounded up)."""
    p1, p2 = _rates(baseline, mde)
    k = share / (1.0 - share)
    pbar = (p1 + k * p2) / (1.0 + k)
    za, zb = norm.ppf(1.0 - alpha / 2.0), norm.ppf(power)
    root = za * math.sqrt(pbar * (1 - pbar) * (1 + 1 / k)) + zb * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2) / k
    )
    return math.ceil(root**2 / mde**2)


def sequential_power(n_control: float, baseline: float, mde: float, alpha: float, share: float):
    """The mSPRT's probability of crossing at its final look with ``n_control`` outcomes."""
    p1, p2 = _rates(baseline, mde)
    n_treat = n_control * share / (1.0 - share)
    var = p1 * (1 - p1) / n_control + p2 * (1 - p2) / n_treat
    z = mde / math.sqrt(var)
    return float(norm.cdf(z - msprt_threshold(var, mde, alpha)))


def sequential_n(baseline: float, mde: float, alpha: float, power: float, share: float = 0.5):
    """Smallest control-arm size whose final-look mSPRT power reaches ``power`` (tau = mde)."""
    lo = fixed_n(baseline, mde, alpha, power, share)
    hi = lo
    while sequential_power(hi, baseline, mde, alpha, share) < power:
        hi *= 2
    while lo < hi:  # power rises with n in this range: bisect on integers
        mid = (lo + hi) // 2
        if sequential_power(mid, baseline, mde, alpha, share) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class Design:
    """An experiment's sizing: what the closed form says and what the run plans for."""

    baseline_rate: float
    mde: float
    alpha: float
    power: float
    share: float
    fixed_n_control: int
    fixed_n_treatment: int
    planned_n_control: int
    planned_n_treatment: int

    def to_dict(self) -> dict:
        return asdict(self)


def design(baseline: float, mde: float, alpha: float, power: float, share: float) -> Design:
    k = share / (1.0 - share)
    n_fixed = fixed_n(baseline, mde, alpha, power, share)
    n_plan = sequential_n(baseline, mde, alpha, power, share)
    return Design(
        baseline_rate=baseline,
        mde=mde,
        alpha=alpha,
        power=power,
        share=share,
        fixed_n_control=n_fixed,
        fixed_n_treatment=math.ceil(n_fixed * k),
        planned_n_control=n_plan,
        planned_n_treatment=math.ceil(n_plan * k),
    )
