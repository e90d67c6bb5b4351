"""Is one success rate worse than another by more than a margin? A fixed-horizon test.

Both the post-promotion watch (``caprank.deploy.watch``) and the ``on_degradation``
retrain policy ask the same question of two feedback counts: is the rate under test
below the reference by more than ``margin``, beyond chance? The test is one-sided,
H0: p_test >= p_ref - margin against H1: p_test < p_ref - margin, with the unpooled
(Wald) standard error, as a margin makes the pooled one wrong. So a version as good as
its reference is flagged with probability at most ``alpha``; one worse by more than the
margin is flagged more often as the counts grow. It sits beside the always-valid mSPRT
(``caprank.experiments.analysis``), which serves experiments and the canary, where
someone looks every poll; here there is one look, at the end of a period.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy.stats import norm


@dataclass(frozen=True)
class MarginComparison:
    """The two rates, the test's one-sided p-value, and whether it says "worse"."""

    test_rate: float | None
    reference_rate: float | None
    test_events: int
    reference_events: int
    margin: float
    alpha: float
    p_value: float | None  # None: too little evidence to test
    worse: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def worse_by_margin(
    test: tuple[int, int],
    reference: tuple[int, int],
    *,
    margin: float,
    alpha: float,
    min_events: int = 1,
) -> MarginComparison:
    """Compare ``test`` (successes, events) with ``reference`` (successes, events).

    With fewer than ``min_events`` events on either side nothing is tested
    (``p_value`` None, ``worse`` False, and ``reason`` says so)."""
    (s_t, n_t), (s_r, n_r) = test, reference
    for name, (s, n) in (("test", test), ("reference", reference)):
        if n < 0 or s < 0 or s > n:
            raise ValueError(f"{name} counts must satisfy 0 <= successes <= events, got {s}/{n}")
    if not 0.0 <= margin < 1.0 or not 0.0 < alpha < 1.0:
        raise ValueError(f"margin must be in [0, 1) and alpha in (0, 1), got {margin}, {alpha}")
    p_t = s_t / n_t if n_t else None
    p_r = s_r / n_r if n_r else None
    if n_t < max(min_events, 1) or n_r < max(min_events, 1):
        return MarginComparison(
            p_t, p_r, n_t, n_r, margin, alpha, None, False,
            f"too little feedback to compare ({n_t} vs {n_r} events; need {min_events} each)",
        )  # fmt: skip
    assert p_t is not None and p_r is not None
    gap = p_t - p_r + margin  # below 0: worse by more than the margin
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_r * (1 - p_r) / n_r)
    # both rates 0 or 1: no spread, the sign of the gap decides
    p_value = float(norm.cdf(gap / se)) if se > 0.0 else (0.0 if gap < 0 else 1.0)
    worse = p_value < alpha
    verdict = "worse" if worse else "not shown worse"
    reason = (
        f"success rate {p_t:.4f} ({n_t} events) vs {p_r:.4f} ({n_r}): {verdict} by more "
        f"than {margin} (one-sided p {p_value:.3g}, alpha {alpha})"
    )
    return MarginComparison(p_t, p_r, n_t, n_r, margin, alpha, p_value, worse, reason)
