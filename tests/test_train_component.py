"""The train component through ``python_func`` on the tiny dataset, tracked in MLflow:
the registered model's artifacts hold the bundle that serving loads by version."""

from __future__ import annotations

from pathlib import Path

import pytest
from kfp.dsl import Dataset, Markdown, Metrics, Model

from caprank.config import dump_yaml
from caprank.online.catalog import load_catalog
from caprank.online.models import download_registry_model, find_model_root, load_model_dir
from pipelines.training import make_components


def _artifact(cls, path: Path):
    return cls(name=path.name, uri=str(path), metadata={})


@pytest.mark.slow
def test_train_component_tracks_and_registers(tiny_cfg, tiny_dataset_dir, tmp_path):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.paths.home = tmp_path / "home"
    for key, value in {
        "hidden_dim": 32,
        "heads": 2,
        "layers": 1,
        "lexical_dim": 16,
        "batch_size": 64,
        "max_steps": 20,
        "eval_every": 10,
        "checkpoint_every": 10,
        "baselines": ["bm25"],
    }.items():
        setattr(cfg.training, key, value)
    ops = make_components(cfg)
    config_yaml = dump_yaml(cfg)
    dataset = _artifact(Dataset, tmp_path / "dataset")
    ops.ingest.python_func(
        data_uri=str(tiny_dataset_dir),
        config_yaml=config_yaml,
        dataset=dataset,
        summary=_artifact(Markdown, tmp_path / "i.md"),
    )
    features = _artifact(Dataset, tmp_path / "features")
    ops.build_features.python_func(
        dataset=dataset,
        config_yaml=config_yaml,
        features=features,
        summary=_artifact(Markdown, tmp_path / "f.md"),
        metrics=_artifact(Metrics, tmp_path / "f.json"),
    )
    embeddings = _artifact(Dataset, tmp_path / "embeddings")
    ops.embed.python_func(
        dataset=dataset,
        config_yaml=config_yaml,
        embeddings=embeddings,
        summary=_artifact(Markdown, tmp_path / "e.md"),
        metrics=_artifact(Metrics, tmp_path / "e.json"),
    )
    model = _artifact(Model, tmp_path / "model")
    metrics = _artifact(Metrics, tmp_path / "t.json")
    ops.train.python_func(
        dataset=dataset,
        embeddings=embeddings,
        features=features,
        config_yaml=config_yaml,
        model=model,
        summary=_artifact(Markdown, tmp_path / "t.md"),
        metrics=metrics,
    )
    assert (Path(model.path) / "bundle" / "bundle.json").is_file()
    assert metrics.metadata["steps"] == 20.0
    assert 0.0 < metrics.metadata["test_shgat.mrr"] <= 1.0
    assert "test_bm25.mrr" in metrics.metadata
    assert model.metadata["model_version"] == "1"

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=cfg.mlflow_tracking_uri())
    run = client.get_run(model.metadata["mlflow_run_id"])
    assert run.data.tags["git_revision"] and run.data.tags["dataset_hash"]
    assert "best_valid_mrr" in run.data.metrics and "training.lr" in run.data.params
    assert [m.step for m in client.get_metric_history(run.info.run_id, "rank_loss")]
    local = download_registry_model(cfg, "1")
    root = find_model_root(local)
    assert (root / "bundle.json").is_file() and (root / "catalog").is_dir()
    catalog = load_catalog(cfg, root)
    loaded = load_model_dir(local, cfg, catalog, None, version="1")
    q = loaded.ranker.query(_unit(384), "convert a document")
    assert loaded.ranker.score(q, None).shape == (len(catalog),)


def _unit(dim: int):
    import numpy as np

    v = np.ones(dim, dtype=np.float32)
    return v / np.linalg.norm(v)
