"""The deploy canary's quality guardrail uses the experiments' always-valid comparison of
the canary's success rate with the primary's."""

from __future__ import annotations

from experiment_events import outcome_table, write_outcomes

from caprank.config import CanaryConfig
from caprank.deploy.backend import CanaryMetrics
from caprank.deploy.guardrails import FeedbackLogQuality, breach
from caprank.experiments.canary import quality_breach

T0 = 1_800_000_000.0


def test_worse_canary_breaches_equal_or_thin_evidence_does_not():
    cfg = CanaryConfig(min_feedback=20)
    worse = quality_breach((120, 300), (210, 300), cfg)
    assert worse is not None and "below the primary's 0.700" in worse
    assert quality_breach((205, 300), (210, 300), cfg) is None  # no significant drop
    assert quality_breach((300, 300), (150, 300), cfg) is None  # better is no breach
    assert quality_breach((2, 10), (210, 300), cfg) is None  # too few canary outcomes
    assert quality_breach((120, 300), (210, 300), CanaryConfig(quality_alpha=0.0)) is None


def test_breach_judges_the_comparison_from_canary_metrics():
    cfg = CanaryConfig(min_feedback=20, max_success_rate_drop=1.0)  # only the test judges
    drop = CanaryMetrics(feedback=300, success_rate=0.4, baseline_feedback=300,
                         baseline_success_rate=0.7)  # fmt: skip
    assert "below the primary's" in breach(drop, cfg, final=False)
    same = CanaryMetrics(feedback=300, success_rate=0.69, baseline_feedback=300,
                         baseline_success_rate=0.7)  # fmt: skip
    assert breach(same, cfg, final=False) is None


def test_feedback_log_counts_the_primary_as_every_other_version(tmp_path):
    write_outcomes(tmp_path, "v2", outcome_table("v2", ["success", "failure"] * 3, T0 + 10))
    write_outcomes(tmp_path, "v1", outcome_table("v1", ["success"] * 5 + ["partial"], T0 + 10))
    write_outcomes(tmp_path, "v0", outcome_table("v0", ["success"] * 4, T0 - 10))  # before
    quality = FeedbackLogQuality(tmp_path)
    assert quality.success_counts("v2", T0) == (3, 6)
    assert quality.baseline_counts("v2", T0) == (5, 6)
