"""train through ``python_func`` (which runs ``caprank.training.entrypoint``) and the
entrypoint's command line: a bundle, its MLflow run, and the metrics the DAG reads."""

import json
from pathlib import Path

import pytest
from kfp.dsl import Dataset, Markdown, Metrics, Model

from caprank.config import dump_yaml
from caprank.data.dataset import load_dataset
from caprank.embeddings.stage import embed
from caprank.features.stage import build_and_publish
from caprank.training import entrypoint
from components.testing import artifact, component, isolated

SMALL = {"hidden_dim": 32, "heads": 2, "layers": 1, "lexical_dim": 16, "batch_size": 64}
STEPS = {"max_steps": 10, "eval_every": 5, "checkpoint_every": 5, "baselines": []}


@pytest.fixture(scope="module")
def inputs(tiny_cfg, tiny_dataset_dir, tmp_path_factory):
    """A small training config and the embed/build_features outputs it trains on."""
    tmp = tmp_path_factory.mktemp("train-inputs")
    cfg = isolated(tiny_cfg, tmp / "home")
    for key, value in {**SMALL, **STEPS}.items():
        setattr(cfg.training, key, value)
    ds = load_dataset(tiny_dataset_dir)
    embed(ds, cfg, tmp / "embeddings")
    build_and_publish(ds, cfg, tmp / "features")
    return cfg, tiny_dataset_dir, tmp / "embeddings", tmp / "features"


@pytest.mark.slow
def test_train_component_writes_the_bundle_and_run(inputs, tmp_path):
    cfg, data, embeddings, features = inputs
    model = artifact(Model, tmp_path / "model")
    metrics = artifact(Metrics, tmp_path / "m.json")
    component(cfg, "train").python_func(
        dataset=artifact(Dataset, data),
        embeddings=artifact(Dataset, embeddings),
        features=artifact(Dataset, features),
        config_yaml=dump_yaml(cfg),
        model=model,
        summary=artifact(Markdown, tmp_path / "train.md"),
        metrics=metrics,
    )
    assert (Path(model.path) / "bundle" / "bundle.json").is_file()
    assert model.metadata["bundle"] and model.metadata["mlflow_run_id"]
    assert model.metadata["tuned_from"] == ""  # training.tuned_from unset
    assert metrics.metadata["steps"] == 10.0
    assert 0.0 < metrics.metadata["best_valid_mrr"] <= 1.0
    assert (tmp_path / "train.md").read_text().strip()


@pytest.mark.slow
def test_entrypoint_command_line_writes_outputs_json(inputs, tmp_path):
    cfg, data, embeddings, features = inputs
    argv = ["--dataset", str(data), "--embeddings", str(embeddings)]
    argv += ["--features", str(features), "--model", str(tmp_path / "model")]
    argv += ["--summary", str(tmp_path / "s.md"), "--outputs", str(tmp_path / "out.json")]
    assert entrypoint.main([*argv, "--config-yaml", dump_yaml(cfg)]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["metrics"]["steps"] == 10.0 and out["metadata"]["mlflow_run_id"]
    assert (tmp_path / "model" / "bundle" / "bundle.json").is_file()
    with pytest.raises(SystemExit):
        entrypoint.main(argv[:2])  # the paths are required
