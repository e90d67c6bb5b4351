"""Benchmark cell `ab`: A/B experiments on a simulator whose truth is known.

Each simulated experiment draws a pool of users, assigns them with the sticky hash
(``caprank.experiments.assignment``), and sends one outcome after another at a steady
hourly traffic sized so the planned sample is reached in about ``HOURS_TO_PLAN`` hours.
Outcomes are success / partial / failure with known rates and lognormal execution
times; an A/A experiment serves both arms the same truth, an A/B experiment gives the
treatment a success rate higher by exactly the configured minimum detectable effect.

Someone looks every hour: at each hour the real readout (``analyse`` over the event
table) and decision rules (``decide``) run, and the experiment ends at the first final
decision (ship, keep control) or at ``max_duration_h``. The cell reports:

- ``aa_false_positive_rate``: A/A experiments whose primary test crossed (issue 15 asks
  <= 5% with hourly peeking);
- ``power``: A/B experiments that ended with ``ship`` (asks >= 80% at the MDE);
- ``required_n_per_arm`` (``caprank.experiments.design``) against
  ``closed_form_n_per_arm``, the textbook formula written out here independently;
- for contrast, ``aa_naive_peeking_false_positive_rate``: the same A/A trajectories
  judged by a fixed-horizon z-test at every hourly look (what peeking does to it).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa
from scipy.stats import norm

from caprank.config import ExperimentsConfig
from caprank.experiments.analysis import proportion_diff
from caprank.experiments.assignment import TREATMENT, assign
from caprank.experiments.decision import SHIP, decide
from caprank.experiments.design import design
from caprank.experiments.readout import analyse
from caprank.experiments.store import Experiment

BASELINE = 0.6  # control success rate
FAILURE_SHARE = 0.5  # of the non-successes, the share that fail (the rest are partial)
HOURS_TO_PLAN = 48  # hourly traffic reaches the planned sample in about this many hours
USERS = 3000
SIMULATED_SPAN = 1.25  # hours simulated, as a multiple of HOURS_TO_PLAN
LATENCY_MU, LATENCY_SIGMA = math.log(800.0), 0.5  # execution time, lognormal in ms
T0 = 1_800_000_000.0


def closed_form_n(p1: float, p2: float, alpha: float, power: float) -> int:
    """Fleiss' two-proportion sample size per arm (equal arms, no continuity correction)."""
    pbar = (p1 + p2) / 2
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil((num / (p2 - p1)) ** 2)


def _experiment(eid: str, cfg: ExperimentsConfig, plan) -> Experiment:
    return Experiment(
        id=eid, control="v1", treatment="v2", share=cfg.share, unit="user", alpha=cfg.alpha,
        power=cfg.power, mde=cfg.mde, baseline_rate=BASELINE, baseline_source="simulator",
        max_duration_h=cfg.max_duration_h, look_interval_h=1.0, min_per_arm=cfg.min_per_arm,
        max_error_rate_increase=cfg.max_error_rate_increase,
        max_latency_increase=cfg.max_latency_increase,
        planned_n_control=plan.planned_n_control, planned_n_treatment=plan.planned_n_treatment,
        fixed_n_control=plan.fixed_n_control, started_at=T0,
    )  # fmt: skip


