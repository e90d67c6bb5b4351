"""evaluate through ``python_func`` on the tiny dataset with a dense model directory:
the candidate is scored, gated, registered as ``challenger`` with the KFP run's lineage,
and ``registered`` names the version for deploy."""

import json
from pathlib import Path

import pytest
from kfp.dsl import HTML, Dataset, Markdown, Metrics, Model

from caprank import registry
from caprank.config import dump_yaml
from caprank.online.models import save_dense_model
from components.testing import artifact, component, isolated
from tests.test_eval_stage import MONITOR_DRIFT
from tests.test_registry import new_run


@pytest.fixture
def cfg(tiny_cfg, tmp_path):
    cfg = isolated(tiny_cfg, tmp_path / "home")
    cfg.services.mlflow_artifact_root = str(tmp_path / "artifacts")
    cfg.embedding.cache_dir = tiny_cfg.embedding_cache_dir()  # shared: encode once per session
    cfg.evaluation.bootstrap_samples = 200
    return cfg


def test_evaluate_registers_the_candidate(cfg, tiny_dataset_dir, tmp_path):
    metrics = artifact(Metrics, tmp_path / "metrics.json")
    model = artifact(Model, save_dense_model(tmp_path / "model", "all-MiniLM-L6-v2"))
    model.metadata["mlflow_run_id"] = new_run(cfg)  # as the train component records it
    registered = artifact(Model, tmp_path / "registered")
    drift_dir = tmp_path / "drift"  # the monitor component's drift_report, as it writes it
    drift_dir.mkdir()
    (drift_dir / "monitor.json").write_text(json.dumps({"drift": MONITOR_DRIFT}))
    out = component(cfg, "evaluate").python_func(
        dataset=artifact(Dataset, Path(tiny_dataset_dir)),
        model=model,
        config_yaml=dump_yaml(cfg),
        pipeline_run_id="kfp-123",
        metrics=metrics,
        report=artifact(HTML, tmp_path / "report.html"),
        summary=artifact(Markdown, tmp_path / "summary.md"),
        registered=registered,
        drift_report=artifact(Dataset, drift_dir),
    )
    assert out is True and registered.metadata["version"] == "1"
    assert registered.metadata["uri"] == f"models:/{cfg.services.registered_model}/1"
    assert metrics.metadata["mrr"] > 0.2 and metrics.metadata["improved"] == 1.0
    assert "hit@10" in metrics.metadata
    html = (tmp_path / "report.html").read_text()
    assert "<html" in html
    # the monitor's verdict, not a drift recomputed here
    assert "id='drift'" in html and "launch_demand" in html and "drift detected" in html
    assert "v1" in (tmp_path / "summary.md").read_text()
    assert registry.get_version(cfg, "1").tags["caprank.lineage.pipeline_run_id"] == "kfp-123"


def test_evaluate_needs_the_training_run(cfg, tiny_dataset_dir, tmp_path):
    with pytest.raises(ValueError, match="training run id"):
        component(cfg, "evaluate").python_func(
            dataset=artifact(Dataset, Path(tiny_dataset_dir)),
            model=artifact(Model, tmp_path / "model"),  # no mlflow_run_id metadata
            config_yaml=dump_yaml(cfg),
            pipeline_run_id="kfp-123",
            metrics=artifact(Metrics, tmp_path / "metrics.json"),
            report=artifact(HTML, tmp_path / "report.html"),
            summary=artifact(Markdown, tmp_path / "summary.md"),
            registered=artifact(Model, tmp_path / "registered"),
        )
