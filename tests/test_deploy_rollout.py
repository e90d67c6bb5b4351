"""Canary rollout controller on KServe, against an in-process FAKE of the InferenceService
API (tests/fake_kserve.py) that the real kubernetes client talks to over loopback."""

from __future__ import annotations

import copy

import pyarrow as pa
import pytest
from fake_kserve import FakeCluster, Scenario, inference_service
from kubernetes.client.exceptions import ApiException

from caprank.config import CanaryConfig
from caprank.data.schemas import INTERACTIONS
from caprank.deploy import FeedbackLogQuality, RolloutError, run_rollout
from caprank.deploy.kserve import (
    STATE_ANNOTATION,
    KServeBackend,
    canary_predictor_name,
    detect_mode,
)
from caprank.deploy.state import RolloutState, RolloutStateError
from caprank.files import atomic_write_parquet

NS, NAME = "caprank", "caprank-ranker"
OLD, NEW = "s3://models/ranker/v1", "s3://models/ranker/v2"
T0 = 1_800_000_000.0
GOOD = {"requests": 500.0, "error_rate": 0.001, "p99_latency_ms": 40.0}


class FakeClock:
    def __init__(self) -> None:
        self.t = T0
        self.sleeps = 0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.t += seconds


def canary_cfg(**overrides) -> CanaryConfig:
    base = {"window_s": 60.0, "poll_s": 10.0, "ready_timeout_s": 100.0, "min_requests": 100}
    return CanaryConfig(**{**base, **overrides})


def backend(cluster: FakeCluster, cfg: CanaryConfig, with_prometheus: bool = True):
    from caprank.deploy.guardrails import PrometheusClient

    prom = PrometheusClient(cluster.url) if with_prometheus else None
    return KServeBackend(cluster.api(), NS, NAME, cfg, prom)


def rollout(cluster, cfg, clock=None, hook=None, **kwargs):
    clock = clock or FakeClock()
    return run_rollout(
        backend(cluster, cfg),
        NEW,
        "v2",
        cfg,
        on_promote=hook,
        now=clock.now,
        sleep=clock.sleep,
        **kwargs,
    )


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_promote_when_guardrails_hold(mode):
    cfg = canary_cfg()
    promoted = []
    with FakeCluster(inference_service(NAME, NS, OLD, mode), Scenario(prometheus=GOOD)) as c:
        result = rollout(c, cfg, hook=promoted.append)
        spec = c.obj["spec"]
        assert result.outcome == "promoted", result.reason
        assert [s.new_uri for s in promoted] == [NEW]
        assert spec["predictor"]["model"]["storageUri"] == NEW
        assert "canary" not in spec and "canaryTrafficPercent" not in spec["predictor"]
        assert set(c.content_types) == {"application/merge-patch+json"}
        first = c.spec_patches[0]
        if mode == "Knative":
            assert first == {
                "predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": NEW}}
            }
            assert c.spec_patches[1] == {
                "predictor": {"canaryTrafficPercent": None, "model": {"storageUri": NEW}}
            }
            pod = f"{NAME}-predictor-00002-deployment-.*"
        else:
            name = canary_predictor_name(cfg, NEW)
            assert first["canary"][0]["trafficPercent"] == 10
            assert first["canary"][0]["predictor"]["name"] == name
            canary = first["canary"][0]["predictor"]
            assert canary["model"]["runtime"] == "caprank-ranker"
            # KServe's canary rules: fixed replicas, model.name set (kserve_schema)
            assert not {"maxReplicas", "scaleMetric", "scaleTarget"} & set(canary)
            assert canary["model"]["name"] == "kserve-container"
            assert spec["predictor"]["name"] == name
            # promoted: the stable keeps its autoscaling and carries no model.name
            assert "name" not in spec["predictor"]["model"]
            assert spec["predictor"]["maxReplicas"] == 4
            pod = f"{NAME}-{name}-predictor-.*"
        assert len(c.spec_patches) == 2 and c.rejected == []
        assert c.queries and all(f'namespace="{NS}"' in q and pod in q for q in c.queries)
        assert all("[" in q and "s]" in q for q in c.queries)
        state = RolloutState.from_json(c.obj["metadata"]["annotations"][STATE_ANNOTATION], "t")
        assert state.phase == "promoted" and state.hook_done and state.previous_uri == OLD


