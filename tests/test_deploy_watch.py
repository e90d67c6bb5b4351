"""The watch after a promotion and the blue-green strategy, on the FAKE KServe API
(tests/fake_kserve.py): what the controller patches, and when it goes back."""

from __future__ import annotations

import pytest
from fake_kserve import FakeCluster, Scenario, inference_service

from caprank.config import CanaryConfig, WatchConfig
from caprank.deploy import run_rollout
from caprank.deploy.guardrails import PrometheusClient
from caprank.deploy.kserve import STATE_ANNOTATION, KServeBackend, canary_predictor_name
from caprank.deploy.state import RolloutState
from caprank.deploy.watch import watch_applies

NS, NAME = "caprank", "caprank-ranker"
OLD, NEW = "s3://models/ranker/v1", "s3://models/ranker/v2"
T0 = 1_800_000_000.0
GOOD = {"requests": 500.0, "error_rate": 0.001, "p99_latency_ms": 40.0}


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class Counts:
    """A quality source with fixed (successes, events) per version; records its calls."""

    def __init__(self, counts: dict[str, tuple[int, int]]):
        self.counts = counts
        self.asked: list[tuple[str, float]] = []

    def success_counts(self, version: str, since: float) -> tuple[int, int]:
        self.asked.append((version, since))
        return self.counts.get(version, (0, 0))

    def baseline_counts(self, version: str, since: float) -> tuple[int, int]:
        others = [n for v, n in self.counts.items() if v != version]
        return sum(s for s, _ in others), sum(e for _, e in others)


def cfg_with(**watch) -> CanaryConfig:
    """The canary window judges traffic only (its quality checks off), so what these tests
    see is the watch's own comparison."""
    return CanaryConfig(
        window_s=60.0, poll_s=10.0, ready_timeout_s=100.0, min_requests=100,
        max_success_rate_drop=1.0, quality_alpha=0.0, allow_unmeasured=["success_rate"],
        watch=WatchConfig(**{"period_s": 120.0, "min_feedback": 50, **watch}),
    )  # fmt: skip


def roll(c: FakeCluster, cfg: CanaryConfig, quality, hooks: list, **kw):
    clock = Clock()
    be = KServeBackend(c.api(), NS, NAME, cfg, PrometheusClient(c.url))
    result = run_rollout(
        be, NEW, "v2", cfg, quality=quality, previous_version="v1",
        on_promote=lambda s: hooks.append(("promote", s.model_version)),
        on_rollback=lambda s: hooks.append(("restore", s.previous_version)),
        now=clock.now, sleep=clock.sleep, **kw,
    )  # fmt: skip
    state = RolloutState.from_json(c.obj["metadata"]["annotations"][STATE_ANNOTATION], "t")
    return result, state


WORSE = {"v2": (300, 1900), "v1": (40, 100)}  # 15.8% against 40%
BETTER = {"v2": (800, 1900), "v1": (40, 100)}  # 42% against 40%


def test_watch_rolls_back_a_worse_model_and_restores_the_alias():
    hooks: list = []
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=GOOD)) as c:
        result, state = roll(c, cfg_with(), Counts(WORSE), hooks)
        assert result.outcome == "rolled_back"
        assert result.reason.startswith("watch: success rate 0.1579")
        assert hooks == [("promote", "v2"), ("restore", "v1")]
        assert c.spec_patches == [
            {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": NEW}}},
            {"predictor": {"canaryTrafficPercent": 90}},  # the watch: 10% held back
            {"predictor": {"canaryTrafficPercent": 0}},  # back at once
            {"predictor": {"model": {"storageUri": OLD}}},
            {"predictor": {"canaryTrafficPercent": None}},
        ]
        assert c.obj["spec"]["predictor"]["model"]["storageUri"] == OLD
    assert state.phase == "rolled_back" and state.hook_done and state.restored and state.finished
    assert state.watch["worse"] and state.watch["mode"] == "holdback"
    assert state.rollback_started_at - state.watch_started_at == pytest.approx(120.0)


def test_watch_keeps_a_better_model():
    hooks: list = []
    quality = Counts(BETTER)
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=GOOD)) as c:
        result, state = roll(c, cfg_with(), quality, hooks)
        assert result.outcome == "promoted", result.reason
        assert hooks == [("promote", "v2")]  # the alias moved once, at the watch's start
        assert c.spec_patches[1:] == [
            {"predictor": {"canaryTrafficPercent": 90}},
            {"predictor": {"canaryTrafficPercent": None, "model": {"storageUri": NEW}}},
        ]
    assert not state.watch["worse"] and "not shown worse" in state.reason
    # both arms counted over the watch period, not the canary's
    assert ("v1", state.watch_started_at) in quality.asked
    assert ("v2", state.watch_started_at) in quality.asked


