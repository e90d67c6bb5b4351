"""Ship, keep the control, or continue: the rules, in the order they are applied.

1. A guardrail breach keeps the control: the treatment's failure rate or mean execution
   time is worse than tolerated, with the always-valid interval's lower end past the
   tolerance (so a noisy early look does not end an experiment).
2. The primary test crossed (always-valid p <= alpha): ship when the treatment's success
   rate is higher, keep the control when it is lower.
3. Both arms reached their planned size, or ``max_duration_h`` passed: keep the control,
   the treatment did not show the minimum effect it was sized for.
4. Otherwise continue, saying what is still missing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from caprank.experiments.assignment import CONTROL, TREATMENT
from caprank.experiments.readout import Analysis
from caprank.experiments.store import Experiment

SHIP, KEEP_CONTROL, CONTINUE = "ship", "keep_control", "continue"
DECISIONS = (SHIP, KEEP_CONTROL, CONTINUE)


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    final: bool  # ship / keep control end the experiment

    def to_dict(self) -> dict:
        return asdict(self)


def guardrail_breach(a: Analysis, exp: Experiment) -> str | None:
    """The first guardrail the treatment breaks, as a sentence; None when both hold (or
    while an arm has fewer than ``min_per_arm`` outcomes)."""
    if min(a.arms[CONTROL].n, a.arms[TREATMENT].n) < exp.min_per_arm:
        return None
    err = a.error_rate
    if err.ci_low > exp.max_error_rate_increase:
        return (
            f"failure rate {err.treatment:.4f} vs control {err.control:.4f}: increase "
            f"{err.diff:+.4f} (always-valid CI [{err.ci_low:+.4f}, {err.ci_high:+.4f}]) exceeds "
            f"max_error_rate_increase {exp.max_error_rate_increase}"
        )
    lat = a.latency
    allowed = exp.max_latency_increase * lat.control
    if lat.ci_low > allowed:
        return (
            f"mean execution time {lat.treatment:.1f} ms vs control {lat.control:.1f} ms: "
            f"increase {lat.diff:+.1f} ms (always-valid CI [{lat.ci_low:+.1f}, "
            f"{lat.ci_high:+.1f}]) exceeds max_latency_increase {exp.max_latency_increase:.0%}"
        )
    return None


def decide(a: Analysis, exp: Experiment) -> Decision:
    broken = guardrail_breach(a, exp)
    if broken is not None:
        return Decision(KEEP_CONTROL, f"guardrail: {broken}", True)
    p = a.primary
    summary = (
        f"success rate {p.treatment:.4f} vs {p.control:.4f}, difference {p.diff:+.4f} "
        f"(always-valid {1 - exp.alpha:.0%} CI [{p.ci_low:+.4f}, {p.ci_high:+.4f}], "
        f"always-valid p {p.p_value:.4g})"
    )
    if p.crossed_look is not None:
        if p.diff > 0:
            return Decision(SHIP, f"treatment is better: {summary}", True)
        return Decision(KEEP_CONTROL, f"treatment is worse: {summary}", True)
    n_c, n_t = a.arms[CONTROL].n, a.arms[TREATMENT].n
    if n_c >= exp.planned_n_control and n_t >= exp.planned_n_treatment:
        return Decision(
            KEEP_CONTROL,
            f"planned size reached ({n_c} / {n_t} outcomes) without an effect of "
            f"{exp.mde} at alpha {exp.alpha}: {summary}",
            True,
        )
    if a.elapsed_h >= exp.max_duration_h:
        return Decision(
            KEEP_CONTROL,
            f"max_duration_h {exp.max_duration_h} passed ({n_c} / {n_t} of the planned "
            f"{exp.planned_n_control} / {exp.planned_n_treatment} outcomes) without a "
            f"significant difference: {summary}",
            True,
        )
    return Decision(
        CONTINUE,
        f"no decision yet after {a.elapsed_h:.1f} h: {n_c} / {n_t} of the planned "
        f"{exp.planned_n_control} / {exp.planned_n_treatment} outcomes; {summary}",
        False,
    )
