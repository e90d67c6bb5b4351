"""Canary rollout controller on KServe, against an in-process FAKE of the InferenceService
API (tests/fake_kserve.py) that the real kubernetes client talks to over loopback."""

from __future__ import annotations

import copy
from dataclasses import replace

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
    # these tests feed no outcomes unless they say so: quality may go unmeasured
    base = {
        "window_s": 60.0, "poll_s": 10.0, "ready_timeout_s": 100.0, "min_requests": 100,
        "allow_unmeasured": ["success_rate"],
    }  # fmt: skip
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


def test_unmeasured_guardrails_refuse_promotion_unless_allowed():
    """Without Prometheus or scraped pods and without feedback, nothing is measured: the
    canary is rolled back at the window's end, not promoted on readiness alone."""
    clock = FakeClock()
    blind = canary_cfg(allow_unmeasured=[])
    with FakeCluster(inference_service(NAME, NS, OLD, "Standard"), Scenario()) as c:
        be = backend(c, blind, with_prometheus=False)
        result = run_rollout(be, NEW, "v2", blind, now=clock.now, sleep=clock.sleep)
        assert result.outcome == "rolled_back"
        assert "not measured: requests, error_rate, p99_latency_ms, success_rate" in result.reason
        assert "canary.allow_unmeasured" in result.reason
        assert clock.t - T0 >= blind.window_s
    allowed = canary_cfg(
        allow_unmeasured=["requests", "error_rate", "p99_latency_ms", "success_rate"]
    )
    with FakeCluster(inference_service(NAME, NS, OLD, "Standard"), Scenario()) as c:
        be = backend(c, allowed, with_prometheus=False)
        result = run_rollout(be, NEW, "v2", allowed, now=clock.now, sleep=clock.sleep)
        assert result.outcome == "promoted"
        assert result.unmeasured == ["requests", "error_rate", "p99_latency_ms", "success_rate"]


def test_too_few_outcomes_leave_quality_unmeasured(tmp_path):
    """Feedback below min_feedback at the window's end is not evidence of quality."""
    cfg = canary_cfg(allow_unmeasured=[], min_feedback=20)
    _feedback(tmp_path, ["success"] * 5, "v2", T0 + 30)
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=GOOD)) as c:
        result = rollout(c, cfg, quality=FeedbackLogQuality(tmp_path))
        assert result.outcome == "rolled_back"
        assert "not measured: success_rate" in result.reason
    _feedback(tmp_path, ["success"] * 20, "v2", T0 + 31)
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=GOOD)) as c:
        result = rollout(c, cfg, quality=FeedbackLogQuality(tmp_path))
        assert result.outcome == "rolled_back"  # no floor and no stable model to compare
        assert "not measured: success_rate" in result.reason
    _feedback(tmp_path, ["success"] * 18 + ["failure"] * 2, "v1", T0 + 31)
    assert FeedbackLogQuality(tmp_path).baseline_counts("v2", T0) == (18, 20)
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario(prometheus=GOOD)) as c:
        result = rollout(c, cfg, quality=FeedbackLogQuality(tmp_path))
        assert result.outcome == "promoted", result.reason
        assert result.unmeasured == []


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
    # relative quality: the canary may fall at most max_success_rate_drop below the stable
    rel = canary_cfg(min_feedback=10, max_success_rate_drop=0.05)
    worse = CanaryMetrics(
        feedback=40, success_rate=0.70, baseline_feedback=400, baseline_success_rate=0.80
    )
    assert "below the stable model's 0.800" in breach(worse, rel, final=True)
    close = replace(worse, success_rate=0.76)
    assert breach(close, rel, final=True) is None
    thin_baseline = replace(worse, baseline_feedback=3)
    assert breach(thin_baseline, rel, final=True) is None  # stable model not judged yet
    assert CanaryConfig().max_success_rate_drop > 0  # the default is not blind
    assert CanaryConfig().allow_unmeasured == []


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


