"""The deploy canary's quality guardrail, on the experiments' test.

During a canary the controller polls the feedback log every ``poll_s``; each poll is a
look at the cumulative outcomes of the canary and of the primary (every other version)
since observation began. The canary breaks the guardrail when the mSPRT (``tau`` =
``canary.quality_mde``) says its success rate is lower than the primary's at level
``canary.quality_alpha``: always valid, so polling as often as it does keeps the false
rollback rate at most that level. Each arm needs ``canary.min_feedback`` outcomes first.
"""

from __future__ import annotations

from caprank.config import CanaryConfig
from caprank.experiments.analysis import compare_proportions


def quality_breach(
    canary: tuple[int, int], primary: tuple[int, int], cfg: CanaryConfig
) -> str | None:
    """A sentence when the canary's (successes, outcomes) are significantly worse than the
    primary's; None when they are not, or there is too little evidence."""
    (s_c, n_c), (s_p, n_p) = canary, primary
    if cfg.quality_alpha <= 0.0 or min(n_c, n_p) < max(cfg.min_feedback, 1):
        return None
    c = compare_proportions(
        "success_rate", s_p, n_p, s_c, n_c,
        tau=cfg.quality_mde, alpha=cfg.quality_alpha, min_per_arm=max(cfg.min_feedback, 1),
    )  # fmt: skip
    if c.p_value > cfg.quality_alpha or c.diff >= 0:
        return None
    return (
        f"success rate {c.treatment:.3f} over {n_c} outcomes is below the primary's "
        f"{c.control:.3f} over {n_p} (difference {c.diff:+.3f}, always-valid CI "
        f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}], p {c.p_value:.3g} <= quality_alpha "
        f"{cfg.quality_alpha})"
    )


def metrics_breach(metrics, cfg: CanaryConfig) -> str | None:
    """``quality_breach`` on a ``CanaryMetrics`` (its canary and primary outcome counts)."""
    if metrics.success_rate is None or metrics.baseline_success_rate is None:
        return None
    n_c, n_p = metrics.feedback or 0, metrics.baseline_feedback or 0
    canary = (round(metrics.success_rate * n_c), n_c)
    primary = (round(metrics.baseline_success_rate * n_p), n_p)
    return quality_breach(canary, primary, cfg)
