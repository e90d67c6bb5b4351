"""Going back: the deploy stage's watch restoring the registry alias, and
`caprank rollback --to VERSION` (registry in a temporary SQLite MLflow store, the
cluster through the FAKE KServe API)."""

from __future__ import annotations

import pyarrow as pa
import pytest
import test_deploy_stage as stage_tests
from click.testing import CliRunner
from fake_kserve import FakeCluster, Scenario, inference_service

from caprank.cli import cli
from caprank.data.schemas import INTERACTIONS
from caprank.deploy.controller import RolloutError
from caprank.deploy.guardrails import PrometheusClient
from caprank.deploy.kserve import STATE_ANNOTATION, KServeBackend
from caprank.deploy.rollback import rollback_to
from caprank.deploy.stage import deploy, production_of
from caprank.deploy.state import RolloutState
from caprank.files import atomic_write_parquet
from caprank.registry import PRODUCTION, set_alias, version_storage_uri

OLD, NEW = "s3://models/ranker/v1", "s3://models/ranker/v2"
GOOD = {"requests": 500.0, "error_rate": 0.001, "p99_latency_ms": 40.0}
T0 = 1_800_000_000.0
shared, cfg = stage_tests.shared, stage_tests.cfg  # the deploy stage's fixtures
register, dense_dir = stage_tests.register, stage_tests.dense_dir


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def write_feedback(feedback_dir, version: str, successes: int, failures: int, ts: float):
    n = successes + failures
    cols = {
        "event_id": [f"{version}-{i}" for i in range(n)],
        "timestamp": pa.array([int(ts * 1e6)] * n, pa.int64()).cast(
            INTERACTIONS.field("timestamp").type
        ),
        "session_id": [f"s{i}" for i in range(n)],
        "user_id": [None] * n,
        "intent_id": [None] * n,
        "intent_text": ["find a recipe"] * n,
        "context_tools": [[]] * n,
        "candidate_ids": [["c1"]] * n,
        "selected_capability": ["c1"] * n,
        "rank": [1] * n,
        "outcome": ["success"] * successes + ["failure"] * failures,
        "execution_time_ms": [10.0] * n,
        "feedback": [None] * n,
        "propensity": [1.0] * n,
        "model_version": [version] * n,
    }
    table = pa.table(cols, schema=INTERACTIONS.remove_metadata())
    atomic_write_parquet(table, feedback_dir / "interactions" / f"part-{version}.parquet")


def kserve(c: FakeCluster, cfg) -> KServeBackend:
    return KServeBackend(
        c.api(), "caprank", cfg.services.inference_service, cfg.canary, PrometheusClient(c.url)
    )


def isvc(cfg, uri):
    return inference_service(cfg.services.inference_service, "caprank", uri, "Knative")


@pytest.mark.parametrize(("new_successes", "outcome"), [(60, "rolled_back"), (130, "promoted")])
def test_deploy_watch_moves_the_alias_back_when_worse(cfg, tmp_path, new_successes, outcome):
    cfg.canary.window_s, cfg.canary.poll_s, cfg.canary.ready_timeout_s = 60.0, 10.0, 100.0
    cfg.canary.watch.period_s, cfg.canary.watch.min_feedback = 300.0, 100
    # the log's outcomes are all "during the watch": the canary window judges traffic only
    cfg.canary.max_success_rate_drop, cfg.canary.quality_alpha = 1.0, 0.0
    cfg.canary.allow_unmeasured = ["success_rate"]
    v1 = register(cfg, dense_dir(cfg, tmp_path / "m1"))
    set_alias(cfg, PRODUCTION, v1)
    v2 = register(cfg, dense_dir(cfg, tmp_path / "m2"))
    # outcomes logged during the watch: v1 (the holdback) 50%, v2 30% or 65%
    write_feedback(cfg.feedback_dir(), v1, 100, 100, T0 + 200)
    write_feedback(cfg.feedback_dir(), v2, new_successes, 200 - new_successes, T0 + 200)
    with FakeCluster(isvc(cfg, OLD), Scenario(prometheus=GOOD)) as c:
        clock = Clock()
        result = deploy(cfg, v2, NEW, target="cluster", backend=kserve(c, cfg), now=clock.now,
                        sleep=clock.sleep)  # fmt: skip
        served = c.obj["spec"]["predictor"]["model"]["storageUri"]
        assert {"predictor": {"canaryTrafficPercent": 90}} in c.spec_patches
    assert result.outcome == outcome, result.reason
    assert result.watch["mode"] == "holdback" and result.watch["reference_events"] == 200
    if outcome == "rolled_back":
        assert served == OLD and production_of(cfg) == v1  # the alias went back
        assert result.reason.startswith("watch: success rate 0.3000")
        assert "watch after promotion" in result.to_markdown()
    else:
        assert served == NEW and production_of(cfg) == v2


