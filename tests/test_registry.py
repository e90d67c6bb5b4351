"""Registry: versions from a run's model, metric and lineage tags, challenger/production
aliases, against a SQLite store in tmp_path (and PostgreSQL when CI=true)."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest

from caprank import registry
from caprank.config import CaprankConfig
from caprank.online.models import (
    ModelLoadError,
    find_model_root,
    resolve_model_ref,
    save_dense_model,
)

PG = "postgres@127.0.0.1:5432"


def _cfg(tmp_path: Path, tracking_uri: str = "") -> CaprankConfig:
    cfg = CaprankConfig()
    cfg.paths.home = tmp_path / "home"
    cfg.services.mlflow_tracking_uri = tracking_uri
    cfg.services.mlflow_artifact_root = str(tmp_path / "artifacts")
    cfg.services.registered_model = f"test-ranker-{uuid.uuid4().hex[:6]}"
    return cfg


def new_run(cfg: CaprankConfig, model_dir: Path | None = None) -> str:
    """A training-like run (in an experiment whose artifacts live under tmp_path)."""
    c = registry.client(cfg)
    name = "caprank-test"
    exp = c.get_experiment_by_name(name)
    exp_id = (
        exp.experiment_id
        if exp is not None
        else c.create_experiment(name, artifact_location=cfg.mlflow_artifact_root())
    )
    run_id = c.create_run(exp_id).info.run_id
    for step, loss in enumerate((1.0, 0.6, 0.4)):
        c.log_metric(run_id, "train_loss", loss, step=step)
    if model_dir is not None:
        registry.log_model_dir(cfg, run_id, model_dir)
    return run_id


def _lineage(cfg: CaprankConfig) -> registry.Lineage:
    return registry.make_lineage(cfg, {"dataset": "a" * 64, "embeddings": "b" * 64}, "kfp-run-1")


def _exercise(cfg: CaprankConfig, tmp_path: Path) -> None:
    assert registry.production_version(cfg) is None  # no registered model at all
    assert registry.latest_version(cfg) is None
    model_dir = save_dense_model(tmp_path / "m1", "all-MiniLM-L6-v2", version="dense-1")
    run1 = new_run(cfg, model_dir)
    v1 = registry.register_version(
        cfg, run1, lineage=_lineage(cfg), metrics={"mrr": 0.5, "hit@10": 0.9}
    )
    assert v1.version == "1" and v1.aliases == ("challenger",) and v1.run_id == run1
    assert v1.metric("mrr") == 0.5 and v1.metric("hit@10") == 0.9
    tags = v1.tags
    assert tags["caprank.lineage.data_hash.dataset"] == "a" * 64
    assert tags["caprank.lineage.data_hash.embeddings"] == "b" * 64
    assert tags["caprank.lineage.pipeline_run_id"] == "kfp-run-1"
    assert tags["caprank.lineage.config_sha256"] == _lineage(cfg).config_hash
    assert tags["caprank.lineage.git_revision"] == registry.git_revision()
    # The resolved config and the lineage record are in the run.
    c = registry.client(cfg)
    logged = {a.path for a in c.list_artifacts(run1, "lineage")}
    assert logged == {"lineage/config.yaml", "lineage/lineage.json"}
    record = json.loads(
        Path(c.download_artifacts(run1, "lineage/lineage.json", tmp_path)).read_text()
    )
    assert record["pipeline_run_id"] == "kfp-run-1"

    # Still no production model until someone promotes one.
    assert registry.production_version(cfg) is None
    assert registry.set_alias(cfg, registry.PRODUCTION, v1.version).aliases == (
        "challenger",
        "production",
    )
    run2 = new_run(cfg, save_dense_model(tmp_path / "m2", "all-MiniLM-L6-v2"))
    v2 = registry.register_version(cfg, run2, lineage=_lineage(cfg), metrics={"mrr": 0.6})
    assert v2.version == "2"
    assert registry.challenger_version(cfg).version == "2"  # the alias moved
    prod = registry.production_version(cfg)
    assert prod.version == "1" and prod.aliases == ("production",)
    assert registry.latest_version(cfg) == "2"
    assert registry.resolve_version(cfg, "production").version == "1"
    assert registry.resolve_version(cfg, "2").aliases == ("challenger",)
    with pytest.raises(registry.RegistryError, match="no alias 'nope'"):
        registry.resolve_version(cfg, "nope")
    # Serving resolves the alias to the registered files, downloaded once.
    local, version = resolve_model_ref(cfg, "challenger")
    assert version == "2" and (find_model_root(local) / "dense_ranker.json").is_file()
    assert (local / ".complete").read_text() == "2"
    marker = local / "left-by-the-first-download"
    marker.write_text("x")  # a second call reuses the directory, it does not download again
    assert registry.download_version(cfg, "2", local) == local and marker.exists()
    fresh = registry.download_version(cfg, "1", tmp_path / "v1")
    assert (find_model_root(fresh) / "dense_ranker.json").is_file()
    with pytest.raises(ModelLoadError, match="no version '9'"):
        resolve_model_ref(cfg, "9")
    # nothing half-written: no directory (or temporary one) of version 9; the model's name
    # holds random hex, which may itself contain "-9"
    left = [p.name for p in (tmp_path / "home").glob("serving/models/*")]
    assert not [n for n in left if re.search(r"-9(\.|$)", n)]

    with pytest.raises(registry.RegistryError, match="no model at 'model'"):
        registry.register_version(cfg, new_run(cfg), lineage=_lineage(cfg))
    with pytest.raises(registry.RegistryError, match="no version 9"):
        registry.set_alias(cfg, registry.PRODUCTION, "9")


def test_aliases_and_lineage_sqlite(tmp_path):
    _exercise(_cfg(tmp_path), tmp_path)


def test_logged_mlflow_model_is_preferred(tmp_path):
    """A run that logged an MLflow (pyfunc) model registers that model, not raw artifacts."""
    import mlflow

    cfg = _cfg(tmp_path)
    run_id = new_run(cfg)
    model_dir = save_dense_model(tmp_path / "m", "all-MiniLM-L6-v2")

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri())
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Echo(), artifacts={"ranker": str(model_dir)}
        )
    v = registry.register_version(cfg, run_id, lineage=_lineage(cfg))
    assert v.source == f"models:/{info.model_id}"
    local, _ = resolve_model_ref(cfg, v.version)
    assert (find_model_root(local) / "dense_ranker.json").is_file()


def test_tracker_logs_a_run_that_registers(tmp_path):
    """The training run's tracker: params, the resolved config, per-step metrics, the
    bundle as a pyfunc model (what evaluate registers); a failure ends the run FAILED."""
    cfg = _cfg(tmp_path)
    bundle = save_dense_model(tmp_path / "bundle", "all-MiniLM-L6-v2")
    with registry.Tracker(cfg, run_name="t") as tracker:
        tracker.log_config(cfg)
        tracker.set_tags({"dataset_hash": "d" * 8})
        for step in range(3):
            tracker.log_metrics(step, {"hit@10": 0.1 * step}, prefix="valid_")
        tracker.log_model(bundle)
    c = registry.client(cfg)
    run = c.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dataset_hash"] == "d" * 8
    assert run.data.params["training.max_steps"] == str(cfg.training.max_steps)
    history = c.get_metric_history(tracker.run_id, "valid_hit_at_10")
    assert [m.step for m in history] == [0, 1, 2]
    assert {a.path for a in c.list_artifacts(tracker.run_id, "config")} == {"config/resolved.yaml"}
    v = registry.register_version(cfg, tracker.run_id, lineage=_lineage(cfg))
    assert v.source.startswith("models:/")
    local, _ = resolve_model_ref(cfg, v.version)
    assert (find_model_root(local) / "dense_ranker.json").is_file()
    with pytest.raises(RuntimeError), registry.Tracker(cfg) as failing:
        raise RuntimeError("training exploded")
    assert c.get_run(failing.run_id).info.status == "FAILED"


def test_git_revision(monkeypatch, tmp_path):
    monkeypatch.setenv(registry.ENV_GIT_REVISION, "abc123")
    assert registry.git_revision() == "abc123"
    monkeypatch.delenv(registry.ENV_GIT_REVISION)
    assert registry.git_revision(tmp_path) == "unknown"  # not a git checkout
    assert registry.mlflow_key("ndcg@10") == "ndcg_at_10"


def test_unknown_run(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(registry.RegistryError, match="not found"):
        registry.register_version(cfg, "0" * 32, lineage=_lineage(cfg))


@pytest.mark.services
@pytest.mark.skipif(
    os.environ.get("CI") != "true", reason="needs PostgreSQL on 127.0.0.1:5432 (set CI=true)"
)
def test_aliases_and_lineage_postgres(tmp_path):
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"caprank_registry_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(f"postgresql://{PG}/test")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        _exercise(_cfg(tmp_path, f"postgresql://{PG}/{name}"), tmp_path)
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