def test_rollback_on_error_rate_breach_restores_previous_uri():
    cfg = canary_cfg()
    bad = {**GOOD, "error_rate": 0.2}
    promoted = []
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=bad)) as c:
        result = rollout(c, cfg, hook=promoted.append)
        assert result.outcome == "rolled_back"
        assert "error rate" in result.reason
        assert promoted == []
        assert c.spec_patches == [
            {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": NEW}}},
            {"predictor": {"canaryTrafficPercent": 0}},
            {"predictor": {"model": {"storageUri": OLD}}},
            {"predictor": {"canaryTrafficPercent": None}},
        ]
        assert c.obj["spec"]["predictor"]["model"]["storageUri"] == OLD
        assert "canaryTrafficPercent" not in c.obj["spec"]["predictor"]


def test_rollback_on_p99_breach_standard_mode_drops_canary():
    cfg = canary_cfg()
    slow = {**GOOD, "p99_latency_ms": 900.0}
    with FakeCluster(inference_service(NAME, NS, OLD, "Standard"), Scenario(prometheus=slow)) as c:
        result = rollout(c, cfg)
        assert result.outcome == "rolled_back" and "p99" in result.reason
        assert c.spec_patches[-1] == {"canary": None, "predictor": {"model": {"storageUri": OLD}}}
        assert "canary" not in c.obj["spec"]
        assert c.obj["spec"]["predictor"]["model"]["storageUri"] == OLD


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_rollback_on_readiness_timeout(mode):
    cfg = canary_cfg(ready_timeout_s=50.0)
    clock = FakeClock()
    scenario = Scenario(stuck_uris={NEW}, prometheus=GOOD)
    with FakeCluster(inference_service(NAME, NS, OLD, mode), scenario) as c:
        result = rollout(c, cfg, clock=clock)
        assert result.outcome == "rolled_back"
        assert "not ready after 50s" in result.reason
        assert c.obj["spec"]["predictor"]["model"]["storageUri"] == OLD
        assert clock.t - T0 >= 50.0
        assert c.queries == []  # guardrails never watched a model that never came up


def test_failed_model_load_rolls_back_without_waiting_for_timeout():
    cfg = canary_cfg(ready_timeout_s=10_000.0)
    clock = FakeClock()
    scenario = Scenario(failing_uris={NEW}, prometheus=GOOD)
    with FakeCluster(inference_service(NAME, NS, OLD, "Standard"), scenario) as c:
        result = rollout(c, cfg, clock=clock)
        assert result.outcome == "rolled_back"
        assert "BlockedByFailedLoad" in result.reason
        assert clock.t - T0 < 100


def test_too_little_traffic_rolls_back_at_window_end():
    cfg = canary_cfg()
    quiet = {**GOOD, "requests": 7.0}
    isvc = inference_service(NAME, NS, OLD, "Knative")
    with FakeCluster(isvc, Scenario(prometheus=quiet)) as c:
        result = rollout(c, cfg)
        assert result.outcome == "rolled_back"
        assert "only 7 requests" in result.reason


def _feedback(tmp_path, outcomes: list[str], version: str, ts: float):
    n = len(outcomes)
    when = pa.array([int(ts * 1e6)] * n, type=pa.int64()).cast(INTERACTIONS.field("timestamp").type)
    cols = {
        "event_id": [f"e{i}" for i in range(n)],
        "timestamp": when,
        "session_id": ["s"] * n,
        "user_id": [None] * n,
        "intent_id": [None] * n,
        "intent_text": ["find a recipe"] * n,
        "context_tools": [[]] * n,
        "candidate_ids": [["c1"]] * n,
        "selected_capability": ["c1"] * n,
        "rank": [1] * n,
        "outcome": outcomes,
        "execution_time_ms": [10.0] * n,
        "feedback": [None] * n,
        "propensity": [1.0] * n,
        "model_version": [version] * n,
    }
    table = pa.table(cols, schema=INTERACTIONS.remove_metadata())
    atomic_write_parquet(table, tmp_path / "interactions" / f"part-{version}.parquet")


def test_quality_guardrail_from_feedback_log(tmp_path):
    cfg = canary_cfg(min_success_rate=0.6, min_feedback=5)
    _feedback(tmp_path, ["failure"] * 6 + ["success"] * 2, "v2", T0 + 30)
    _feedback(tmp_path, ["success"] * 50, "v1", T0 + 30)  # the stable model's log is ignored
    quality = FeedbackLogQuality(tmp_path)
    assert quality.success_counts("v2", T0) == (2, 8)
    assert quality.success_counts("v2", T0 + 31) == (0, 0)
    with FakeCluster(inference_service(NAME, NS, OLD, "Standard"), Scenario(prometheus=GOOD)) as c:
        result = rollout(c, cfg, quality=quality)
        assert result.outcome == "rolled_back"
        assert "success rate 0.250 over 8 outcomes" in result.reason


class Crash(Exception):
    pass


class CrashAfter:
    """Delegates to a backend and raises Crash right after the n-th call of ``method``."""

    def __init__(self, inner, method: str, n: int = 1):
        self.inner, self.method, self.left = inner, method, n

    def __getattr__(self, name):
        real = getattr(self.inner, name)
        if name != self.method:
            return real

        def wrapped(*args, **kwargs):
            out = real(*args, **kwargs)
            self.left -= 1
            if self.left == 0:
                raise Crash(name)
            return out

        return wrapped


def _run(cluster, cfg, clock, be, hook):
    return run_rollout(be, NEW, "v2", cfg, on_promote=hook, now=clock.now, sleep=clock.sleep)


@pytest.mark.parametrize(
    ("prom", "method", "n"),
    [
        (GOOD, "set_canary", 1),
        (GOOD, "metrics", 3),
        (GOOD, "promote", 1),
        ({**GOOD, "error_rate": 0.5}, "rollback", 1),
        ({**GOOD, "error_rate": 0.5}, "rollback", 3),
    ],
)
def test_crash_and_rerun_reaches_same_end_state_without_double_patching(prom, method, n):
    cfg = canary_cfg()
    isvc = inference_service(NAME, NS, OLD, "Knative")

    reference_hooks: list = []
    with FakeCluster(isvc, Scenario(prometheus=prom)) as ref:
        expected = _run(ref, cfg, FakeClock(), backend(ref, cfg), reference_hooks.append)
        expected_spec, expected_patches = copy.deepcopy(ref.obj["spec"]), ref.spec_patches

    hooks: list = []
    clock = FakeClock()
    with FakeCluster(isvc, Scenario(prometheus=prom)) as c:
        with pytest.raises(Crash):
            _run(c, cfg, clock, CrashAfter(backend(c, cfg), method, n), hooks.append)
        result = _run(c, cfg, clock, backend(c, cfg), hooks.append)
        assert result.resumed
        assert result.outcome == expected.outcome
        assert c.obj["spec"] == expected_spec
        assert c.spec_patches == expected_patches
        assert len(hooks) == len(reference_hooks)

        again = _run(c, cfg, clock, backend(c, cfg), hooks.append)
        assert again.outcome == expected.outcome
        assert c.spec_patches == expected_patches
        assert len(hooks) == len(reference_hooks)


def test_other_rollout_in_progress_is_refused():
    cfg = canary_cfg()
    isvc = inference_service(NAME, NS, OLD, "Knative")
    with FakeCluster(isvc, Scenario(prometheus=GOOD)) as c:
        with pytest.raises(Crash):
            _run(c, cfg, FakeClock(), CrashAfter(backend(c, cfg), "set_canary"), None)
        with pytest.raises(RolloutError, match="in phase 'canary'"):
            run_rollout(backend(c, cfg), "s3://models/ranker/v3", "v3", cfg, sleep=lambda s: None)


def test_first_deployment_replaces_without_canary():
    cfg = canary_cfg()
    scenario = Scenario(stuck_uris={OLD}, prometheus=GOOD)
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), scenario) as c:
        result = rollout(c, cfg)
        assert result.outcome == "promoted"
        assert result.state.initial and result.reason == "initial deployment"
        assert c.spec_patches == [
            {"predictor": {"canaryTrafficPercent": None, "model": {"storageUri": NEW}}}
        ]


