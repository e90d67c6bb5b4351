"""Submitting the compiled pipeline to a KFP endpoint, and keeping its nightly schedule.

Both go through a pipeline *version* named after the content hash of the package, so
submitting the same package twice reuses one version, and the recurring run points at
the exact spec it was created from. Caching is switched off in the uploaded spec itself
(every task, nested DAGs included): KFP ignores ``enable_caching`` for runs that
reference a stored version, and our steps read data that changes every day.

The resolved config travels with every run and schedule as the ``config_yaml``
parameter (when the package declares one and the caller did not pass it), so the pods
run with the config that was submitted, not with the image's defaults. Values that
embed a password (a URL's user:password part) are left out: pods take those from the
credentials Secret (``pipeline.secret``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import yaml

from caprank.config import CaprankConfig, dump_yaml
from caprank.cron import validate_kfp_cron
from caprank.errors import CaprankError
from caprank.files import atomic_write_text, text_hash
from pipelines import MODES, compiled_path


class SubmitError(CaprankError):
    """The pipeline package or the KFP endpoint is not as submission needs."""


class KfpClient(Protocol):
    """The methods of ``kfp.Client`` (kfp 2.17) that submission calls, keywords as there."""

    def get_pipeline_id(self, name: str) -> str | None: ...
    def upload_pipeline(self, pipeline_package_path: str, **kw: Any) -> Any: ...
    def upload_pipeline_version(
        self, pipeline_package_path: str, pipeline_version_name: str, **kw: Any
    ) -> Any: ...
    def list_pipeline_versions(self, pipeline_id: str, **kw: Any) -> Any: ...
    def create_experiment(self, name: str, **kw: Any) -> Any: ...
    def run_pipeline(self, experiment_id: str, job_name: str, **kw: Any) -> Any: ...
    def list_recurring_runs(self, **kw: Any) -> Any: ...
    def create_recurring_run(self, experiment_id: str, job_name: str, **kw: Any) -> Any: ...
    def delete_recurring_run(self, recurring_run_id: str) -> Any: ...


@dataclass(frozen=True)
class PipelineVersion:
    pipeline_id: str
    version_id: str
    version_name: str
    created: bool


@dataclass(frozen=True)
class Submitted:
    run_id: str
    experiment_id: str
    version: PipelineVersion


@dataclass(frozen=True)
class Scheduled:
    recurring_run_id: str
    action: str  # "created" | "updated" | "unchanged"
    version: PipelineVersion
    removed: tuple[str, ...] = ()


def _name_filter(name: str) -> str:
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    )


def load_package(path: str | Path) -> list[dict]:
    """The YAML documents of a compiled pipeline (pipeline spec, then platform spec)."""
    path = Path(path)
    if not path.is_file():
        raise SubmitError(
            f"{path}: compiled pipeline not found (run `caprank pipeline compile` first)"
        )
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except yaml.YAMLError as exc:
        raise SubmitError(f"{path}: not valid YAML ({exc})") from exc
    if not docs or not isinstance(docs[0], dict) or "root" not in docs[0]:
        raise SubmitError(f"{path}: not a compiled KFP pipeline (no 'root' in the first document)")
    return docs


CONFIG_PARAM = "config_yaml"


def _has_password(value: Any) -> bool:
    if not isinstance(value, str) or "://" not in value:
        return False
    try:
        return bool(urlsplit(value).password)
    except ValueError:
        return False


def _drop_credentials(node: Any, prefix: str, dropped: list[str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if _has_password(value):
                dropped.append(f"{prefix}{key}")
            else:
                out[key] = _drop_credentials(value, f"{prefix}{key}.", dropped)
        return out
    return node


def run_config_yaml(cfg: CaprankConfig) -> tuple[str, list[str]]:
    """The resolved config as the run's ``config_yaml``, and the keys left out because
    their value embeds a password (the pods read those from the credentials Secret)."""
    dropped: list[str] = []
    tree = _drop_credentials(yaml.safe_load(dump_yaml(cfg)), "", dropped)
    return yaml.safe_dump(tree, sort_keys=False), dropped


def declared_params(docs: list[dict]) -> set[str]:
    """The root input parameters a compiled pipeline declares."""
    return set(docs[0].get("root", {}).get("inputDefinitions", {}).get("parameters", {}))


def run_params(cfg: CaprankConfig, package: str | Path, params: dict[str, Any] | None) -> dict:
    """``params`` plus the resolved config as ``config_yaml`` when the package takes it
    and the caller did not set it. A ``mode`` other than ``MODES`` is refused: the DAG
    would quietly run a full retrain for it."""
    out = dict(params or {})
    if "mode" in out and out["mode"] not in MODES:
        raise SubmitError(f"pipeline parameter mode={out['mode']!r}: expected one of {MODES}")
    if CONFIG_PARAM not in out and CONFIG_PARAM in declared_params(load_package(package)):
        out[CONFIG_PARAM] = run_config_yaml(cfg)[0]
    return out


def set_caching(docs: list[dict], enabled: bool) -> list[dict]:
    """Set every task's cache option, in the root DAG and in every nested DAG."""
    spec = docs[0]
    dags = [spec["root"].get("dag", {})]
    dags += [c["dag"] for c in spec.get("components", {}).values() if "dag" in c]
    for dag in dags:
        for task in dag.get("tasks", {}).values():
            task["cachingOptions"] = {"enableCache": True} if enabled else {}
    return docs