def test_rollback_to_a_version_on_the_cluster(cfg, tmp_path):
    v1 = register(cfg, dense_dir(cfg, tmp_path / "m1"))
    v2 = register(cfg, dense_dir(cfg, tmp_path / "m2"))
    set_alias(cfg, PRODUCTION, v2)
    uri1 = version_storage_uri(cfg, v1)
    with FakeCluster(isvc(cfg, version_storage_uri(cfg, v2))) as c:
        clock = Clock()
        result = rollback_to(cfg, v1, target="cluster", backend=kserve(c, cfg), now=clock.now,
                             sleep=clock.sleep)  # fmt: skip
        assert c.spec_patches == [
            {"predictor": {"canaryTrafficPercent": None, "model": {"storageUri": uri1}}}
        ]
        assert c.obj["spec"]["predictor"]["model"]["storageUri"] == uri1
        state = RolloutState.from_json(c.obj["metadata"]["annotations"][STATE_ANNOTATION], "t")
    assert result.outcome == "rolled_back" and result.production_version == v1
    assert production_of(cfg) == v1
    assert state.phase == "promoted" and state.finished and state.previous_version == v2
    assert state.reason == f"rollback by hand to version {v1}"


def test_rollback_to_refuses_while_a_rollout_is_under_way(cfg, tmp_path):
    v1 = register(cfg, dense_dir(cfg, tmp_path / "m1"))
    set_alias(cfg, PRODUCTION, v1)
    busy = RolloutState(NEW, "9", OLD, 10, "serverless", "observing", T0)
    obj = isvc(cfg, OLD)
    obj["metadata"]["annotations"][STATE_ANNOTATION] = busy.to_json()
    with FakeCluster(obj) as c, pytest.raises(RolloutError, match="phase 'observing'"):
        rollback_to(cfg, v1, target="cluster", backend=kserve(c, cfg))
    assert c.spec_patches == []


def test_rollback_to_an_unready_version_leaves_the_alias(cfg, tmp_path):
    cfg.canary.ready_timeout_s, cfg.canary.poll_s = 30.0, 10.0
    v1 = register(cfg, dense_dir(cfg, tmp_path / "m1"))
    v2 = register(cfg, dense_dir(cfg, tmp_path / "m2"))
    set_alias(cfg, PRODUCTION, v2)
    scenario = Scenario(stuck_uris={version_storage_uri(cfg, v1)})
    with FakeCluster(isvc(cfg, NEW), scenario) as c, pytest.raises(RolloutError, match="not ready"):
        clock = Clock()
        rollback_to(cfg, v1, target="cluster", backend=kserve(c, cfg), now=clock.now,
                    sleep=clock.sleep)  # fmt: skip
    assert production_of(cfg) == v2


def test_cli_rollback_to_version_moves_production(cfg, tmp_path):
    v1 = register(cfg, dense_dir(cfg, tmp_path / "m1"))
    v2 = register(cfg, dense_dir(cfg, tmp_path / "m2"))
    set_alias(cfg, PRODUCTION, v2)
    args = [
        "--set", f"paths.home={cfg.paths.home}",
        "--set", f"services.mlflow_tracking_uri={cfg.mlflow_tracking_uri()}",
        "--set", f"services.mlflow_artifact_root={cfg.mlflow_artifact_root()}",
        "--set", f"services.registered_model={cfg.services.registered_model}",
        "rollback", "--to", v1, "--target", "local",
    ]  # fmt: skip
    res = CliRunner().invoke(cli, args, env={})
    assert res.exit_code == 0, res.output
    assert production_of(cfg) == v1
    assert f'"production_version": "{v1}"' in res.output
    bad = CliRunner().invoke(cli, [*args[:-4], "rollback", "--to", "99", "--target", "local"])
    assert bad.exit_code != 0 and production_of(cfg) == v1
