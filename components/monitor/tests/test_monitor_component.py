"""monitor through ``python_func``: the decision is returned, the report written."""

import json

from kfp.dsl import Dataset, Markdown, Metrics

from caprank.config import dump_yaml
from components.testing import artifact, component, isolated


def _run(cfg, data, tmp_path, policy: str):
    (tmp_path / "features").mkdir(exist_ok=True)
    metrics = artifact(Metrics, tmp_path / f"{policy}.json")
    out = component(cfg, "monitor").python_func(
        dataset=artifact(Dataset, data),
        features=artifact(Dataset, tmp_path / "features"),
        config_yaml=dump_yaml(cfg),
        retrain_policy=policy,
        summary=artifact(Markdown, tmp_path / f"{policy}.md"),
        metrics=metrics,
        drift_report=artifact(Dataset, tmp_path / f"drift-{policy}"),
    )
    return out, metrics.metadata


def test_monitor_returns_should_train_and_writes_the_report(tiny_cfg, tiny_dataset_dir, tmp_path):
    cfg = isolated(tiny_cfg, tmp_path / "home")
    out, metrics = _run(cfg, tiny_dataset_dir, tmp_path, "always")
    assert out is True and metrics["should_train"] == 1.0
    assert metrics["reference_events"] > 0 and metrics["current_events"] > 0
    report = json.loads((tmp_path / "drift-always" / "monitor.json").read_text())
    assert report["should_train"] is True
    assert "should_train: true" in (tmp_path / "always.md").read_text()
