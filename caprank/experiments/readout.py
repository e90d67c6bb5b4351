"""From the feedback log to an experiment's analysis: per-arm counts, rates, comparisons.

An outcome belongs to an arm by the model version that served it (``model_version`` in
the interaction log), from the experiment's start to its stop (or now). The primary
metric is the success rate (outcome ``success``); the guardrails are the failure rate
and the mean execution time. The sequential test is evaluated at every
``look_interval_h`` since the start and at the latest event, from the cumulative counts
at each of those instants, so its p-value does not depend on when anyone asked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import chdtrc

from caprank.experiments.analysis import Comparison, compare_means, compare_proportions
from caprank.experiments.assignment import CONTROL, TREATMENT
from caprank.experiments.store import Experiment

MIN_LATENCY_TAU = 0.05  # relative: the latency test's mixture scale when no rise is tolerated


@dataclass(frozen=True)
class ArmSummary:
    arm: str
    version: str
    n: int
    successes: int
    failures: int
    success_rate: float
    failure_rate: float
    latency_mean_ms: float
    latency_var: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Analysis:
    experiment_id: str
    at: float
    elapsed_h: float
    arms: dict[str, ArmSummary]
    primary: Comparison
    error_rate: Comparison
    latency: Comparison
    sample_ratio_p: float  # chi-square of the arm sizes against the share

    def to_dict(self) -> dict:
        out = asdict(self)
        out["arms"] = {k: v.to_dict() for k, v in self.arms.items()}
        return out


def _column(table: pa.Table, name: str, value: str) -> np.ndarray:
    return pc.fill_null(pc.equal(table[name], value), False).to_numpy(zero_copy_only=False)


def _arm(cols: dict[str, np.ndarray], arm: str, version: str, in_arm: np.ndarray):
    """An arm's summary, its outcome times (sorted) and success flags in that order."""
    seconds = cols["seconds"][in_arm]
    order = np.argsort(seconds, kind="stable")
    success, failure = cols["success"][in_arm][order], cols["failure"][in_arm][order]
    ms = cols["ms"][in_arm]
    n = int(in_arm.sum())
    summary = ArmSummary(
        arm=arm,
        version=version,
        n=n,
        successes=int(success.sum()),
        failures=int(failure.sum()),
        success_rate=float(success.mean()) if n else 0.0,
        failure_rate=float(failure.mean()) if n else 0.0,
        latency_mean_ms=float(ms.mean()) if n else 0.0,
        latency_var=float(ms.var(ddof=1)) if n > 1 else 0.0,
    )
    return summary, seconds[order], success


def look_times(start: float, end: float, interval_h: float) -> np.ndarray:
    """Every ``interval_h`` after ``start`` up to ``end``, and ``end`` itself."""
    step = interval_h * 3600.0
    looks = start + step * np.arange(1, int((end - start) // step) + 1)
    return np.append(looks[looks < end], end)


def analyse(events: pa.Table, exp: Experiment, now: float) -> Analysis:
    """The experiment's state as of ``now`` (or its stop) from the interaction log."""
    end = min(now, exp.stopped_at) if exp.stopped_at is not None else now
    micros = pc.cast(events["timestamp"], pa.int64()).to_numpy(zero_copy_only=False)
    window = (micros >= int(exp.started_at * 1e6)) & (micros <= int(end * 1e6))
    cols = {
        "seconds": micros / 1e6,
        "success": _column(events, "outcome", "success"),
        "failure": _column(events, "outcome", "failure"),
        "ms": events["execution_time_ms"].to_numpy(zero_copy_only=False),
    }
    in_c = window & _column(events, "model_version", exp.control)
    in_t = window & _column(events, "model_version", exp.treatment)
    ctrl, t_c, s_c = _arm(cols, CONTROL, exp.control, in_c)
    treat, t_t, s_t = _arm(cols, TREATMENT, exp.treatment, in_t)
    looks = look_times(exp.started_at, end, exp.look_interval_h)
    n_c, n_t = np.searchsorted(t_c, looks, "right"), np.searchsorted(t_t, looks, "right")
    cum_c, cum_t = np.concatenate([[0], np.cumsum(s_c)]), np.concatenate([[0], np.cumsum(s_t)])
    primary = compare_proportions(
        "success_rate", cum_c[n_c], n_c, cum_t[n_t], n_t,
        tau=exp.mde, alpha=exp.alpha, min_per_arm=exp.min_per_arm,
    )  # fmt: skip
    errors = compare_proportions(
        "failure_rate", ctrl.failures, ctrl.n, treat.failures, treat.n,
        tau=exp.mde, alpha=exp.alpha, min_per_arm=exp.min_per_arm,
    )  # fmt: skip
    latency = compare_means(
        "latency_mean_ms",
        (ctrl.latency_mean_ms, ctrl.latency_var, ctrl.n),
        (treat.latency_mean_ms, treat.latency_var, treat.n),
        tau=max(ctrl.latency_mean_ms * max(exp.max_latency_increase, MIN_LATENCY_TAU), 1e-6),
        alpha=exp.alpha,
        min_per_arm=exp.min_per_arm,
    )
    total = ctrl.n + treat.n
    srm = 1.0
    if total:
        e_c, e_t = total * (1 - exp.share), total * exp.share
        stat = (ctrl.n - e_c) ** 2 / e_c + (treat.n - e_t) ** 2 / e_t
        srm = float(chdtrc(1, stat))  # chi-square test of the split, one degree of freedom
    return Analysis(
        experiment_id=exp.id,
        at=end,
        elapsed_h=(end - exp.started_at) / 3600.0,
        arms={CONTROL: ctrl, TREATMENT: treat},
        primary=primary,
        error_rate=errors,
        latency=latency,
        sample_ratio_p=srm,
    )
