"""The one module that talks to MLflow: tracking, the model registry, aliases, download.

Every MLflow call in caprank goes through here (a test enforces it), so the MLflow
version, its URIs and its error codes are handled in one place. The exception is
``caprank.model.pyfunc``: the ``mlflow.pyfunc.PythonModel`` subclass that logged models
pickle by reference.

- **Tracking**: ``Tracker`` is one training run (parameters, per-step metrics, the
  resolved config, the bundle logged as a pyfunc model with a signature). Embedded
  default: a SQLite store and an artifact directory under the caprank home
  (``cfg.mlflow_tracking_uri()``, ``cfg.mlflow_artifact_root()``); a server URI by config.
- **Tuning**: ``log_tuning`` records a hyperparameter study (``caprank tune``) as a run
  of its own experiment, with the best trial's config overrides as a tag that
  ``tuned_overrides`` reads back for ``training.tuned_from``.
- **Registry**: a model version is registered from a run's logged model: an MLflow model
  logged under ``artifact_path`` (MLflow 3 logged models) or, failing that, plain
  artifacts under that path in the run (a model directory).
- **Aliases**: ``challenger`` names the latest evaluated candidate and ``production`` the
  one serving traffic (``serving.model_ref`` defaults to it); the evaluate step sets the
  first, the deploy step moves the second.
- **Download**: ``download_version`` fetches a version's files for a local server;
  ``version_storage_uri`` is where KServe's storage initializer reads them. MLflow
  records absolute artifact paths; a local one that is gone (the home was moved) is
  re-resolved under the current artifact root (``relocated``), and files missing there
  too are an error naming both places, never an empty download marked complete.

Lineage travels as version tags (data content hashes, config hash, pipeline run id, git
revision), with the resolved config itself logged to the run as ``lineage/config.yaml``
because tag values are size-limited.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from caprank.config import CaprankConfig, dump_yaml
from caprank.errors import CaprankError
from caprank.files import atomic_dir, atomic_write_json, atomic_write_text, text_hash

EXPERIMENT = "caprank-training"
TUNING_EXPERIMENT = "caprank-tuning"  # `caprank tune` studies, one run each
TUNED_OVERRIDES_TAG = "caprank.tuning.overrides"  # the best trial's {dotted key: value}
CHALLENGER = "challenger"
PRODUCTION = "production"
MODEL_ARTIFACT = "model"  # where the training run logs its model
LINEAGE_DIR = "lineage"  # run artifacts: config.yaml and lineage.json
TAG_PREFIX = "caprank."
ENV_GIT_REVISION = "CAPRANK_GIT_REVISION"  # images carry no .git: the build passes it


class RegistryError(CaprankError):
    """The registry cannot do what was asked (no such run, model or version)."""


def mlflow_key(name: str) -> str:
    """A metric or tag name MLflow accepts: ``hit@10`` -> ``hit_at_10``."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", name.replace("@", "_at_"))


@dataclass(frozen=True)
class Lineage:
    """What a model version was built from."""

    data_hashes: dict[str, str]  # input name (dataset, embeddings, ...) -> content hash
    config_yaml: str
    pipeline_run_id: str
    git_revision: str

    @property
    def config_hash(self) -> str:
        return text_hash(self.config_yaml)

    def tags(self) -> dict[str, str]:
        tags = {
            f"{TAG_PREFIX}lineage.data_hash.{mlflow_key(k)}": v
            for k, v in sorted(self.data_hashes.items())
        }
        tags[f"{TAG_PREFIX}lineage.config_sha256"] = self.config_hash
        tags[f"{TAG_PREFIX}lineage.pipeline_run_id"] = self.pipeline_run_id or "none"
        tags[f"{TAG_PREFIX}lineage.git_revision"] = self.git_revision
        return tags

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_hashes": dict(self.data_hashes),
            "config_sha256": self.config_hash,
            "pipeline_run_id": self.pipeline_run_id,
            "git_revision": self.git_revision,
        }


def git_revision(repo: str | Path | None = None) -> str:
    """``$CAPRANK_GIT_REVISION``, else ``git rev-parse HEAD`` of ``repo`` (default: this
    package's checkout), else ``"unknown"`` (an image without git metadata)."""
    env = os.environ.get(ENV_GIT_REVISION, "").strip()
    if env:
        return env
    where = Path(repo) if repo is not None else Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", rev) else "unknown"