def _events(rng, exp: Experiment, lift: float, per_hour: float, hours: int) -> pa.Table:
    """``hours`` of outcomes at Poisson traffic; the treatment's success rate + ``lift``."""
    n = int(rng.poisson(per_hour * hours))
    seconds = np.sort(rng.uniform(0, hours * 3600.0, n)) + exp.started_at
    users = rng.integers(0, USERS, n)
    arm_of = np.array([assign(exp.id, f"user-{u}", exp.share) == TREATMENT for u in range(USERS)])
    treated = arm_of[users]
    p_success = np.where(treated, BASELINE + lift, BASELINE)
    u = rng.uniform(size=n)
    p_fail = (1 - p_success) * FAILURE_SHARE
    outcome = np.where(u < p_success, 0, np.where(u < p_success + p_fail, 1, 2))
    return pa.table(
        {
            "timestamp": pa.array((seconds * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
            "model_version": _strings(treated.astype(np.int8), [exp.control, exp.treatment]),
            "outcome": _strings(outcome.astype(np.int8), ["success", "failure", "partial"]),
            "execution_time_ms": rng.lognormal(LATENCY_MU, LATENCY_SIGMA, n),
        }
    )


def _strings(codes: np.ndarray, values: list[str]) -> pa.Array:
    """A string column from small integer codes (built in Arrow, not in Python)."""
    return pa.DictionaryArray.from_arrays(codes, values).cast(pa.string())


def _naive_crossed(events: pa.Table, exp: Experiment, hours: int) -> bool:
    """A fixed-horizon z-test at every hourly look (peeking without correction)."""
    ts = events["timestamp"].cast(pa.int64()).to_numpy() / 1e6
    treated = events["model_version"].to_numpy(zero_copy_only=False) == exp.treatment
    ok = events["outcome"].to_numpy(zero_copy_only=False) == "success"
    looks = exp.started_at + 3600.0 * np.arange(1, hours + 1)
    idx = np.searchsorted(ts, looks, "right")
    cum = lambda mask: np.concatenate([[0], np.cumsum(mask)])[idx]  # noqa: E731
    n_c, n_t = cum(~treated), cum(treated)
    s_c, s_t = cum(~treated & ok), cum(treated & ok)
    diff, var = proportion_diff(s_c, n_c, s_t, n_t)
    ready = (n_c >= exp.min_per_arm) & (n_t >= exp.min_per_arm)
    z = np.abs(diff) / np.sqrt(var)
    return bool(np.any(ready & (z > norm.ppf(1 - exp.alpha / 2))))


def _run_one(rng, eid: str, cfg: ExperimentsConfig, plan, lift: float) -> dict:
    exp = _experiment(eid, cfg, plan)
    per_hour = (plan.planned_n_control + plan.planned_n_treatment) / HOURS_TO_PLAN
    # traffic reaches the planned size near HOURS_TO_PLAN, which ends every experiment
    hours = min(math.ceil(cfg.max_duration_h), int(HOURS_TO_PLAN * SIMULATED_SPAN))
    events = _events(rng, exp, lift, per_hour, hours)
    start_us = int(exp.started_at * 1e6)
    hour_us = start_us + 3_600_000_000 * np.arange(1, hours + 1)
    ends = np.searchsorted(events["timestamp"].cast(pa.int64()).to_numpy(), hour_us, "right")
    for hour in range(1, hours + 1):  # someone looks every hour and acts on it
        seen = events.slice(0, int(ends[hour - 1]))  # analyse filters by time; only faster
        a = analyse(seen, exp, exp.started_at + 3600.0 * hour)
        d = decide(a, exp)
        if d.final:
            break
    else:
        raise RuntimeError(f"{eid}: no final decision in the {hours} simulated hours")
    return {
        "crossed": a.primary.crossed_look is not None,
        "action": d.action,
        "hour": hour,
        "guardrail": d.reason.startswith("guardrail"),
        "naive_crossed": _naive_crossed(events, exp, hours) if lift == 0 else False,
    }


def run_ab(seed: int, n_experiments: int = 200) -> dict:
    """``n_experiments`` A/A and as many A/B experiments at the MDE, hourly peeks."""
    start = time.perf_counter()
    cfg = ExperimentsConfig()
    plan = design(BASELINE, cfg.mde, cfg.alpha, cfg.power, cfg.share)
    rng = np.random.default_rng(seed)
    aa = [_run_one(rng, f"aa-{seed}-{i}", cfg, plan, 0.0) for i in range(n_experiments)]
    ab = [_run_one(rng, f"ab-{seed}-{i}", cfg, plan, cfg.mde) for i in range(n_experiments)]
    closed = closed_form_n(BASELINE, BASELINE + cfg.mde, cfg.alpha, cfg.power)
    fpr = sum(r["crossed"] for r in aa) / n_experiments
    power = sum(r["action"] == SHIP for r in ab) / n_experiments
    return {
        "n_experiments": n_experiments,
        "baseline_rate": BASELINE,
        "mde": cfg.mde,
        "alpha": cfg.alpha,
        "target_power": cfg.power,
        "aa_false_positive_rate": fpr,
        "aa_guardrail_stop_rate": sum(r["guardrail"] for r in aa) / n_experiments,
        "aa_naive_peeking_false_positive_rate": sum(r["naive_crossed"] for r in aa) / n_experiments,
        "power": power,
        "ab_median_hours_to_ship": float(
            np.median([r["hour"] for r in ab if r["action"] == SHIP] or [np.nan])
        ),
        "required_n_per_arm": plan.fixed_n_control,
        "closed_form_n_per_arm": closed,
        "planned_n_per_arm_sequential": plan.planned_n_control,
        "hours_to_planned_n": HOURS_TO_PLAN,
        "seconds": round(time.perf_counter() - start, 1),
        "met": {
            "aa_false_positive_rate": fpr <= 0.05,
            "power": power >= 0.80,
            "n_experiments": n_experiments >= 200,
            "required_n_matches_closed_form": plan.fixed_n_control == closed,
        },
    }