def test_unchanged_when_uri_already_serves():
    cfg = canary_cfg()
    with FakeCluster(inference_service(NAME, NS, NEW, "Knative"), Scenario()) as c:
        result = rollout(c, cfg)
        assert result.outcome == "unchanged"
        assert c.patches == []


def test_unmeasured_guardrails_are_reported_without_prometheus():
    cfg = canary_cfg()
    clock = FakeClock()
    with FakeCluster(inference_service(NAME, NS, OLD, "Standard"), Scenario()) as c:
        result = run_rollout(
            backend(c, cfg, with_prometheus=False), NEW, "v2", cfg, now=clock.now, sleep=clock.sleep
        )
        assert result.outcome == "promoted"
        assert result.unmeasured == ["error_rate", "p99_latency_ms", "success_rate"]
        assert clock.t - T0 >= cfg.window_s


def test_corrupt_state_annotation_names_the_object():
    cfg = canary_cfg()
    isvc = inference_service(NAME, NS, OLD, "Knative")
    isvc["metadata"]["annotations"][STATE_ANNOTATION] = "{not json"
    where = "caprank/caprank-ranker annotation caprank.io/rollout"
    with FakeCluster(isvc, Scenario()) as c, pytest.raises(RolloutStateError, match=where):
        rollout(c, cfg)


