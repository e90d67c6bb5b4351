"""MLflow tracking of a training run: what was trained, on what, how it went, the model.

Embedded default: a SQLite tracking store and an artifact directory under the run
directory (``cfg.mlflow_tracking_uri()``, ``cfg.mlflow_artifact_root()``); a server URI
by config. A run records parameters, per-step metrics (through ``log_metrics`` as the
trainer reports them), the resolved config, dataset content hashes, the git revision,
the last checkpoint, and the bundle logged as an MLflow pyfunc model with a signature,
which the evaluate stage registers under ``services.registered_model`` (``caprank.registry``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from caprank.config import CaprankConfig, dump_yaml
from caprank.registry import mlflow_key

EXPERIMENT = "caprank-training"


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
        named = {mlflow_key(f"{prefix}{k}"): float(v) for k, v in metrics.items()}
        self.mlflow.log_metrics(named, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_dict(self, data: dict, name: str) -> None:
        self.mlflow.log_dict(data, name)

    def log_model(self, bundle_dir: str | Path) -> None:
        """Log the bundle as a pyfunc model (artifacts/bundle/...) in the run.

        Not registered here: the evaluate stage registers it as a version, with its
        metrics and lineage, so every version in the registry has been evaluated.
        """
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
        self.mlflow.pyfunc.log_model(
            name="model",
            python_model=BundlePyfunc(),
            artifacts={"bundle": str(bundle_dir)},
            signature=signature,
            pip_requirements=["caprank"],
        )


def _artifact_uri(root: str) -> str:
    if "://" in root:
        return root
    return Path(root).resolve().as_uri()


# --------------------------------------------------------------------------- an ended run


def metric_history(
    cfg: CaprankConfig, run_id: str, *, skip_prefix: str = "", limit: int | None = None
) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` of a run's metrics logged at more than one step
    (by name; names starting with ``skip_prefix`` left out; at most ``limit`` of them)."""
    from caprank.registry import client

    c = client(cfg)
    names = sorted(c.get_run(run_id).data.metrics)
    out: dict[str, list[tuple[int, float]]] = {}
    for name in names:
        if skip_prefix and name.startswith(skip_prefix):
            continue
        history = c.get_metric_history(run_id, name)
        if len(history) < 2:
            continue
        out[name] = [(int(m.step), float(m.value)) for m in history]
        if limit is not None and len(out) == limit:
            break
    return out


def log_to_ended_run(
    cfg: CaprankConfig,
    run_id: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    artifacts_dir: str | Path | None = None,
    artifact_path: str | None = None,
) -> None:
    """Add metrics (step 0, non-finite values dropped, batches of 500), tags and a folder
    of artifacts to a run that already ended (the evaluate stage's report, in the
    training run)."""
    import math
    import time

    from mlflow.entities import Metric

    from caprank.registry import client

    c = client(cfg)
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(v)]
    for start in range(0, len(batch), 500):
        c.log_batch(run_id, metrics=batch[start : start + 500])
    for key, value in tags.items():
        c.set_tag(run_id, key, value)
    if artifacts_dir is not None:
        c.log_artifacts(run_id, str(artifacts_dir), artifact_path)
