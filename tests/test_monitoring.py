"""Monitoring on simulated logs: no false alarm in 20 drift-free seeds (<= 5% allowed),
injected drifts (intent mix, tool reliability, new-capability launch) detected, Evidently
and the scipy fast path agree, should_train policy."""

from __future__ import annotations

import dataclasses
import json

import pytest

from caprank.config import CaprankConfig
from caprank.data.simulate import simulate
from caprank.data.synth import synthesize
from caprank.monitoring import judge_drift, monitor
from tests.conftest import TINY

# The suite's tiny catalog and traffic; the seed varies per test (``_cfg``).
SMALL = {
    "data": {
        "synth": {
            **TINY["data"]["synth"],
            # Fixed: the simulator draws each period's events from its start date, so a
            # start relative to today made the false-alarm count change from day to day.
            "start_date": "2026-11-20",
        },
        "simulate": {**TINY["data"]["simulate"]},
    },
    # the served-traffic checks load a text encoder and a model: tests/test_monitoring_served.py
    "monitoring": {"reference_days": 6, "current_days": 4, "served_checks": False},
}


def _cfg(seed: int, **simulate_overrides) -> CaprankConfig:
    data = {**SMALL["data"], "seed": seed}
    data["simulate"] = {**SMALL["data"]["simulate"], **simulate_overrides}
    return CaprankConfig.model_validate({**SMALL, "data": data})


@pytest.fixture(scope="module")
def catalog():
    return synthesize(_cfg(0))


def _logs(catalog, cfg):
    ds = dataclasses.replace(catalog)
    ds.interactions = simulate(ds, cfg)
    return ds


def test_no_drift_false_alarm_rate(catalog):
    alarms = []
    for seed in range(20):
        drift, bounds, why = judge_drift(_logs(catalog, _cfg(seed)), _cfg(seed))
        assert bounds.reference_events >= 200 and bounds.current_events >= 200
        assert drift.checks["launch_demand"].details["launched"]  # ordinary launches
        if drift.drifted:
            alarms.append((seed, why))
    assert len(alarms) <= 1, alarms  # <= 5% of 20


def test_intent_mix_shift_is_detected(catalog):
    for seed in range(100, 103):
        cfg = _cfg(seed, drift_intent_mix_day=6)
        drift, _, _ = judge_drift(_logs(catalog, cfg), cfg)
        cols = drift.checks["feature_drift"].details["drifted_columns"]
        assert drift.retrain and any(c.startswith("category.") for c in cols), cols


def test_tool_reliability_drop_is_detected(catalog):
    """The busiest tool's reliability x 0.3 from day 6: its success share drops."""
    for seed in range(100, 103):
        cfg = _cfg(seed, drift_tool_reliability_day=6, events_per_day=1500)
        ds = _logs(catalog, cfg)
        drift, _, _ = judge_drift(ds, cfg)
        from caprank.data.simulate import simulation_metadata

        tool = simulation_metadata(ds.interactions)["drift"]["tool_reliability"]["tool_id"]
        cols = drift.checks["feature_drift"].details["drifted_columns"]
        assert f"tool_success.{tool}" in cols, (tool, cols)


def test_new_capability_launch_is_detected(catalog):
    """Launches with 4x demand from day 6; the catalog launches the same capabilities
    (at 1x) in the drift-free seeds above, so only the boost can fire the check. Its
    power at this traffic is modest (34 of 60 seeds over three start dates, against
    about 3 of 60 false alarms of this check without the boost): at least 5 of 12."""
    from caprank.data.simulate import simulation_metadata

    fired = []
    for seed in range(100, 112):
        cfg = _cfg(seed, drift_new_capabilities_day=6)
        ds = _logs(catalog, cfg)
        drift, _, _ = judge_drift(ds, cfg)
        check = drift.checks["launch_demand"]
        boosted = simulation_metadata(ds.interactions)["drift"]["new_capabilities"]
        assert check.details["launched"] == sorted(boosted["capability_ids"])
        fired.append(check.drifted and drift.retrain)
    assert sum(fired) >= 5, fired


