"""Each image holds what its steps import (issue 12, items 3 and 7), checked without
Docker: every step runs in a virtualenv holding exactly that image's pins
(``tests/image_envs.py``), on the tiny dataset, as one chain:

- the component image synthesizes the data, embeds it and builds and publishes features;
- the training image (its pins plus the CPU twin of its base's torch) runs
  ``python -m caprank.training.entrypoint`` end to end, MLflow tracking and baselines
  included;
- the serving image serves the trained bundle (``python -m serving``) and answers one
  request;
- the logged MLflow model, downloaded alone, is scored by ``mlflow models predict
  --env-manager local`` in a venv holding only the model's own ``requirements.txt``
  (caprank comes from the model's ``code/``), and ranks as the server did.

Building a venv takes minutes the first time (cached by requirements hash after).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from benchmarks.serving_proc import free_port
from tests.conftest import TINY
from tests.image_envs import image_python, venv_for

pytestmark = pytest.mark.e2e

TRAINING = {"hidden_dim": 32, "heads": 2, "layers": 1, "lexical_dim": 16, "batch_size": 64,
            "max_steps": 10, "eval_every": 5, "checkpoint_every": 5}  # fmt: skip
INTENT = "send an invoice to a customer by email"


def _step(python: Path, args: list[str], cwd: Path, env: dict, timeout: int = 900) -> str:
    done = subprocess.run(
        [str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args[:3]}:\n{done.stdout[-2000:]}\n{done.stderr[-5000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Config, environment and the outputs of the component and training steps."""
    tmp = tmp_path_factory.mktemp("image-envs")
    config = tmp / "caprank.yaml"
    settings = {**TINY, "paths": {"home": str(tmp / "home")}, "training": TRAINING}
    config.write_text(yaml.safe_dump(settings))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp),
        "CAPRANK_CONFIG": str(config),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PIP_CONFIG_FILE": os.environ.get("PIP_CONFIG_FILE", "/etc/pip.conf"),
    }
    component = image_python("component")
    data, emb, feats = tmp / "data", tmp / "embeddings", tmp / "features"
    _step(component, ["-m", "caprank", "data", "synth", "--out", str(data)], tmp, env)
    _step(component, ["-m", "caprank", "embed", "--data", str(data), "--out", str(emb)], tmp, env)
    _step(component, ["-m", "caprank", "features", "build", "--data", str(data), "--out",
                      str(feats), "--publish"], tmp, env)  # fmt: skip
    train = image_python("train-gpu")
    outputs = tmp / "outputs.json"
    _step(
        train,
        ["-m", "caprank.training.entrypoint", "--dataset", str(data), "--embeddings", str(emb),
         "--features", str(feats), "--model", str(tmp / "model"), "--summary",
         str(tmp / "train.md"), "--outputs", str(outputs)],
        tmp,
        env,
    )  # fmt: skip
    return tmp, env, json.loads(outputs.read_text())


def test_training_image_runs_the_train_step(chain):
    out = chain[2]
    assert out["metrics"]["steps"] == TRAINING["max_steps"]
    assert out["metadata"]["mlflow_run_id"]  # tracked in MLflow from the training image
    assert any(k.startswith("valid_bm25.") for k in out["metrics"])  # baselines ran
    assert any(k.startswith("valid_logreg.") for k in out["metrics"])  # scikit-learn
    bundle = Path(out["metadata"]["bundle"])
    assert (bundle / "bundle.json").is_file() and (bundle / "features.parquet").is_file()


def _post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _serve_one(tmp: Path, env: dict, bundle: str) -> dict:
    """Start the serving image's entrypoint on ``bundle``, rank INTENT once, stop it."""
    port = free_port()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 (the child holds it)
    proc = subprocess.Popen(
        [str(image_python("serving")), "-m", "serving", "--model_name", "caprank",
         "--model_dir", bundle, "--http_port", str(port)],
        cwd=tmp, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (tmp / "server.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (tmp / "server.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        body = {"instances": [{"intent": INTENT, "top_k": 10}]}
        return _post(port, "/v1/models/caprank:predict", body)["predictions"][0]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def served(chain):
    tmp, env, out = chain
    return _serve_one(tmp, env, out["metadata"]["bundle"])


def test_serving_image_serves_the_trained_bundle(served, chain):
    assert served["model_version"].startswith("trained-")
    assert len(served["rankings"]) == 10 and served["fallback"] is None


def _logged_model(chain) -> Path:
    """The training run's logged model, downloaded alone (what a model server gets)."""
    import mlflow

    from caprank import registry
    from caprank.config import load_config

    tmp, env, out = chain
    cfg = load_config(env["CAPRANK_CONFIG"])
    source, _ = registry.logged_model_source(cfg, out["metadata"]["mlflow_run_id"])
    target = tmp / "logged-model"
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target)))


def test_mlflow_serves_the_logged_model_as_the_server_ranks(chain, served):
    tmp, env, _ = chain
    model = _logged_model(chain)
    requirements = model / "requirements.txt"
    assert "caprank" not in requirements.read_text().split()  # no index has it
    assert (model / "code" / "caprank" / "model" / "pyfunc.py").is_file()
    python = venv_for("mlflow-model", requirements) / "bin" / "python"
    assert "caprank" not in _step(python, ["-m", "pip", "list"], tmp, env)  # code/ only
    (tmp / "input.json").write_text(json.dumps({"dataframe_records": [{"intent": INTENT}]}))
    _step(
        python,
        ["-m", "mlflow", "models", "predict", "-m", str(model), "-i", str(tmp / "input.json"),
         "-t", "json", "-o", str(tmp / "predictions.json"), "--env-manager", "local"],
        tmp,
        {**env, "PATH": f"{python.parent}:{env['PATH']}"},
    )  # fmt: skip
    rows = json.loads((tmp / "predictions.json").read_text())["predictions"]
    assert [r["capability_id"] for r in rows] == [r["capability_id"] for r in served["rankings"]]
    assert [round(r["score"], 6) for r in rows] == pytest.approx(
        [r["score"] for r in served["rankings"]], abs=2e-6
    )
