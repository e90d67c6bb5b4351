"""The logged MLflow model ranks as the KServe predictor does (issue 12, item 7).

A bundle trained on the tiny dataset (real MiniLM vectors, features published to Feast),
logged by the training run's tracker, loaded back with ``mlflow.pyfunc.load_model`` and
asked the same intents as the predictor serving that bundle over HTTP: same capabilities,
same order, same scores. The pyfunc reads the server's config (``CAPRANK_CONFIG``).
"""

from __future__ import annotations

import pandas as pd
import pytest

from caprank.config import dump_yaml
from caprank.data.dataset import load_dataset
from caprank.embeddings.stage import embed
from caprank.features.stage import build_and_publish
from caprank.model.features import REFERENCE_FILE
from caprank.training.stage import train
from components.testing import isolated
from tests.serving_fixtures import start_served

SMALL = {"hidden_dim": 32, "heads": 2, "layers": 1, "lexical_dim": 16, "batch_size": 64}
STEPS = {"max_steps": 10, "eval_every": 5, "checkpoint_every": 5, "baselines": []}


@pytest.fixture(scope="module")
def logged(tiny_cfg, tiny_dataset_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    cfg = isolated(tiny_cfg, tmp / "home")
    cfg.paths.data = tiny_dataset_dir
    for key, value in {**SMALL, **STEPS}.items():
        setattr(cfg.training, key, value)
    ds = load_dataset(tiny_dataset_dir)
    embed(ds, cfg, tmp / "embeddings")
    build_and_publish(ds, cfg, tmp / "features")
    result = train(ds, cfg, tmp / "embeddings", tmp / "out", tmp / "features", evaluate=False)
    return cfg, ds, result, tmp


@pytest.mark.slow
def test_pyfunc_and_predictor_rank_alike(logged, monkeypatch):
    import mlflow

    from caprank import registry

    cfg, ds, result, tmp = logged
    assert (result.bundle_dir / REFERENCE_FILE).is_file()  # the features it trained with
    served = start_served(cfg, ds, cfg.paths.home, publish=False, model_ref=str(result.bundle_dir))
    try:
        assert served.runtime.engine.features.n_stale == 0  # Feast answers every row
        config = tmp / "served.yaml"
        config.write_text(dump_yaml(served.cfg))
        monkeypatch.setenv("CAPRANK_CONFIG", str(config))
        registry.client(cfg)
        model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
        intents = [*ds.intents["text"].to_pylist()[:6], "send an invoice by email"]
        out = model.predict(pd.DataFrame({"intent": intents}))
        for intent in intents:
            mine = out[out["intent"] == intent].sort_values("rank")
            theirs = served.rank({"intent": intent, "top_k": 10})["rankings"]
            assert list(mine["capability_id"]) == [r["capability_id"] for r in theirs], intent
            assert list(mine["score"].round(6)) == pytest.approx(
                [r["score"] for r in theirs], abs=2e-6
            )
    finally:
        served.runtime.close()