def prepare_package(source: str | Path, out_dir: str | Path, *, enable_caching: bool) -> Path:
    """Write the package to upload (caching set) and return its path; its name carries
    the content hash, which names the pipeline version."""
    docs = set_caching(load_package(source), enable_caching)
    text = yaml.safe_dump_all(docs, sort_keys=True)
    path = Path(out_dir) / f"{Path(source).stem}-{text_hash(text)[:12]}.yaml"
    atomic_write_text(path, text)
    return path


def ensure_version(client: KfpClient, package: Path, pipeline_name: str) -> PipelineVersion:
    """The pipeline version named after the package's hash: found, or uploaded.

    A new pipeline gets KFP's default version (named like the pipeline) plus ours, so
    that every version we run is named by content and found again next time.
    """
    version_name = f"{pipeline_name}-{package.stem.rsplit('-', 1)[-1]}"
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=pipeline_name).pipeline_id
    else:
        found = client.list_pipeline_versions(
            pipeline_id, filter=_name_filter(version_name)
        ).pipeline_versions
        if found:
            return PipelineVersion(pipeline_id, found[0].pipeline_version_id, version_name, False)
    version = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id)
    return PipelineVersion(pipeline_id, version.pipeline_version_id, version_name, True)


def submit_run(
    client: KfpClient,
    cfg: CaprankConfig,
    *,
    package: str | Path | None = None,
    params: dict[str, Any] | None = None,
    run_name: str | None = None,
) -> Submitted:
    """Upload (or reuse) the package's version and start one run of it, with the
    resolved config as ``config_yaml`` (see ``run_params``).

    ``package``: default ``compiled_path(cfg)``, what ``caprank pipeline compile`` wrote.
    """
    package = package or compiled_path(cfg)
    params = run_params(cfg, package, params)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_package(package, tmp, enable_caching=cfg.pipeline.enable_caching)
        version = ensure_version(client, prepared, cfg.pipeline.name)
    experiment = client.create_experiment(cfg.pipeline.experiment)
    run = client.run_pipeline(
        experiment.experiment_id,
        run_name or f"{cfg.pipeline.name} {version.version_name}",
        params=params,
        pipeline_id=version.pipeline_id,
        version_id=version.version_id,
    )
    return Submitted(run.run_id, experiment.experiment_id, version)


def _matches(job: Any, version: PipelineVersion, cron: str, params: dict) -> bool:
    ref = job.pipeline_version_reference
    schedule = job.trigger.cron_schedule if job.trigger else None
    trigger_cron = schedule.cron if schedule else None
    mode = getattr(job.mode, "value", job.mode)
    return (
        ref is not None
        and ref.pipeline_id == version.pipeline_id
        and ref.pipeline_version_id == version.version_id
        and trigger_cron == cron
        and str(job.max_concurrency) == "1"
        and job.no_catchup is True
        and ((job.runtime_config.parameters if job.runtime_config else None) or {}) == params
        and str(mode) in ("ENABLE", "RecurringRunMode.ENABLE")
    )


def schedule_nightly(
    client: KfpClient,
    cfg: CaprankConfig,
    *,
    cron: str | None = None,
    package: str | Path | None = None,
    params: dict[str, Any] | None = None,
) -> Scheduled:
    """Create or update the recurring run named ``pipeline.schedule_name``, idempotently.

    KFP cannot edit a recurring run, so an outdated one is replaced: the new one is
    created first and the old ones deleted after, so a crash in between never leaves
    the pipeline unscheduled, and a rerun cleans up what remains. The schedule carries
    the resolved config as ``config_yaml``; a changed config updates it.
    """
    package = package or compiled_path(cfg)
    cron = validate_kfp_cron(cron or cfg.pipeline.cron)
    params = run_params(cfg, package, params)
    name = cfg.pipeline.schedule_name
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_package(package, tmp, enable_caching=cfg.pipeline.enable_caching)
        version = ensure_version(client, prepared, cfg.pipeline.name)
    experiment = client.create_experiment(cfg.pipeline.experiment)
    existing = []
    token = ""
    while True:
        page = client.list_recurring_runs(
            page_token=token,
            page_size=100,
            experiment_id=experiment.experiment_id,
            filter=_name_filter(name),
        )
        existing += [j for j in page.recurring_runs or [] if j.display_name == name]
        token = page.next_page_token or ""
        if not token:
            break
    keep = next((j for j in existing if _matches(j, version, cron, params)), None)
    action = "unchanged"
    if keep is None:
        keep = client.create_recurring_run(
            experiment.experiment_id,
            name,
            description=f"nightly retraining of {cfg.pipeline.name}",
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            params=params,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            enabled=True,
        )
        action = "updated" if existing else "created"
    removed = []
    for job in existing:
        if job.recurring_run_id != keep.recurring_run_id:
            client.delete_recurring_run(job.recurring_run_id)
            removed.append(job.recurring_run_id)
    return Scheduled(keep.recurring_run_id, action, version, tuple(removed))