def test_watch_standard_mode_shifts_the_canary_entry_then_drops_it():
    cfg = cfg_with(holdback_percent=20)
    with FakeCluster(inference_service(NAME, NS, OLD, "Standard"), Scenario(prometheus=GOOD)) as c:
        result, _ = roll(c, cfg, Counts(WORSE), [])
        assert result.outcome == "rolled_back"
        shifted = c.spec_patches[1]["canary"]
        assert [e["trafficPercent"] for e in shifted] == [80]
        assert shifted[0]["predictor"]["name"] == canary_predictor_name(cfg, NEW)
        assert c.rejected == []
        assert "canary" not in c.obj["spec"]
        assert c.obj["spec"]["predictor"]["model"]["storageUri"] == OLD


def test_watch_without_enough_feedback_keeps_the_promotion_and_says_so():
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=GOOD)) as c:
        result, state = roll(c, cfg_with(), Counts({"v2": (1, 10), "v1": (9, 10)}), [])
    assert result.outcome == "promoted"
    assert "not judged: too little feedback" in state.reason and state.watch["p_value"] is None


def test_watch_guardrail_breach_rolls_back_before_the_end():
    cfg = cfg_with(period_s=600.0)
    hooks: list = []
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=GOOD)) as c:
        clock = Clock()
        be = KServeBackend(c.api(), NS, NAME, cfg, PrometheusClient(c.url))

        def sleep(s):  # the error rate jumps once the watch has begun
            clock.sleep(s)
            if c.obj["spec"]["predictor"].get("canaryTrafficPercent") == 90:
                c.scenario.prometheus = {**GOOD, "error_rate": 0.3}

        result = run_rollout(be, NEW, "v2", cfg, quality=Counts(BETTER), previous_version="v1",
                             on_rollback=lambda s: hooks.append(s.previous_version),
                             on_promote=lambda s: None, now=clock.now, sleep=sleep)  # fmt: skip
    assert result.outcome == "rolled_back" and result.reason.startswith("watch: error rate")
    assert hooks == ["v1"]
    assert result.state.rollback_started_at - result.state.watch_started_at < 600.0


def test_shadow_watch_compares_with_the_previous_versions_recent_feedback():
    quality = Counts(WORSE)
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=GOOD)) as c:
        result, state = roll(c, cfg_with(mode="shadow"), quality, [])
        assert c.spec_patches[1] == {"predictor": {"canaryTrafficPercent": 100}}
    assert result.outcome == "rolled_back"
    assert state.watch["reference_counts"] == [40, 100]
    assert ("v1", state.watch_started_at - 120.0) in quality.asked


def test_watch_needs_quality_and_a_previous_version():
    state = RolloutState(NEW, "v2", OLD, 10, "serverless", "observing", T0,
                         previous_version="v1")  # fmt: skip
    cfg = cfg_with()
    assert watch_applies(state, cfg, Counts({}))
    assert not watch_applies(state, cfg, None)
    assert not watch_applies(state, cfg_with(period_s=0.0), Counts({}))
    from dataclasses import replace

    assert not watch_applies(replace(state, previous_version=None), cfg, Counts({}))
    assert not watch_applies(replace(state, initial=True), cfg, Counts({}))


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_blue_green_warms_with_no_traffic_then_switches_at_once(mode):
    cfg = cfg_with(period_s=0.0).model_copy(update={"strategy": "blue_green"})
    with FakeCluster(inference_service(NAME, NS, OLD, mode), Scenario(prometheus=GOOD)) as c:
        result, state = roll(c, cfg, None, [])
        patches = c.spec_patches
        assert result.outcome == "promoted" and c.rejected == []
        if mode == "Knative":
            assert patches == [
                {"predictor": {"canaryTrafficPercent": 0, "model": {"storageUri": NEW}}},
                {"predictor": {"canaryTrafficPercent": 100}},
                {"predictor": {"canaryTrafficPercent": None, "model": {"storageUri": NEW}}},
            ]
        else:
            assert patches[0]["canary"][0]["trafficPercent"] == 0
            assert patches[1]["canary"][0]["trafficPercent"] == 100
            assert "canary" not in c.obj["spec"]
        assert c.obj["spec"]["predictor"]["model"]["storageUri"] == NEW
    assert state.strategy == "blue_green" and state.traffic_percent == 100


def test_blue_green_switches_back_on_a_guardrail_breach():
    cfg = cfg_with(period_s=0.0).model_copy(update={"strategy": "blue_green"})
    bad = {**GOOD, "p99_latency_ms": 900.0}
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=bad)) as c:
        result, _ = roll(c, cfg, None, [])
        assert result.outcome == "rolled_back" and "p99 latency" in result.reason
        assert c.spec_patches[:3] == [
            {"predictor": {"canaryTrafficPercent": 0, "model": {"storageUri": NEW}}},
            {"predictor": {"canaryTrafficPercent": 100}},  # the switch
            {"predictor": {"canaryTrafficPercent": 0}},  # and back, before any redeploy
        ]
        assert c.obj["spec"]["predictor"]["model"]["storageUri"] == OLD


