"""MLflow tracking of a training run: what was trained, on what, how it went, the model.

Embedded default: a SQLite tracking store and an artifact directory under the run
directory (``cfg.mlflow_tracking_uri()``, ``cfg.mlflow_artifact_root()``); a server URI
by config. A run records parameters, per-step metrics (through ``log_metrics`` as the
trainer reports them), the resolved config, dataset content hashes, the git revision,
the last checkpoint, and the bundle logged as an MLflow pyfunc model with a signature,
registered under ``services.model_name`` so serving can load it by version.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from caprank.config import CaprankConfig, dump_yaml

EXPERIMENT = "caprank-training"


def git_revision(cwd: str | Path | None = None) -> str:
    """The checked-out commit (``CAPRANK_GIT_REVISION`` wins: images have no .git)."""
    env = os.environ.get("CAPRANK_GIT_REVISION")
    if env:
        return env
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


class Tracker:
    """One MLflow run; use as a context manager (the run ends FAILED on an exception)."""

    def __init__(self, cfg: CaprankConfig, run_name: str | None = None):
        import mlflow

        self.cfg = cfg
        self.mlflow = mlflow
        mlflow.set_tracking_uri(cfg.mlflow_tracking_uri())
        client = mlflow.MlflowClient()
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            exp_id = client.create_experiment(
                EXPERIMENT, artifact_location=_artifact_uri(cfg.mlflow_artifact_root())
            )
        else:
            exp_id = exp.experiment_id
        self.run = mlflow.start_run(experiment_id=exp_id, run_name=run_name)
        self.run_id = self.run.info.run_id

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.mlflow.end_run(status="FAILED" if exc_type else "FINISHED")

    def log_config(self, cfg: CaprankConfig) -> None:
        """Training and embedding parameters as params; the whole resolved config as YAML."""
        params: dict[str, Any] = {}
        _flatten("training", cfg.training.model_dump(mode="json"), params)
        params["embedding.text_model"] = cfg.embedding.text_model
        params["embedding.hybrid.method"] = cfg.embedding.hybrid.method
        self.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        self.mlflow.log_text(dump_yaml(cfg), "config/resolved.yaml")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_metrics(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> None:
        named = {metric_name(f"{prefix}{k}"): float(v) for k, v in metrics.items()}
        self.mlflow.log_metrics(named, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_dict(self, data: dict, name: str) -> None:
        self.mlflow.log_dict(data, name)

    def log_model(self, bundle_dir: str | Path, register: bool = True) -> str | None:
        """Log the bundle as a pyfunc model (artifacts/bundle/...); returns the version."""
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        from caprank.model.pyfunc import BundlePyfunc

        signature = ModelSignature(
            inputs=Schema([ColSpec("string", "intent")]),
            outputs=Schema(
                [
                    ColSpec("string", "intent"),
                    ColSpec("long", "rank"),
                    ColSpec("string", "capability_id"),
                    ColSpec("double", "score"),
                ]
            ),
        )
        info = self.mlflow.pyfunc.log_model(
            name="model",
            python_model=BundlePyfunc(),
            artifacts={"bundle": str(bundle_dir)},
            signature=signature,
            pip_requirements=["caprank"],
            registered_model_name=self.cfg.services.model_name if register else None,
        )
        version = getattr(info, "registered_model_version", None)
        return None if version is None else str(version)


def metric_name(name: str) -> str:
    """MLflow metric names allow no '@': hit@10 -> hit_at_10."""
    return name.replace("@", "_at_")


def _artifact_uri(root: str) -> str:
    if "://" in root:
        return root
    return Path(root).resolve().as_uri()
