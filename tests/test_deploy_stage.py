"""The deploy stage: the KFP component through ``python_func`` in local mode (a real
in-process canary with synthetic requests, a dense model registered in a temporary
SQLite MLflow store), and the cluster mode against the in-process FAKE KServe API."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from fake_kserve import FakeCluster, Scenario, inference_service
from kfp.dsl import Markdown, Metrics, Model

from caprank.config import dump_yaml
from caprank.deploy.kserve import KServeBackend
from caprank.deploy.stage import deploy, production_of, resolve_target
from caprank.deploy.state import RolloutState, rollout_state_path
from caprank.deploy.traffic import SyntheticTraffic, sample_intents
from caprank.online.models import DENSE_FILE, save_dense_model
from caprank.online.runtime import default_model_ref
from caprank.registry import PRODUCTION, RegistryError, set_alias
from pipelines.training import make_components


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """An empty MLflow SQLite store (its schema migrations take seconds: made once, copied
    per test) and one text-embedding cache for the module."""
    import mlflow

    root = tmp_path_factory.mktemp("deploy-shared")
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").search_registered_models()
    return root


@pytest.fixture
def cfg(tiny_cfg, tiny_dataset, tmp_path, shared):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.paths.home = tmp_path / "home"
    cfg.paths.home.mkdir()
    shutil.copy(shared / "mlflow.db", cfg.paths.home / "mlflow.db")
    cfg.embedding.cache_dir = shared / "embedding-cache"
    cfg.paths.data = tiny_dataset.root
    cfg.canary.target = "local"
    cfg.canary.traffic_percent = 50
    cfg.canary.min_requests = 5
    cfg.canary.max_p99_latency_ms = 30_000.0  # a shared, busy CPU must not decide these tests
    cfg.canary.window_s = 1.2
    cfg.canary.poll_s = 0.4
    cfg.canary.local_requests = 60
    cfg.canary.local_intents = 30
    return cfg


def register(cfg, model_dir: Path) -> str:
    """Log ``model_dir`` as a run's artifacts and register it (what train does)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=cfg.mlflow_tracking_uri())
    name = cfg.services.registered_model
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    exp = client.get_experiment_by_name("deploy-test")
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(
            "deploy-test", artifact_location=Path(cfg.mlflow_artifact_root()).as_uri()
        )
    )
    run = client.create_run(exp_id)
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.set_terminated(run.info.run_id)
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    return str(mv.version)


def dense_dir(cfg, path: Path) -> Path:
    return save_dense_model(path, cfg.embedding.text_model)