def test_blue_green_rollback_before_the_switch_if_never_ready():
    cfg = cfg_with(period_s=0.0).model_copy(update={"strategy": "blue_green"})
    scenario = Scenario(prometheus=GOOD, stuck_uris={NEW})
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), scenario) as c:
        result, _ = roll(c, cfg, None, [])
        assert result.outcome == "rolled_back" and "not ready" in result.reason
        assert {"predictor": {"canaryTrafficPercent": 100}} not in c.spec_patches


def test_blue_green_promotion_is_watched_against_the_recent_past():
    cfg = cfg_with().model_copy(update={"strategy": "blue_green"})
    hooks: list = []
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=GOOD)) as c:
        result, state = roll(c, cfg, Counts(WORSE), hooks)
        assert c.spec_patches == [
            {"predictor": {"canaryTrafficPercent": 0, "model": {"storageUri": NEW}}},
            {"predictor": {"canaryTrafficPercent": 100}},  # the switch; the watch adds none
            {"predictor": {"canaryTrafficPercent": 0}},
            {"predictor": {"model": {"storageUri": OLD}}},
            {"predictor": {"canaryTrafficPercent": None}},
        ]
    assert result.outcome == "rolled_back" and hooks == [("promote", "v2"), ("restore", "v1")]
    assert state.watch["mode"] == "shadow"


class Crash(Exception):
    pass


def test_a_crash_during_the_watch_resumes_without_repeating_the_shift_or_the_alias():
    cfg = cfg_with()
    hooks: list = []
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=GOOD)) as c:
        clock = Clock()
        be = KServeBackend(c.api(), NS, NAME, cfg, PrometheusClient(c.url))
        real_metrics, calls = be.metrics, []

        def metrics(state, window_s):
            calls.append(state.phase)
            if state.phase == "watching" and calls.count("watching") == 2:
                raise Crash()
            return real_metrics(state, window_s)

        be.metrics = metrics
        kw = {"quality": Counts(WORSE), "previous_version": "v1", "now": clock.now,
              "sleep": clock.sleep, "on_promote": lambda s: hooks.append("promote"),
              "on_rollback": lambda s: hooks.append("restore")}  # fmt: skip
        with pytest.raises(Crash):
            run_rollout(be, NEW, "v2", cfg, **kw)
        assert hooks == ["promote"]
        result = run_rollout(be, NEW, "v2", cfg, **kw)
        assert result.resumed and result.outcome == "rolled_back"
        assert hooks == ["promote", "restore"]
        assert c.spec_patches.count({"predictor": {"canaryTrafficPercent": 90}}) == 1
        # finished: a third run returns the record, and calls no hook
        again = run_rollout(be, NEW, "v2", cfg, **kw)
        assert again.outcome == "rolled_back" and hooks == ["promote", "restore"]


class StubEngine:
    """The part of ``RankEngine`` the local backend drives; records every routing."""

    def __init__(self, primary):
        from caprank.online.engine import Routing

        self.routing = Routing(primary=primary)
        self.routes: list[tuple] = []
        self.stats = self

    def window(self, version, window_s):  # VersionStats.window: healthy
        return 500, 0.0, 5.0

    def set_second(self, model, mode, percent):
        from dataclasses import replace

        self.routing = replace(self.routing, second=model, mode=mode, percent=percent)
        self.routes.append((model.version if model else None, mode, percent))

    def promote(self):
        from caprank.online.engine import Routing

        self.routing = Routing(primary=self.routing.second, mode=self.routing.mode)
        self.routes.append(("promoted",))


def test_local_blue_green_warms_in_shadow_then_splits_all_traffic(tmp_path):
    from types import SimpleNamespace

    from caprank.deploy.local import LocalBackend

    engine = StubEngine(SimpleNamespace(source=OLD, version="v1"))
    load = lambda uri, version: SimpleNamespace(source=uri, version=version)  # noqa: E731
    backend = LocalBackend(engine, load, tmp_path / "rollout.json", "shadow")
    cfg = cfg_with(period_s=0.0).model_copy(update={"strategy": "blue_green"})
    clock = Clock()
    result = run_rollout(backend, NEW, "v2", cfg, now=clock.now, sleep=clock.sleep)
    assert result.outcome == "promoted", result.reason
    assert engine.routes == [("v2", "shadow", 0), ("v2", "split", 100), ("promoted",)]
    assert backend.get_state().traffic_percent == 100