class PodMetricsServers:
    """One loopback HTTP server per fake pod (127.0.0.2, .3, ...: all loopback on Linux),
    on one shared port, each answering ``/metrics`` with its own exposition text."""

    def __init__(self, texts: dict[str, str]):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.texts, self.servers, self.ips = texts, [], {}
        self.port = 0
        for i, name in enumerate(texts):
            ip = f"127.0.0.{i + 2}"
            body = texts[name].encode()

            class Handler(BaseHTTPRequestHandler):
                def log_message(self, *args) -> None:
                    pass

                def do_GET(self, body=body) -> None:
                    self.send_response(200 if self.path == "/metrics" else 404)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            server = ThreadingHTTPServer((ip, self.port), Handler)
            self.port = server.server_address[1]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)
            self.ips[name] = ip

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def exposition(version: str, ok: int, errors: int, successes: int, failures: int) -> str:
    """What a predictor's /metrics holds after ``ok + errors`` requests (fallback answers
    counted as errors of ``version``) and the given stored outcomes."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    reg = CollectorRegistry()
    requests = Counter("caprank_rank_requests", "", ["status", "model_version"], registry=reg)
    outcomes = Counter("caprank_feedback_outcomes", "", ["model_version", "outcome"], registry=reg)
    latency = Histogram("request_predict_seconds", "", ["model_name"], registry=reg)
    requests.labels("ok", version).inc(ok)
    if errors:
        requests.labels("error", version).inc(errors)
        requests.labels("error", "none").inc(0)
    outcomes.labels(version, "success").inc(successes)
    outcomes.labels(version, "failure").inc(failures)
    for i in range(ok + errors):
        latency.labels("caprank-ranker").observe(0.02 if i % 100 else 0.3)
    return generate_latest(reg).decode()


@pytest.mark.parametrize(
    ("canary", "outcome", "says"),
    [
        ((300, 0, 45, 5), "promoted", "guardrails held"),
        ((0, 300, 45, 5), "rolled_back", "error rate 1.0000"),  # fails every request
        ((300, 0, 30, 20), "rolled_back", "below the stable model's 0.900"),
    ],
)
def test_cluster_guardrails_read_the_pods_metrics_without_prometheus(canary, outcome, says):
    """No Prometheus: the controller reads the canary's and the stable model's pods'
    /metrics itself, so a canary the fallback covers for is seen failing."""
    from caprank.deploy.scrape import PodScraper

    cfg = canary_cfg(allow_unmeasured=[], min_feedback=20)
    texts = {
        f"{NAME}-predictor-abc12-x": exposition("v1", 2000, 0, 900, 100),
        f"{NAME}-{canary_predictor_name(cfg, NEW)}-predictor-def34-y": exposition("v2", *canary),
    }
    pods = PodMetricsServers(texts)
    try:
        with FakeCluster(inference_service(NAME, NS, OLD, "Standard"), Scenario()) as c:
            c.pods = list(pods.ips.items())
            scraper = PodScraper(c.core(), NS, NAME, pods.port, timeout_s=5)
            be = KServeBackend(c.api(), NS, NAME, cfg, None, scraper)
            clock = FakeClock()
            result = run_rollout(be, NEW, "v2", cfg, now=clock.now, sleep=clock.sleep)
            assert result.outcome == outcome, result.reason
            assert says in result.reason
            assert set(c.pod_selectors) == {f"serving.kserve.io/inferenceservice={NAME}"}
            m = result.state.metrics
            assert m["requests"] == 300 and m["baseline_success_rate"] == 0.9
            assert m["baseline_feedback"] == 1000 and m["feedback"] == 50
            if outcome == "promoted":
                assert 20.0 <= m["p99_latency_ms"] <= 300.0 and result.unmeasured == []
    finally:
        pods.close()


def test_histogram_quantile_matches_promql():
    from caprank.deploy.scrape import histogram_quantile

    buckets = {0.1: 50.0, 0.2: 90.0, 0.5: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.2 + 0.3 * 0.9)
    assert histogram_quantile(0.99, {0.1: 0.0, float("inf"): 0.0}) is None
    assert histogram_quantile(0.99, {0.1: 1.0, float("inf"): 10.0}) == 0.1


def test_knative_canary_and_stable_pods_are_told_apart_by_revision():
    cfg = canary_cfg()
    state = RolloutState(NEW, "v2", OLD, 10, "serverless", "observing", T0)
    with FakeCluster(inference_service(NAME, NS, OLD, "Knative"), Scenario()) as c:
        be = backend(c, cfg, with_prometheus=False)
        pred = c.obj["status"]["components"]["predictor"]
        pred["latestCreatedRevision"] = f"{NAME}-predictor-00002"
        pred["latestRolledoutRevision"] = f"{NAME}-predictor-00001"
        assert be.canary_pod_regex(state) == f"{NAME}-predictor-00002-deployment-.*"
        assert be.stable_pod_regex(state) == f"{NAME}-predictor-00001-deployment-.*"
        pred["latestRolledoutRevision"] = f"{NAME}-predictor-00002"
        assert be.stable_pod_regex(state) is None  # one revision: no baseline to read