def test_prometheus_outage_at_window_end_rolls_back():
    from caprank.deploy.guardrails import PrometheusClient

    cfg = canary_cfg()
    clock = FakeClock()
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario()) as c:
        dead = PrometheusClient("http://127.0.0.1:9", timeout_s=0.5)  # nothing listens there
        be = KServeBackend(c.api(), NS, NAME, cfg, dead)
        result = run_rollout(be, NEW, "v2", cfg, now=clock.now, sleep=clock.sleep)
        assert result.outcome == "rolled_back"
        assert "guardrail metrics unavailable" in result.reason


def test_guardrail_rules():
    from caprank.deploy import CanaryMetrics, breach

    cfg = canary_cfg(min_success_rate=0.5, min_feedback=10)
    quiet_but_bad = CanaryMetrics(requests=5, error_rate=0.9, p99_latency_ms=999.0)
    assert breach(quiet_but_bad, cfg, final=False) is None  # too little traffic to judge yet
    assert "only 5 requests" in breach(quiet_but_bad, cfg, final=True)
    few_outcomes = CanaryMetrics(feedback=3, success_rate=0.0)
    assert breach(few_outcomes, cfg, final=True) is None
    assert "success rate" in breach(CanaryMetrics(feedback=10, success_rate=0.4), cfg, final=True)
    assert breach(CanaryMetrics(**GOOD), cfg, final=True) is None


@pytest.mark.parametrize(
    ("annotation", "mode"),
    [
        ("Knative", "serverless"),
        ("Serverless", "serverless"),
        ("Standard", "standard"),
        ("RawDeployment", "standard"),
    ],
)
def test_deprecated_mode_names_read_as_their_new_names(annotation, mode):
    """KServe 0.21 renamed Serverless to Knative and RawDeployment to Standard; objects
    still carrying the old names roll out the same way."""
    isvc = inference_service(NAME, NS, OLD, annotation)
    isvc.pop("status")
    assert detect_mode(isvc) == mode


def test_admission_refuses_a_canary_kserve_would_reject():
    """The fake API server applies KServe's canary rules, so a controller patch that
    copied the autoscaling fields would fail the rollout tests."""
    with FakeCluster(inference_service(NAME, NS, OLD, "Standard"), Scenario()) as c:
        predictor = dict(c.obj["spec"]["predictor"], name="copy")
        with pytest.raises(ApiException) as err:
            c.api().patch_namespaced_custom_object(
                "serving.kserve.io",
                "v1beta1",
                NS,
                "inferenceservices",
                NAME,
                {"spec": {"canary": [{"trafficPercent": 10, "predictor": predictor}]}},
            )
        assert err.value.status == 422
        assert any("maxReplicas" in e for e in c.rejected[0])
        assert any("'name' is a required property" in e for e in c.rejected[0])
