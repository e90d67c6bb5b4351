"""update through ``python_func``: the warm-started bundle where evaluate reads train's,
its MLflow run with the logged model, and a failed step when nothing is new."""

from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from kfp.dsl import Dataset, Markdown, Metrics, Model

from caprank import registry
from caprank.config import dump_yaml
from caprank.data.dataset import load_dataset
from caprank.features.stage import build_features
from caprank.model.bundle import load_bundle, save_bundle
from caprank.training.trainer import Trainer
from caprank.training.update import NothingToUpdate, data_cutoff, dataset_as_of
from components.testing import artifact, component, isolated
from tests.train_fixtures import (
    fake_encode,
    tiny_bundle,
    tiny_model,
    tiny_prepared,
    tiny_training_cfg,
)


@pytest.fixture(scope="module")
def inputs(tiny_cfg, tiny_dataset_dir, tmp_path_factory):
    """A config with short updates, a base bundle trained on the first six days of the
    tiny dataset (its ``data_cutoff`` recorded) and the full dataset's features."""
    tmp = tmp_path_factory.mktemp("update-inputs")
    cfg = isolated(tiny_training_cfg(tiny_cfg, max_steps=20, eval_every=10), tmp / "home")
    cfg.update.steps, cfg.update.eval_every = 4, 2
    cfg.update.max_regression = 1.0  # this test checks the plumbing, test_update the guard
    ds = load_dataset(tiny_dataset_dir)
    start = pc.min(ds.interactions["timestamp"]).as_py()
    old = dataset_as_of(ds, start.replace(hour=0, minute=0, second=0) + timedelta(days=6))
    # the base is trained with capability features, as train's bundles are
    old_features = build_features(old, cfg, tmp / "old-features").offline_path
    prep = tiny_prepared(old, cfg, pq.read_table(old_features))
    model = tiny_model(prep, cfg)
    Trainer(model, prep.data, cfg.training).fit()
    bundle = tiny_bundle(prep, model)
    bundle.meta["data_cutoff"] = data_cutoff(old).isoformat()
    base = save_bundle(bundle, tmp / "base")
    build_features(ds, cfg, tmp / "features")
    return cfg, tiny_dataset_dir, base, tmp / "features"


@pytest.fixture(autouse=True)
def fake_text_model(monkeypatch):
    from caprank.embeddings import cache

    monkeypatch.setattr(cache, "embed_texts", lambda texts, cfg, **kw: (fake_encode(texts), None))
    monkeypatch.setattr(cache, "cached_encoder", lambda cfg, text_model=None: fake_encode)


def _run(cfg, data, base, features, out: Path):
    model = artifact(Model, out / "model")
    metrics = artifact(Metrics, out / "m.json")
    component(cfg, "update").python_func(
        dataset=artifact(Dataset, data),
        features=artifact(Dataset, features),
        config_yaml=dump_yaml(cfg),
        base=str(base),
        model=model,
        summary=artifact(Markdown, out / "update.md"),
        metrics=metrics,
    )
    return model, metrics


@pytest.mark.slow
def test_update_component_writes_the_bundle_and_its_run(inputs, tmp_path):
    cfg, data, base, features = inputs
    model, metrics = _run(cfg, data, base, features, tmp_path)
    # what evaluate reads from train's model: one bundle under the artifact, a run id
    assert [p.parent.name for p in Path(model.path).rglob("bundle.json")] == ["bundle"]
    assert Path(model.metadata["bundle"]) == Path(model.path) / "bundle"
    assert model.metadata["base_version"] == "test-bundle"
    updated = load_bundle(model.metadata["bundle"])
    assert updated.meta["base_version"] == "test-bundle"
    assert updated.meta["data_cutoff"] > load_bundle(base).meta["data_cutoff"]
    assert metrics.metadata["steps"] == 4.0 and metrics.metadata["accepted"] == 1.0
    assert metrics.metadata["new_experiences"] > 0
    assert "## Update" in (tmp_path / "update.md").read_text()
    run = registry.client(cfg).get_run(model.metadata["mlflow_run_id"])
    assert run.data.tags["run_kind"] == "update" and run.data.tags["base_version"] == "test-bundle"
    assert run.data.metrics["new_experiences"] == metrics.metadata["new_experiences"]
    assert registry.logged_model_source(cfg, run.info.run_id) is not None  # evaluate registers it


@pytest.mark.slow
def test_nothing_logged_since_the_cutoff_fails_the_step(inputs, tmp_path):
    cfg, data, base, features = inputs
    late = load_bundle(base)
    late.meta["data_cutoff"] = data_cutoff(load_dataset(data)).isoformat()
    late_dir = save_bundle(late, tmp_path / "late")
    with pytest.raises(NothingToUpdate, match="no interaction logged after"):
        _run(cfg, data, late_dir, features, tmp_path)
    assert not (tmp_path / "model" / "bundle").exists()