def make_lineage(
    cfg: CaprankConfig, data_hashes: Mapping[str, str], pipeline_run_id: str = ""
) -> Lineage:
    return Lineage(dict(data_hashes), dump_yaml(cfg), pipeline_run_id, git_revision())


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version as the registry reports it."""

    name: str
    version: str
    source: str
    run_id: str | None
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    def metric(self, name: str) -> float | None:
        value = self.tags.get(f"{TAG_PREFIX}metric.{mlflow_key(name)}")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "run_id": self.run_id,
            "aliases": list(self.aliases),
            "tags": dict(self.tags),
        }


def client(cfg: CaprankConfig):
    """An MLflow client on the configured tracking store (also the registry).

    The process-wide tracking URI is set too: MLflow's SQL registry looks a logged model
    up through a default ``MlflowClient()`` when a version is created from it.
    """
    import mlflow
    from mlflow import MlflowClient

    uri = cfg.mlflow_tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# ------------------------------------------------------------------------- tracking


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _artifact_uri(root: str) -> str:
    return root if "://" in root else Path(root).resolve().as_uri()


def _moved_away(location: str) -> bool:
    """A local artifact location that no longer exists (its store was moved)."""
    path = _local_path(location)
    return path is not None and not path.exists()


class Tracker:
    """One MLflow training run; use as a context manager (the run ends FAILED on an
    exception). ``log_metrics`` is the trainer's ``on_log`` callback."""

    def __init__(
        self, cfg: CaprankConfig, run_name: str | None = None, experiment: str = EXPERIMENT
    ):
        import mlflow

        self.cfg = cfg
        self.mlflow = mlflow
        c = client(cfg)
        exp = c.get_experiment_by_name(experiment)
        if exp is not None and _moved_away(exp.artifact_location):
            # the home moved: keep the old experiment's runs (``relocated`` finds their
            # files) under another name, and log new runs inside the moved home
            c.rename_experiment(exp.experiment_id, f"{experiment}-{exp.experiment_id}")
            exp = None
        if exp is None:
            exp_id = c.create_experiment(
                experiment, artifact_location=_artifact_uri(cfg.mlflow_artifact_root())
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
        """Log the bundle as a pyfunc model (artifacts/bundle/...) in the run, servable by
        MLflow alone: the caprank package rides along as code (``code/caprank``, put on
        the path before the model is unpickled) and its requirements are the exact pins
        of what ``caprank.model.pyfunc`` imports (``caprank.model.pyfunc_pins``, written
        by ``make pins`` from the locked venv), all on PyPI; no ``caprank`` requirement,
        which no index has.

        Not registered here: the evaluate stage registers it as a version, with its
        metrics and lineage, so every version in the registry has been evaluated.
        """
        import shutil

        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        import caprank
        from caprank.model.pyfunc import BundlePyfunc
        from caprank.model.pyfunc_pins import PINS

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
        with tempfile.TemporaryDirectory() as tmp:
            code = Path(tmp) / "caprank"
            shutil.copytree(
                Path(caprank.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__")
            )
            self.mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=BundlePyfunc(),
                artifacts={"bundle": str(bundle_dir)},
                signature=signature,
                code_paths=[str(code)],
                pip_requirements=list(PINS),
            )


# ------------------------------------------------------------------------ tuning


def log_tuning(
    cfg: CaprankConfig,
    *,
    overrides: Mapping[str, Any],
    value: float,
    trials: list[dict],
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    run_name: str | None = None,
) -> str:
    """Record a finished study as one run of ``TUNING_EXPERIMENT``: the best trial's
    config overrides (tag ``TUNED_OVERRIDES_TAG``, JSON, what ``tuned_overrides`` reads
    back; also ``best_overrides.json``), its validation MRR, each trial's value by trial
    number, the search's settings as params and every trial as ``trials.json``."""
    import json

    with Tracker(cfg, run_name=run_name, experiment=TUNING_EXPERIMENT) as tracker:
        tracker.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        tracker.set_tags({**tags, TUNED_OVERRIDES_TAG: json.dumps(dict(overrides), sort_keys=True)})
        tracker.log_metrics(0, {"best_valid_mrr": value})
        for t in trials:
            if t.get("value") is not None:
                tracker.log_metrics(int(t["number"]), {"trial_valid_mrr": t["value"]})
        tracker.log_dict(dict(overrides), "best_overrides.json")
        tracker.log_dict({"trials": trials}, "trials.json")
        return tracker.run_id


def tuned_overrides(cfg: CaprankConfig, ref: str) -> tuple[str, dict[str, Any]]:
    """(run id, the best trial's overrides) of the tuning run ``ref`` names: ``latest``
    (the newest finished run of ``TUNING_EXPERIMENT``) or a run id. ``RegistryError``
    when there is none or the run carries no overrides."""
    import json

    c = client(cfg)
    if ref == "latest":
        exp = c.get_experiment_by_name(TUNING_EXPERIMENT)
        found = (
            []
            if exp is None
            else c.search_runs(
                [exp.experiment_id],
                filter_string="attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        )
        if not found:
            raise RegistryError(
                "training.tuned_from=latest but MLflow has no finished tuning run "
                f"(experiment '{TUNING_EXPERIMENT}'): run `caprank tune` first"
            )
        run = found[0]
    else:
        run = _run(c, ref)
    text = run.data.tags.get(TUNED_OVERRIDES_TAG)
    if text is None:
        raise RegistryError(f"MLflow run '{run.info.run_id}' is not a tuning run (no overrides)")
    return run.info.run_id, json.loads(text)


# ----------------------------------------------------------------- registration


# --------------------------------------------------------------------------- an ended run


def metric_history(
    cfg: CaprankConfig, run_id: str, *, skip_prefix: str = "", limit: int | None = None
) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` of a run's metrics logged at more than one step
    (by name; names starting with ``skip_prefix`` left out; at most ``limit`` of them)."""
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

    c = client(cfg)
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(v)]
    for start in range(0, len(batch), 500):
        c.log_batch(run_id, metrics=batch[start : start + 500])
    for key, value in tags.items():
        c.set_tag(run_id, key, value)
    if artifacts_dir is not None:
        c.log_artifacts(run_id, str(artifacts_dir), artifact_path)


def _as_version(mv: Any) -> RegisteredVersion:
    return RegisteredVersion(
        name=mv.name,
        version=str(mv.version),
        source=mv.source,
        run_id=mv.run_id or None,
        aliases=tuple(sorted(getattr(mv, "aliases", None) or ())),
        tags=dict(mv.tags or {}),
    )


def _run(c: Any, run_id: str) -> Any:
    try:
        return c.get_run(run_id)
    except Exception as exc:
        raise RegistryError(f"MLflow run '{run_id}' not found: {exc}") from exc


def logged_model_source(cfg: CaprankConfig, run_id: str, artifact_path: str = MODEL_ARTIFACT):
    """(source URI, logged model id or None) of the run's model at ``artifact_path``, or
    None when the run has neither a logged model of that name nor such artifacts."""
    c = client(cfg)
    run = _run(c, run_id)
    found = c.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{artifact_path}'",
    )
    if len(found):
        model = max(found, key=lambda m: m.creation_timestamp)
        return f"models:/{model.model_id}", model.model_id
    if c.list_artifacts(run_id, artifact_path):
        return f"runs:/{run_id}/{artifact_path}", None
    return None


def log_model_dir(
    cfg: CaprankConfig, run_id: str, model_dir: str | Path, artifact_path: str = MODEL_ARTIFACT
) -> str:
    """Log a model directory's files into the run under ``artifact_path``; its source URI."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RegistryError(f"{model_dir}: model directory does not exist")
    client(cfg).log_artifacts(run_id, str(model_dir), artifact_path)
    return f"runs:/{run_id}/{artifact_path}"


def log_lineage(cfg: CaprankConfig, run_id: str, lineage: Lineage) -> None:
    """The resolved config and the lineage record, as run artifacts under ``lineage/``."""
    with tempfile.TemporaryDirectory() as tmp:
        atomic_write_text(Path(tmp) / "config.yaml", lineage.config_yaml)
        atomic_write_json(Path(tmp) / "lineage.json", lineage.to_dict())
        client(cfg).log_artifacts(run_id, tmp, LINEAGE_DIR)


def register_version(
    cfg: CaprankConfig,
    run_id: str,
    *,
    lineage: Lineage,
    metrics: Mapping[str, float] | None = None,
    extra_tags: Mapping[str, str] | None = None,
    artifact_path: str = MODEL_ARTIFACT,
    alias: str | None = CHALLENGER,
    description: str = "",
) -> RegisteredVersion:
    """Register the run's model as a new version of ``services.registered_model`` with metric
    and lineage tags, log the lineage to the run, and point ``alias`` at the version."""
    import mlflow.exceptions

    c = client(cfg)
    found = logged_model_source(cfg, run_id, artifact_path)
    if found is None:
        raise RegistryError(
            f"MLflow run '{run_id}' has no model at '{artifact_path}' (neither a logged model "
            "nor artifacts): log it before registering"
        )
    source, model_id = found
    name = cfg.services.registered_model
    try:
        c.create_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    tags = dict(lineage.tags())
    for key, value in (metrics or {}).items():
        tags[f"{TAG_PREFIX}metric.{mlflow_key(key)}"] = repr(float(value))
    tags.update(extra_tags or {})
    log_lineage(cfg, run_id, lineage)
    mv = c.create_model_version(
        name, source, run_id=run_id, tags=tags, description=description, model_id=model_id
    )
    if alias:
        c.set_registered_model_alias(name, alias, mv.version)
    return get_version(cfg, str(mv.version))


# ---------------------------------------------------------- versions and aliases


def get_version(cfg: CaprankConfig, version: str) -> RegisteredVersion:
    """The registered ``version`` (a number); ``RegistryError`` when there is none."""
    if not str(version).isdigit():
        raise RegistryError(f"registered model version must be a number, got '{version}'")
    try:
        mv = client(cfg).get_model_version(cfg.services.registered_model, str(version))
    except Exception as exc:
        raise RegistryError(
            f"registered model '{cfg.services.registered_model}' has no version {version}: {exc}"
        ) from exc
    return _as_version(mv)


def set_alias(cfg: CaprankConfig, alias: str, version: str) -> RegisteredVersion:
    """Point ``alias`` at ``version`` (which must exist); returns the version."""
    get_version(cfg, version)
    client(cfg).set_registered_model_alias(cfg.services.registered_model, alias, str(version))
    return get_version(cfg, version)


def alias_version(cfg: CaprankConfig, alias: str) -> RegisteredVersion | None:
    """The version ``alias`` points at, or None when the model or the alias is missing."""
    import mlflow.exceptions

    try:
        mv = client(cfg).get_model_version_by_alias(cfg.services.registered_model, alias)
    except mlflow.exceptions.MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "INVALID_PARAMETER_VALUE" in str(
            exc.error_code
        ):
            return None
        raise
    return _as_version(mv)


def production_version(cfg: CaprankConfig) -> RegisteredVersion | None:
    """The model serving traffic (alias ``production``), or None before the first deploy."""
    return alias_version(cfg, PRODUCTION)


def challenger_version(cfg: CaprankConfig) -> RegisteredVersion | None:
    return alias_version(cfg, CHALLENGER)


def resolve_version(cfg: CaprankConfig, ref: str) -> RegisteredVersion:
    """The version ``ref`` names: a version number or an alias such as ``production``;
    ``RegistryError`` when the registry has no such version."""
    if str(ref).isdigit():
        return get_version(cfg, ref)
    found = alias_version(cfg, ref)
    if found is None:
        raise RegistryError(
            f"registered model '{cfg.services.registered_model}' has no alias '{ref}'"
        )
    return found


def registry_reachable(cfg: CaprankConfig) -> bool:
    """Whether the registry answers at all (tells "no such version" from "cannot ask")."""
    try:
        client(cfg).search_registered_models(max_results=1)
    except Exception:
        return False
    return True


def latest_version(cfg: CaprankConfig) -> str | None:
    """The highest version number of the registered model, or None when there is none
    (or the registry cannot be reached: a caller falls back to the dense ranker)."""
    try:
        found = client(cfg).search_model_versions(f"name='{cfg.services.registered_model}'")
    except Exception:
        return None
    versions = [int(v.version) for v in found]
    return str(max(versions)) if versions else None


def versions(cfg: CaprankConfig, limit: int | None = None) -> list[RegisteredVersion]:
    """The registered model's versions, oldest first (the latest ``limit`` of them); none
    when the model is not registered yet."""
    c, name = client(cfg), cfg.services.registered_model
    found = sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    found = found if limit is None else found[-limit:]
    if not found:
        return []
    # a search leaves the aliases out; the registered model lists them
    aliases: dict[str, list[str]] = {}
    for alias, version in (c.get_registered_model(name).aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    return [
        replace(_as_version(v), aliases=tuple(sorted(aliases.get(str(v.version), ()))))
        for v in found
    ]


# ------------------------------------------------------------------------ download


COMPLETE = ".complete"  # marks a finished download (beside at least one model file)


def _local_path(uri: str) -> Path | None:
    """The local path a ``file:`` URI or a plain path names; None for a remote store."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def _stored_at(c: Any, uri: str) -> str:
    """The storage URI behind a ``runs:/<run>/<path>`` or ``models:/<logged model id>``
    source (what MLflow would resolve it to); other URIs as they are."""
    parsed = urlparse(uri)
    rest = uri.split(":/", 1)[-1].strip("/")
    if parsed.scheme == "runs":
        run_id, _, sub = rest.partition("/")
        base = _run(c, run_id).info.artifact_uri.rstrip("/")
        return f"{base}/{sub}" if sub else base
    if parsed.scheme == "models" and rest and "/" not in rest:
        return c.get_logged_model(rest).artifact_location
    return uri


def relocated(cfg: CaprankConfig, uri: str, run_id: str | None) -> str:
    """``uri`` re-resolved when the store moved: MLflow keeps absolute artifact paths, so a
    local path under the run's experiment root (as it was when the run was logged) that is
    gone is looked up at the same place under ``cfg.mlflow_artifact_root()``, the root
    the moved home has now. Remote URIs and paths that exist are returned as they are."""
    path = _local_path(uri)
    if path is None or path.exists() or run_id is None:
        return uri
    c = client(cfg)
    try:
        old_root = _local_path(
            c.get_experiment(_run(c, run_id).info.experiment_id).artifact_location
        )
    except Exception:
        return uri
    if old_root is None or not path.is_relative_to(old_root):
        return uri
    moved = Path(cfg.mlflow_artifact_root()) / path.relative_to(old_root)
    return moved.as_uri() if moved.exists() else uri


def _download_uri(cfg: CaprankConfig, version: str) -> str:
    """Where the files of ``version`` are now (re-resolved after a move); ``RegistryError``
    naming the path when a local store no longer holds them."""
    import mlflow.exceptions

    name = cfg.services.registered_model
    mv = get_version(cfg, version)
    try:
        uri = client(cfg).get_model_version_download_uri(name, str(version))
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"no storage URI for '{name}' version {version}: {exc}") from exc
    found = relocated(cfg, _stored_at(client(cfg), uri), mv.run_id)
    path = _local_path(found)
    if path is not None and not path.exists():
        raise RegistryError(
            f"registered model '{name}' version {version}: its files are missing: "
            f"{path} does not exist (the registry's record) and neither does the same path "
            f"under the current artifact root {cfg.mlflow_artifact_root()}"
        )
    return found


def _complete(target: Path) -> bool:
    """A finished download: marked, and with a file besides the mark."""
    if not (target / COMPLETE).is_file():
        return False
    return any(p.is_file() and p.name != COMPLETE for p in target.rglob("*"))


def download_version(cfg: CaprankConfig, version: str, target: str | Path) -> Path:
    """Download the files of ``version`` into ``target`` (once: a finished download is
    marked ``.complete`` and reused; a failed or empty one leaves nothing behind and is
    retried by the next call)."""
    target = Path(target)
    if _complete(target):
        return target
    uri = _download_uri(cfg, version)
    import mlflow

    with atomic_dir(target) as tmp:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp))
        if not any(p.is_file() for p in tmp.rglob("*")):
            raise RegistryError(
                f"registered model '{cfg.services.registered_model}' version {version}: "
                f"nothing to download at {uri}"
            )
        atomic_write_text(tmp / COMPLETE, str(version))
    return target


def version_storage_uri(cfg: CaprankConfig, version: str) -> str:
    """Where the files of ``version`` live (s3://, gs://, a path): what KServe's storage
    initializer downloads into ``/mnt/models`` (a local store re-resolved after a move)."""
    return storage_location(_download_uri(cfg, version), cfg.services.mlflow_artifacts_destination)


def storage_location(uri: str, artifacts_destination: str) -> str:
    """``uri`` as KServe can read it: an MLflow server that proxies artifacts answers
    ``mlflow-artifacts:/<path>``, stored at ``<artifacts_destination>/<path>``."""
    parsed = urlparse(uri)
    if parsed.scheme != "mlflow-artifacts":
        return uri
    path = parsed.path.lstrip("/")  # mlflow-artifacts://host:port/<path>: host is the server
    if not artifacts_destination:
        raise RegistryError(
            f"{uri} is proxied by the MLflow server; set "
            "services.mlflow_artifacts_destination to its --artifacts-destination"
        )
    return f"{artifacts_destination.rstrip('/')}/{path}"
