"""The evaluate stage end to end on the tiny dataset with a dense model directory: serving
path scores, gate against the production alias, registration with lineage, the report
in out_dir and in the MLflow run. The KFP component: components/evaluate/tests/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from caprank import registry
from caprank.evaluation.stage import evaluate
from caprank.online.models import save_dense_model
from tests.test_registry import new_run

TEXT_MODEL = "all-MiniLM-L6-v2"
MONITOR_DRIFT = {  # DriftResult.to_dict() of a monitor run where one check fired
    "drifted": True,
    "retrain": True,
    "fired": ["launch_demand"],
    "checks": {
        "launch_demand": {
            "value": 0.4,
            "threshold": 0.1,
            "drifted": True,
            "rule": "share of requests for launched capabilities > threshold",
            "details": {"launched": ["c1"]},
        },
        "feature_staleness": {
            "value": 2.0,
            "threshold": 48.0,
            "drifted": False,
            "rule": "hours > threshold",
            "details": {},
        },
    },
}


@pytest.fixture
def cfg(tiny_cfg, tmp_path):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.paths.home = tmp_path / "home"
    cfg.services.mlflow_artifact_root = str(tmp_path / "artifacts")
    cfg.embedding.cache_dir = tiny_cfg.embedding_cache_dir()  # shared: encode once per session
    cfg.evaluation.bootstrap_samples = 200
    return cfg


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return save_dense_model(tmp_path / "model", TEXT_MODEL)


def test_first_model_then_same_model_again(cfg, tiny_dataset_dir, model_dir, tmp_path):
    run1 = new_run(cfg)  # the training run logged no model: evaluate logs the directory
    first = evaluate(
        cfg, tiny_dataset_dir, model_dir, run1, tmp_path / "eval1", pipeline_run_id="p1"
    )
    # No production model: passing the floor and the latency guardrail is enough.
    assert first.production_version is None
    assert first.improved, first.decision.reason
    assert first.version == "1" and first.decision.checks == {"latency": True, "floor": True}
    assert "calibration not checked" in first.decision.reason  # dense: no value head
    assert 0.2 <= first.metrics["mrr"] <= 1.0 and first.n_items == 60
    assert first.metrics["mrr"] > first.baselines["bm25"]["mrr"]  # sanity: MiniLM beats BM25
    # all three baselines by default; the dense model *is* the dense cosine baseline
    assert set(first.baselines) == {"bm25", "dense", "logreg"}
    assert first.baselines["dense"]["mrr"] == pytest.approx(first.metrics["mrr"], abs=1e-6)
    assert 0.0 < first.baselines["logreg"]["mrr"] <= 1.0
    assert {"size 1", "warm"} <= set(first.segments)
    v1 = registry.get_version(cfg, "1")
    assert v1.aliases == ("challenger",)
    assert v1.tags["caprank.lineage.pipeline_run_id"] == "p1"
    assert v1.metric("mrr") == pytest.approx(first.metrics["mrr"])
    assert v1.tags["caprank.improved"] == "true"

    # Report files, and the same report plus eval.* metrics in the training run.
    html = (tmp_path / "eval1" / "report.html").read_text()
    assert "Gate decision" in html and "Learning curves" in html
    for name in ("bm25", "dense cosine", "logistic regression"):
        assert f"{name} (baseline)" in html, name
        assert f"{name} (baseline)" in (tmp_path / "eval1" / "report.md").read_text()
    assert "IMPROVED" in (tmp_path / "eval1" / "report.md").read_text()
    saved = json.loads((tmp_path / "eval1" / "evaluation.json").read_text())
    assert saved["version"] == "1" and saved["improved"] is True
    c = registry.client(cfg)
    run = c.get_run(run1)
    assert run.data.metrics["eval.mrr"] == pytest.approx(first.metrics["mrr"])
    for name in ("bm25", "dense", "logreg"):
        assert run.data.metrics[f"eval.baseline.{name}.mrr"] == pytest.approx(
            first.baselines[name]["mrr"]
        )
    assert run.data.tags["caprank.eval.version"] == "1"
    logged = {a.path for a in c.list_artifacts(run1, "evaluation")}
    assert {"evaluation/report.html", "evaluation/report.md"} <= logged

    # Promote v1; the same model again is within noise of production: not improved.
    registry.set_alias(cfg, registry.PRODUCTION, "1")
    run2 = new_run(cfg, model_dir)
    second = evaluate(cfg, tiny_dataset_dir, model_dir, run2, tmp_path / "eval2")
    assert second.production_version == "1" and second.version == "2"
    assert second.production_metrics["mrr"] == pytest.approx(first.metrics["mrr"])
    assert not second.improved and second.decision.checks["beats_production"] is False
    assert second.decision.delta.estimate == pytest.approx(0.0)
    assert registry.challenger_version(cfg).version == "2"
    assert registry.production_version(cfg).version == "1"  # evaluate never promotes
    assert registry.get_version(cfg, "2").tags["caprank.improved"] == "false"
    assert "(production)" in (tmp_path / "eval2" / "report.html").read_text()

    # History across the registry's versions, read back from what each registered.
    assert [r.version for r in second.history] == ["1", "2"]
    assert second.history[0].aliases == ("production",)
    assert second.history[1].metrics["mrr"] == pytest.approx(second.metrics["mrr"])
    assert second.history[0].segments["warm"] == pytest.approx(first.segments["warm"]["mrr"])
    assert set(second.history[1].segments) == set(second.segments)
    html2 = (tmp_path / "eval2" / "report.html").read_text()
    assert "History across registry versions" in html2 and "id='fig-history'" in html2
    assert "Segment trends (mrr)" in html2
    assert "History (mrr): v1 " in (tmp_path / "eval2" / "report.md").read_text()
    # A dense model reads no features and has no channels: the report says so.
    assert second.importance is not None and second.importance.items == []
    assert "reads no features" in html2 and "no score channels" in html2
    assert json.loads((tmp_path / "eval2" / "evaluation.json").read_text())["history"]


def test_thresholds_from_config(cfg, tiny_dataset_dir, model_dir, tmp_path):
    """A floor above the model's MRR, or a latency budget it cannot meet, blocks it."""
    cfg.evaluation.min_primary = 0.999
    cfg.evaluation.max_scoring_p99_ms = 1e-6
    res = evaluate(
        cfg,
        tiny_dataset_dir,
        model_dir,
        new_run(cfg),
        tmp_path / "e",
        baselines={},
        drift={"drift": MONITOR_DRIFT},  # the monitor's report as a dict
    )
    assert not res.improved
    assert res.decision.checks == {"latency": False, "floor": False}
    assert "p99" in res.decision.reason and "floor" in res.decision.reason
    assert res.baselines == {}
    md = (tmp_path / "e" / "report.md").read_text()
    assert "launch_demand" in md and "(baseline)" not in md
    # Still registered as the challenger, marked not improved.
    assert registry.challenger_version(cfg).tags["caprank.improved"] == "false"


def test_baselines_plug_in(cfg, tiny_dataset_dir, model_dir, tmp_path):
    """Named score matrices (or functions of the queries and catalog) join the table."""
    rng = np.random.default_rng(0)

    def random(queries, catalog):
        return rng.random((len(queries), len(catalog)))

    res = evaluate(
        cfg,
        tiny_dataset_dir,
        model_dir,
        new_run(cfg),
        tmp_path / "e",
        baselines={"random": random},
    )
    assert set(res.baselines) == {"random"}
    assert res.baselines["random"]["mrr"] < res.metrics["mrr"]
