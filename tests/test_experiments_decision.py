"""Decision rules on a feedback log: ship, keep control (worse, guardrail, no effect in
time or size), continue; the always-valid p-value does not depend on when one asks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from experiment_events import outcome_table, rates, write_outcomes

from caprank.config import CaprankConfig
from caprank.experiments import ExperimentError, start, status
from caprank.experiments.decision import CONTINUE, KEEP_CONTROL, SHIP

T0 = 1_800_000_000.0
HOUR = 3600.0


def _cfg(tmp_path, **experiments) -> CaprankConfig:
    return CaprankConfig.model_validate(
        {"paths": {"home": str(tmp_path)}, "experiments": {"mde": 0.1, **experiments}}
    )


def _log(cfg, rng, version, n, p_success, hours=2.0, ms=800.0, p_failure=None, at=T0):
    seconds = at + np.sort(rng.uniform(0, hours * HOUR, n))
    p_failure = (1 - p_success) / 2 if p_failure is None else p_failure
    table = outcome_table(version, rates(rng, n, p_success, p_failure), seconds, ms)
    write_outcomes(cfg.feedback_dir(), version, table)


def test_better_treatment_ships_with_the_reason(tmp_path):
    cfg, rng = _cfg(tmp_path), np.random.default_rng(1)
    _log(cfg, rng, "v1", 1500, 0.50)
    _log(cfg, rng, "v2", 1500, 0.62)
    exp = start(cfg, "lift", "v1", "v2", baseline=0.5, now=T0)
    s = status(cfg, "lift", now=T0 + 3 * HOUR)
    assert s.decision.action == SHIP and "treatment is better" in s.decision.reason
    assert s.analysis.arms["control"].n == 1500 and s.analysis.primary.p_value <= exp.alpha
    assert s.analysis.primary.ci_low > 0 and s.analysis.primary.looks == 3
    assert "Decision: ship" in s.report_md.read_text() and "<table>" in s.report_html.read_text()
    prom = s.metrics_file.read_text()
    assert 'caprank_experiment_decision{decision="ship",experiment="lift"} 1.0' in prom
    record = json.loads((tmp_path / "experiments" / "lift" / "experiment.json").read_text())
    assert record["decision"]["action"] == SHIP


def test_worse_treatment_keeps_control(tmp_path):
    cfg, rng = _cfg(tmp_path), np.random.default_rng(2)
    _log(cfg, rng, "v1", 1500, 0.62, p_failure=0.1)  # the same failure rate: no guardrail
    _log(cfg, rng, "v2", 1500, 0.50, p_failure=0.1)
    start(cfg, "drop", "v1", "v2", baseline=0.5, now=T0)
    d = status(cfg, "drop", now=T0 + 3 * HOUR).decision
    assert d.action == KEEP_CONTROL and "treatment is worse" in d.reason


def test_slower_treatment_breaks_the_latency_guardrail(tmp_path):
    cfg, rng = _cfg(tmp_path), np.random.default_rng(3)
    _log(cfg, rng, "v1", 800, 0.6, ms=rng.lognormal(np.log(800), 0.3, 800))
    _log(cfg, rng, "v2", 800, 0.6, ms=rng.lognormal(np.log(1200), 0.3, 800))
    start(cfg, "slow", "v1", "v2", baseline=0.5, now=T0)
    d = status(cfg, "slow", now=T0 + 3 * HOUR).decision
    assert d.action == KEEP_CONTROL and d.reason.startswith("guardrail: mean execution time")


def test_more_failures_break_the_error_guardrail(tmp_path):
    cfg, rng = _cfg(tmp_path), np.random.default_rng(4)
    _log(cfg, rng, "v1", 1500, 0.6, p_failure=0.05)
    _log(cfg, rng, "v2", 1500, 0.6, p_failure=0.30)
    start(cfg, "fail", "v1", "v2", baseline=0.5, now=T0)
    d = status(cfg, "fail", now=T0 + 3 * HOUR).decision
    assert d.action == KEEP_CONTROL and d.reason.startswith("guardrail: failure rate")


def test_undecided_experiment_continues_then_keeps_control_at_max_duration(tmp_path):
    cfg, rng = _cfg(tmp_path, max_duration_h=24.0), np.random.default_rng(5)
    _log(cfg, rng, "v1", 150, 0.6)
    _log(cfg, rng, "v2", 150, 0.6)
    start(cfg, "flat", "v1", "v2", baseline=0.5, now=T0)
    early = status(cfg, "flat", now=T0 + 3 * HOUR).decision
    assert early.action == CONTINUE and "of the planned" in early.reason
    late = status(cfg, "flat", now=T0 + 25 * HOUR).decision
    assert late.action == KEEP_CONTROL and "max_duration_h 24.0 passed" in late.reason


def test_planned_size_without_an_effect_keeps_control(tmp_path):
    cfg, rng = _cfg(tmp_path, mde=0.2), np.random.default_rng(6)
    exp = start(cfg, "enough", "v1", "v2", baseline=0.5, now=T0)
    n = exp.planned_n_control + 20
    _log(cfg, rng, "v1", n, 0.55)
    _log(cfg, rng, "v2", n, 0.55)
    d = status(cfg, "enough", now=T0 + 3 * HOUR).decision
    assert d.action == KEEP_CONTROL and "planned size reached" in d.reason


def test_p_value_is_the_same_whenever_one_asks(tmp_path):
    cfg, rng = _cfg(tmp_path), np.random.default_rng(7)
    _log(cfg, rng, "v1", 1200, 0.55, hours=6)
    _log(cfg, rng, "v2", 1200, 0.58, hours=6)
    start(cfg, "same", "v1", "v2", baseline=0.5, now=T0)
    first = status(cfg, "same", now=T0 + 7 * HOUR).analysis.primary
    for _ in range(3):  # asking again adds no look: looks are fixed hours since the start
        again = status(cfg, "same", now=T0 + 7 * HOUR).analysis.primary
    assert again == first and first.looks == 7


def test_sizing_from_the_control_log_and_bad_starts(tmp_path):
    cfg, rng = _cfg(tmp_path, baseline_min_events=100), np.random.default_rng(8)
    _log(cfg, rng, "v1", 400, 0.7, at=T0 - 2 * HOUR, hours=1)  # before the start: never counted
    exp = start(cfg, "sized", "v1", "v2", now=T0)
    assert exp.baseline_rate == pytest.approx(0.7, abs=0.06) and "logged" in exp.baseline_source
    assert status(cfg, "sized", now=T0 + HOUR).analysis.arms["control"].n == 0
    other = start(cfg, "default", "v3", "v2", now=T0)
    assert other.baseline_rate == 0.5 and "experiments.baseline_rate" in other.baseline_source
    with pytest.raises(ExperimentError, match="exists already"):
        start(cfg, "sized", "v1", "v2", now=T0)
    with pytest.raises(ExperimentError, match="two different"):
        start(cfg, "same-arms", "v1", "v1", now=T0)
    with pytest.raises(ExperimentError, match="must match"):
        start(cfg, "Bad Id", "v1", "v2", now=T0)
    with pytest.raises(ExperimentError, match="cannot size"):
        start(cfg, "too-high", "v1", "v2", baseline=0.95, now=T0)
    with pytest.raises(ExperimentError, match="known: default, sized"):
        status(cfg, "nope")