def test_launch_demand_needs_launches(catalog):
    from caprank.monitoring.launches import launch_demand
    from caprank.monitoring.windows import split_windows_with_events

    cfg = _cfg(3)
    ds = _logs(catalog, cfg)
    _, _, bounds, events = split_windows_with_events(ds, cfg.monitoring)
    check = launch_demand(ds, events, bounds.current_start, bounds.end, cfg.monitoring)
    assert check is not None and 0.0 < check.value <= 1.0
    # a window that ends before any launch has nothing to compare
    early = bounds.current_start - (bounds.end - bounds.current_start)
    assert (
        launch_demand(
            ds, events, early - (bounds.end - bounds.current_start), early, cfg.monitoring
        )
        is None
    )


def test_evidently_report_agrees_with_fast_path(catalog):
    cfg = _cfg(100, drift_intent_mix_day=6)
    ds = _logs(catalog, cfg)
    fast, _, _ = judge_drift(ds, cfg)
    full, _, _ = judge_drift(ds, cfg, html=True)
    a = fast.checks["feature_drift"].details["p_values"]
    b = full.checks["feature_drift"].details["p_values"]
    assert a.keys() == b.keys()
    for col in a:
        assert a[col] == pytest.approx(b[col], rel=1e-6, abs=1e-12), col
    assert full.html is not None and "category." in full.html


def test_should_train_policy(catalog):
    cfg = _cfg(3)
    ds = _logs(catalog, cfg)
    assert monitor(ds, cfg).should_train  # default policy: always
    quiet = monitor(ds, cfg, policy="on_drift", production_exists=True)
    assert not quiet.should_train and quiet.reason == "no drift"
    first = monitor(ds, cfg, policy="on_drift", production_exists=False)
    assert first.should_train and "no production model" in first.reason
    drifted_cfg = _cfg(100, drift_intent_mix_day=6)
    drifted = monitor(
        _logs(catalog, drifted_cfg), drifted_cfg, policy="on_drift", production_exists=True
    )
    assert drifted.should_train and drifted.reason.startswith("drift")
    assert "should_train: true" in drifted.to_markdown()
    off = monitor(_logs(catalog, drifted_cfg), drifted_cfg, policy="never", production_exists=True)
    assert off.drift.drifted and not off.should_train and "retrain policy never" in off.reason
    bootstrap = monitor(ds, cfg, policy="never", production_exists=False)
    assert bootstrap.should_train and "no production model" in bootstrap.reason


def test_too_few_events_are_not_judged(catalog):
    cfg = _cfg(3)
    cfg.monitoring.min_window_events = 10_000
    result = monitor(_logs(catalog, cfg), cfg, policy="on_drift", production_exists=True)
    assert result.drift is None and not result.should_train
    assert "too few events" in result.reason


def test_component_and_cli(catalog, tmp_path):
    from kfp.dsl import Dataset, Markdown, Metrics

    from caprank.cli import main
    from caprank.config import dump_yaml
    from caprank.data.dataset import write_dataset
    from pipelines.training import make_components

    cfg = _cfg(100, drift_intent_mix_day=6)
    cfg.paths.home = tmp_path / "home"
    data = write_dataset(_logs(catalog, cfg), tmp_path / "data")
    (tmp_path / "features").mkdir()

    def art(cls, name):
        return cls(name=name, uri=str(tmp_path / name), metadata={})

    metrics, report = art(Metrics, "m.json"), art(Dataset, "drift")
    out = make_components(cfg).monitor.python_func(
        dataset=art(Dataset, "data"),
        features=art(Dataset, "features"),
        config_yaml=dump_yaml(cfg),
        retrain_policy="on_drift",
        summary=art(Markdown, "monitor.md"),
        metrics=metrics,
        drift_report=report,
    )
    assert out is True and metrics.metadata["drifted"] == 1.0
    assert (tmp_path / "drift" / "drift_report.html").is_file()
    # what the evaluate stage reads back: the same verdict, checks and Evidently page
    from caprank.monitoring import read_drift_report

    saved = json.loads((tmp_path / "drift" / "monitor.json").read_text())
    drift = read_drift_report(tmp_path / "drift")
    assert drift is not None and drift.drifted and drift.html is not None
    assert drift.to_dict() == saved["drift"]
    assert read_drift_report({"drift": None}) is None
    assert "should_train: true" in (tmp_path / "monitor.md").read_text()

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(dump_yaml(cfg))
    assert main(["--config", str(cfg_file), "monitor", "--data", str(data)]) == 0