def run_component(cfg, version: str, model_dir: Path, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    metrics = Metrics(name="metrics", uri=str(out / "metrics.json"), metadata={})
    decision = make_components(cfg).deploy.python_func(
        model=Model(name="model", uri=str(model_dir), metadata={}),
        registered=Model(
            name="registered", uri=str(out / "registered"), metadata={"version": version}
        ),
        config_yaml=dump_yaml(cfg),
        summary=Markdown(name="summary", uri=str(out / "summary.md"), metadata={}),
        metrics=metrics,
    )
    return decision.decision, (out / "summary.md").read_text(), metrics.metadata


@pytest.mark.slow
def test_component_promotes_and_sets_production_then_canaries_the_next(cfg, tmp_path):
    v1_dir = dense_dir(cfg, tmp_path / "m1")
    v1 = register(cfg, v1_dir)
    decision, summary, metrics = run_component(cfg, v1, v1_dir, tmp_path / "o1")
    assert decision == "promoted", summary
    assert production_of(cfg) == v1
    assert "promoted" in summary and "dense" in summary  # replaced the dense ranker
    assert metrics["promoted"] == 1.0 and metrics["requests"] >= cfg.canary.min_requests
    state = RolloutState.from_json(rollout_state_path(cfg).read_text(), "state")
    assert state.phase == "promoted" and state.hook_done and state.previous_uri == "dense"

    # the same deployment again: the stored decision, no new rollout
    again = deploy(cfg, v1, model_dir=v1_dir)
    assert again.outcome == "promoted" and again.resumed and not again.traffic

    # the next version canaries beside `production` (loaded from the registry)
    v2_dir = dense_dir(cfg, tmp_path / "m2")
    v2 = register(cfg, v2_dir)
    result = deploy(cfg, v2, model_dir=v2_dir)
    assert result.outcome == "promoted", result.reason
    assert result.previous == v1 and production_of(cfg) == v2
    assert result.traffic["by_version"].get(v2, 0) >= cfg.canary.min_requests
    assert result.traffic["by_version"].get(v1, 0) > 0
    assert result.unmeasured == ["success_rate"]
    assert any("quality (success_rate) is not judged locally" in n for n in result.notes)
    assert default_model_ref(cfg) == v2  # what `caprank serve` loads next


@pytest.mark.slow
def test_local_canary_counts_requests_not_seconds_on_a_busy_machine(cfg, tmp_path, monkeypatch):
    """Every request takes longer than the whole window (a saturated CPU): the canary
    still gets min_requests on both arms, with the same split on every run."""
    from caprank.online.runtime import Runtime

    busy = cfg.model_copy(deep=True)
    c = busy.canary
    c.traffic_percent, c.min_requests, c.local_requests = 10, 5, 20
    c.window_s, c.poll_s = 0.002, 0.001
    original = Runtime.rank

    def slow_rank(self, body, request_id=None):
        time.sleep(0.004)  # two whole windows per request
        return original(self, body, request_id)

    monkeypatch.setattr(Runtime, "rank", slow_rank)
    v1 = register(busy, dense_dir(busy, tmp_path / "m1"))
    set_alias(busy, PRODUCTION, v1)
    splits = []
    for i in (2, 3):
        version = register(busy, dense_dir(busy, tmp_path / f"m{i}"))
        result = deploy(busy, version, model_dir=tmp_path / f"m{i}")
        assert result.outcome == "promoted", result.reason
        by_version = result.traffic["by_version"]
        assert by_version[version] >= 5 and by_version[result.previous] >= 5, by_version
        splits.append(result.traffic["by_arm"])
    assert splits[0] == splits[1]  # seeded request ids: the same split each run


@pytest.mark.slow
def test_rollback_leaves_production(cfg, tmp_path):
    v1 = register(cfg, dense_dir(cfg, tmp_path / "m1"))
    set_alias(cfg, PRODUCTION, v1)
    slow = cfg.model_copy(deep=True)
    slow.canary.max_p99_latency_ms = 0.001  # no real model answers in a microsecond
    v2_dir = dense_dir(cfg, tmp_path / "m2")
    v2 = register(cfg, v2_dir)
    decision, summary, metrics = run_component(slow, v2, v2_dir, tmp_path / "o2")
    assert decision == "rolled_back"
    assert "p99 latency" in summary and metrics["promoted"] == 0.0
    assert production_of(cfg) == v1

    broken = tmp_path / "m3"
    broken.mkdir()
    (broken / DENSE_FILE).write_text(json.dumps({"format": 99}))
    v3 = register(cfg, broken)
    result = deploy(cfg, v3, model_dir=broken)
    assert result.outcome == "rolled_back" and "failed" in result.reason
    assert "format 1" in result.reason and production_of(cfg) == v1


class Crash(Exception):
    pass


@pytest.mark.slow
def test_crash_mid_window_then_rerun_resumes(cfg, tmp_path, monkeypatch):
    v1_dir = dense_dir(cfg, tmp_path / "m1")
    v1 = register(cfg, v1_dir)
    original = SyntheticTraffic.run_for
    calls = {"n": 0}

    def crashing(self, seconds):  # dies after the first poll's requests
        calls["n"] += 1
        original(self, seconds)
        raise Crash("killed mid-window")

    monkeypatch.setattr(SyntheticTraffic, "run_for", crashing)
    with pytest.raises(Crash):
        deploy(cfg, v1, model_dir=v1_dir)
    state = RolloutState.from_json(rollout_state_path(cfg).read_text(), "state")
    assert state.phase == "observing" and production_of(cfg) is None

    monkeypatch.setattr(SyntheticTraffic, "run_for", original)
    result = deploy(cfg, v1, model_dir=v1_dir)
    assert result.outcome == "promoted", result.reason
    assert any("resumed" in n for n in result.notes)
    assert production_of(cfg) == v1


def test_unfinished_rollout_of_another_model_is_abandoned_locally(cfg, tmp_path):
    v1_dir = dense_dir(cfg, tmp_path / "m1")
    v1 = register(cfg, v1_dir)
    set_alias(cfg, PRODUCTION, v1)
    stale = RolloutState("/gone/model", "0", "dense", 50, "local", "observing", 1.0)
    rollout_state_path(cfg).parent.mkdir(parents=True, exist_ok=True)
    rollout_state_path(cfg).write_text(stale.to_json())
    # deploying the version already in production: nothing to roll out
    result = deploy(cfg, v1, model_dir=v1_dir)
    assert result.outcome == "unchanged" and any("abandoned" in n for n in result.notes)
    state = RolloutState.from_json(rollout_state_path(cfg).read_text(), "state")
    assert state.phase == "rolled_back" and "abandoned" in state.reason


def test_unregistered_version_is_refused(cfg, tmp_path):
    register(cfg, dense_dir(cfg, tmp_path / "m1"))
    with pytest.raises(RegistryError, match="no version 7"):
        deploy(cfg, "7")
    with pytest.raises(RegistryError, match="must be a number"):
        deploy(cfg, "latest")


# ------------------------------------------------------------------ cluster mode (FAKE)

OLD, NEW = "s3://models/ranker/v1", "s3://models/ranker/v2"
GOOD = {"requests": 500.0, "error_rate": 0.001, "p99_latency_ms": 40.0}
BAD = {"requests": 500.0, "error_rate": 0.2, "p99_latency_ms": 40.0}


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


@pytest.mark.parametrize(("prometheus", "outcome"), [(GOOD, "promoted"), (BAD, "rolled_back")])
def test_cluster_mode_against_fake_kserve(cfg, tmp_path, prometheus, outcome):
    from caprank.deploy.guardrails import PrometheusClient

    cfg.canary.window_s, cfg.canary.poll_s, cfg.canary.ready_timeout_s = 60.0, 10.0, 100.0
    cfg.canary.allow_unmeasured = ["success_rate"]  # no feedback reaches this fake cluster
    v1 = register(cfg, dense_dir(cfg, tmp_path / "m1"))
    set_alias(cfg, PRODUCTION, v1)
    v2 = register(cfg, dense_dir(cfg, tmp_path / "m2"))
    isvc = inference_service(cfg.services.inference_service, "caprank", OLD, "Knative")
    with FakeCluster(isvc, Scenario(prometheus=prometheus)) as c:
        be = KServeBackend(c.api(), "caprank", cfg.services.inference_service, cfg.canary,
                           PrometheusClient(c.url))  # fmt: skip
        clock = Clock()
        result = deploy(cfg, v2, NEW, target="cluster", backend=be, now=clock.now,
                        sleep=clock.sleep)  # fmt: skip
        served = c.obj["spec"]["predictor"]["model"]["storageUri"]
    assert result.outcome == outcome and result.target == "cluster"
    assert result.previous == OLD and result.metrics["error_rate"] == prometheus["error_rate"]
    assert served == (NEW if outcome == "promoted" else OLD)
    assert production_of(cfg) == (v2 if outcome == "promoted" else v1)


def test_cluster_storage_uri_defaults_to_the_registry(cfg, tmp_path):
    from caprank.registry import version_storage_uri

    v1 = register(cfg, dense_dir(cfg, tmp_path / "m1"))
    uri = version_storage_uri(cfg, v1)
    assert uri.endswith("/model") and "artifacts" in uri


def test_target_resolution(cfg):
    cfg.canary.target = "auto"
    assert resolve_target(cfg, {}) == "local"
    assert resolve_target(cfg, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "cluster"
    cfg.canary.target = "cluster"
    assert resolve_target(cfg, {}) == "cluster"


def test_sample_intents_is_seeded_and_distinct():
    texts = [f"intent {i % 50}" for i in range(500)] + ["", "  "]
    a, b = sample_intents(texts, 20, 3), sample_intents(texts, 20, 3)
    assert a == b and len(set(a)) == 20 and "" not in a
    assert sample_intents(texts, 1000, 3) == sorted({f"intent {i}" for i in range(50)})


def test_serve_default_model_is_production_or_what_is_named(cfg, tmp_path):
    """`caprank serve` loads the `production` alias or an explicitly named version or
    alias: never an unpromoted challenger nor the latest version by default."""
    import mlflow

    from caprank.errors import CaprankError

    # the embedded local registry before any promotion: the dense ranker (make run)
    assert default_model_ref(cfg) == "dense"
    v1 = register(cfg, dense_dir(cfg, tmp_path / "m1"))
    v2 = register(cfg, dense_dir(cfg, tmp_path / "m2"))
    client = mlflow.MlflowClient(tracking_uri=cfg.mlflow_tracking_uri())
    client.set_registered_model_alias(cfg.services.registered_model, "challenger", v1)
    # a gate-rejected challenger and the latest version are not served
    assert default_model_ref(cfg) == "dense"
    cfg.serving.missing_model = "error"
    with pytest.raises(CaprankError, match="no alias 'production'") as err:
        default_model_ref(cfg)
    assert cfg.mlflow_tracking_uri() in str(err.value)  # names the registry
    set_alias(cfg, PRODUCTION, v2)
    assert default_model_ref(cfg) == v2
    cfg.serving.model_ref = v1
    assert default_model_ref(cfg) == v1
    cfg.serving.model_ref = "challenger"  # named explicitly: served
    assert default_model_ref(cfg) == v1
    cfg.serving.model_ref = "9"
    with pytest.raises(CaprankError, match="no version '9'"):
        default_model_ref(cfg)


def test_an_unreachable_registry_is_loud(cfg, monkeypatch):
    """A registry server that does not answer is an error naming it, not a silent dense
    ranker; only an explicit serving.missing_model=dense serves the dense ranker."""
    from caprank.online.models import RegistryUnavailable

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cfg.services.mlflow_tracking_uri = "http://127.0.0.1:9"  # nothing listens there
    with pytest.raises(RegistryUnavailable, match=r"registry at http://127\.0\.0\.1:9"):
        default_model_ref(cfg)
    cfg.serving.model_ref = "3"
    with pytest.raises(RegistryUnavailable, match=r"http://127\.0\.0\.1:9"):
        default_model_ref(cfg)
    cfg.serving.model_ref = "production"
    cfg.serving.missing_model = "dense"
    assert default_model_ref(cfg) == "dense"


def test_proxied_mlflow_artifacts_map_to_their_storage():
    from caprank.registry import storage_location

    dest = "s3://mlflow/artifacts"
    assert storage_location("mlflow-artifacts:/1/abc/artifacts/model", dest) == (
        "s3://mlflow/artifacts/1/abc/artifacts/model"
    )
    assert storage_location("mlflow-artifacts://mlflow:5000/1/m-9/artifacts", dest + "/") == (
        "s3://mlflow/artifacts/1/m-9/artifacts"
    )
    assert storage_location("s3://bucket/x", dest) == "s3://bucket/x"
    with pytest.raises(RegistryError, match="mlflow_artifacts_destination"):
        storage_location("mlflow-artifacts:/1/x", "")
