"""The deploy stage: roll a registered model version out, then promote it or roll it back.

One function, two targets, the same controller (``run_rollout``):

- **cluster**: the KServe InferenceService (``services.inference_service``) through the
  kubernetes client: canary at ``canary.traffic_percent``% with the version's storage URI
  (from the registry unless given), readiness, guardrails from Prometheus and the
  feedback log, then promote or roll back.
- **local** (``make run``, no cluster): an in-process predictor serving what `caprank
  serve` would serve now (the `production` version, else the dense ranker) gets the new
  version as its canary; ``canary.local_requests`` synthetic-but-real requests run
  through the engine over the window (topped up until each arm has
  ``canary.min_requests``), on a virtual clock, and the same guardrails decide.

``canary.strategy`` ``blue_green`` warms the new version with no traffic and then switches
all of it at once. On the cluster a promotion is watched (``canary.watch``,
``caprank.deploy.watch``) against the previous version's feedback, and rolled back with
the alias if it does worse; the local target has no outcomes, so it is not watched.

Only a promotion moves the MLflow alias `production`. The rollout record (an annotation
on the InferenceService, or ``<home>/deploy/local-rollout.json``) makes a re-run after a
crash resume where it stopped, and a re-run after the end return the same decision.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from caprank.config import CanaryConfig, CaprankConfig
from caprank.deploy.backend import RolloutBackend
from caprank.deploy.controller import RolloutResult, run_rollout
from caprank.deploy.guardrails import FeedbackLogQuality
from caprank.deploy.state import RolloutState, rollout_state_path
from caprank.online.sinks import event_reader
from caprank.registry import PRODUCTION, get_version, set_alias, version_storage_uri

if TYPE_CHECKING:
    from caprank.deploy.traffic import SyntheticTraffic
    from caprank.online.runtime import Runtime

log = logging.getLogger(__name__)

Target = Literal["local", "cluster", "fleet"]


@dataclass
class DeployResult:
    """The decision and what it rests on (the component's output and summary)."""

    target: Target
    outcome: str  # promoted | rolled_back | unchanged
    model_version: str
    storage_uri: str
    previous: str | None
    reason: str
    resumed: bool
    production_version: str | None  # the alias after the stage
    metrics: dict = field(default_factory=dict)
    unmeasured: list[str] = field(default_factory=list)
    traffic: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    watch: dict = field(default_factory=dict)  # the post-promotion comparison, if watched

    def to_json(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        rows = [
            ("decision", f"**{self.outcome}**"),
            ("target", self.target),
            ("model version", self.model_version),
            ("storage URI", f"`{self.storage_uri}`"),
            ("replaced / kept", f"`{self.previous}`" if self.previous else "nothing served"),
            ("reason", self.reason or "-"),
            ("resumed after a restart", "yes" if self.resumed else "no"),
            ("`production` alias now", self.production_version or "unset"),
        ]
        measured = {k: v for k, v in self.metrics.items() if v is not None}
        if measured:
            inputs = ", ".join(f"{k} {_fmt(v)}" for k, v in measured.items())
            rows.append(("guardrail inputs", inputs))
        if self.unmeasured:
            rows.append(("not measured", ", ".join(self.unmeasured)))
        if self.watch:
            rows.append(("watch after promotion", self.watch.get("reason") or self.watch["mode"]))
        if self.traffic:
            rows.append(("synthetic traffic", json.dumps(self.traffic, sort_keys=True)))
        lines = ["## Deploy", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows]
        lines += [f"\n- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def resolve_target(cfg: CaprankConfig, environ: dict[str, str] | None = None) -> Target:
    """``canary.target``; ``auto`` is cluster inside a Kubernetes pod, else local."""
    target = cfg.canary.target
    if target != "auto":
        return target
    env = os.environ if environ is None else environ
    return "cluster" if env.get("KUBERNETES_SERVICE_HOST") else "local"


def deploy(
    cfg: CaprankConfig,
    model_version: str,
    storage_uri: str | None = None,
    *,
    model_dir: str | Path | None = None,
    target: Target | None = None,
    backend: RolloutBackend | None = None,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployResult:
    """Roll out registered ``model_version`` and return the decision.

    ``storage_uri`` overrides where the model is read from (cluster: default the
    registry's storage URI of the version; local: default ``model_dir``, else the
    registry). ``backend`` replaces the KServe backend (tests use a fake API).
    """
    version = str(model_version).strip()
    get_version(cfg, version)
    target = target or resolve_target(cfg)
    if target == "cluster":
        return _deploy_cluster(cfg, version, storage_uri, backend, now, sleep)
    if target == "fleet":
        return _deploy_fleet(cfg, version, backend, now, sleep)
    return _deploy_local(cfg, version, storage_uri, model_dir)


def _rollout(
    cfg: CaprankConfig,
    backend: RolloutBackend,
    uri: str,
    version: str,
    canary: CanaryConfig | None = None,
    **clock_and_quality,
) -> RolloutResult:
    """The controller both targets run; only its promotion moves the `production` alias."""

    def promote(state: RolloutState) -> None:
        set_alias(cfg, PRODUCTION, state.model_version)
        log.info("alias %s -> version %s", PRODUCTION, state.model_version)

    def restore(state: RolloutState) -> None:
        if state.previous_version:
            set_alias(cfg, PRODUCTION, state.previous_version)
            log.info("alias %s -> version %s again", PRODUCTION, state.previous_version)

    return run_rollout(
        backend,
        uri,
        version,
        canary or cfg.canary,
        on_promote=promote,
        on_rollback=restore,
        previous_version=production_of(cfg),
        **clock_and_quality,
    )


LOCAL_UNMEASURABLE = "success_rate"  # synthetic traffic has no outcomes to measure


def local_canary_config(cfg: CaprankConfig) -> CanaryConfig:
    """``cfg.canary`` for the in-process canary: its synthetic requests carry no outcomes,
    so quality is allowed to go unmeasured there (said in the result's notes); every
    other guardrail must still be measured."""
    allowed = sorted({*cfg.canary.allow_unmeasured, LOCAL_UNMEASURABLE})
    return cfg.canary.model_copy(update={"allow_unmeasured": allowed})


def _from_rollout(
    target: Target, cfg: CaprankConfig, version: str, uri: str, result: RolloutResult
) -> DeployResult:
    state = result.state
    return DeployResult(
        target=target,
        outcome=result.outcome,
        model_version=state.model_version if state else version,
        storage_uri=uri,
        previous=state.previous_uri if state else uri,
        reason=result.reason,
        resumed=result.resumed,
        production_version=production_of(cfg),
        metrics=dict(state.metrics) if state else {},
        unmeasured=list(result.unmeasured),
        watch=dict(state.watch) if state else {},
    )


# ------------------------------------------------------------------------ cluster


def _deploy_cluster(cfg, version, storage_uri, backend, now, sleep) -> DeployResult:
    uri = storage_uri or version_storage_uri(cfg, version)
    if backend is None:
        from caprank.deploy.kserve import kserve_backend

        backend = kserve_backend(cfg)
    quality = FeedbackLogQuality(event_reader(cfg))
    result = _rollout(cfg, backend, uri, version, quality=quality, now=now, sleep=sleep)
    return _from_rollout("cluster", cfg, version, uri, result)


def _deploy_fleet(cfg, version, backend, now, sleep) -> DeployResult:
    """The replicas load registry versions themselves: the model reference is ``version``."""
    if backend is None:
        from caprank.deploy.fleet import fleet_backend

        backend = fleet_backend(cfg)
    quality = FeedbackLogQuality(event_reader(cfg))
    result = _rollout(cfg, backend, version, version, quality=quality, now=now, sleep=sleep)
    return _from_rollout("fleet", cfg, version, version, result)


# -------------------------------------------------------------------------- local


def _read_state(path: Path) -> RolloutState | None:
    if not path.is_file():
        return None
    return RolloutState.from_json(path.read_text(encoding="utf-8"), str(path))


def _deploy_local(cfg, version, storage_uri, model_dir) -> DeployResult:
    local_dir = Path(model_dir).resolve() if model_dir and Path(model_dir).is_dir() else None
    uri = storage_uri or (str(local_dir) if local_dir else version)
    state_file = rollout_state_path(cfg)
    state = _read_state(state_file)
    notes: list[str] = []

    if state is not None and state.new_uri == uri and state.finished:
        result = RolloutResult(
            "promoted" if state.phase == "promoted" else "rolled_back",
            state,
            state.reason,
            resumed=True,
        )
        return _from_rollout("local", cfg, version, uri, result)
    if state is not None and state.active and state.new_uri != uri:
        _abandon(state_file, state)
        notes.append(f"an unfinished local rollout of {state.new_uri} was marked abandoned")
        state = None

    production = production_of(cfg)
    if production == version and (state is None or state.new_uri != uri):
        reason = f"version {version} is already `{PRODUCTION}`"
        return DeployResult(
            "local", "unchanged", version, uri, production, reason, False, production, notes=notes
        )
    resume = state if state is not None and state.new_uri == uri and state.active else None
    return _local_canary(cfg, version, uri, local_dir, production, resume, notes)


def _abandon(state_file: Path, state: RolloutState) -> None:
    """The local canary lived only in the process that ran it; that process is gone."""
    from caprank.files import atomic_write_text

    abandoned = replace(
        state,
        phase="rolled_back",
        reason=f"abandoned: the process holding the local canary of {state.new_uri} exited",
        finished_at=time.time(),
    )
    atomic_write_text(state_file, abandoned.to_json())


def _local_canary(
    cfg: CaprankConfig,
    version: str,
    uri: str,
    local_dir: Path | None,
    production: str | None,
    resume: RolloutState | None,
    notes: list[str],
) -> DeployResult:
    """Serve `production` (else the dense ranker) in-process, canary ``uri`` beside it,
    and let synthetic traffic on a virtual clock feed the same controller as the cluster."""
    from caprank.deploy.local import LocalBackend
    from caprank.deploy.traffic import VirtualClock, local_inputs
    from caprank.online.runtime import DENSE_REF, Runtime

    catalog, intents = local_inputs(cfg, local_dir, cfg.canary.local_intents)
    runtime = Runtime(cfg, production or DENSE_REF, catalog=catalog)
    runtime.start(background_load=False, feedback=False)
    try:
        if runtime.load_error:
            notes.append(f"`{PRODUCTION}` (version {production}) failed to load: "
                         f"{runtime.load_error}; the new model replaces it outright")  # fmt: skip
        backend = LocalBackend(
            runtime.engine,
            lambda ref, v: runtime.load(ref, v or None),
            rollout_state_path(cfg),
            cfg.canary.mode,
        )
        if resume is not None:
            _reinstall_canary(backend, resume)
            notes.append(f"resumed an unfinished local rollout from phase '{resume.phase}'")
        traffic = _synthetic_traffic(cfg, runtime, intents)
        clock = VirtualClock(traffic.run_for)
        runtime.engine.observe_on(clock.now)
        canary = local_canary_config(cfg)
        result = _rollout(cfg, backend, uri, version, canary, now=clock.now, sleep=clock.sleep)
        out = _from_rollout("local", cfg, version, uri, result)
        if LOCAL_UNMEASURABLE not in cfg.canary.allow_unmeasured:
            notes.append(
                "quality (success_rate) is not judged locally: the synthetic requests "
                "carry no outcomes; the cluster canary must measure it"
            )
        out.traffic = traffic.summary()
        out.notes = notes
        return out
    finally:
        runtime.close()


def _synthetic_traffic(
    cfg: CaprankConfig, runtime: Runtime, intents: list[str]
) -> SyntheticTraffic:
    """Enough requests for ``canary.min_requests`` on both arms, however busy the machine."""
    from caprank.deploy.traffic import SyntheticTraffic

    canary = cfg.canary
    return SyntheticTraffic(
        runtime,
        intents,
        total=canary.local_requests,
        window_s=canary.window_s,
        min_per_model=canary.min_requests,
        seed=cfg.data.seed,
    )


def _reinstall_canary(backend, state: RolloutState) -> None:
    """After a crash the in-memory canary is gone: load it again, and restart an
    observation (its requests were lost with the process) from the beginning."""
    if state.phase in ("canary", "observing"):
        state = replace(state, phase="canary", started_at=time.time(), observe_started_at=None)
    if state.phase in ("canary", "promoting"):
        backend.set_canary(state)


def production_of(cfg: CaprankConfig) -> str | None:
    """The version number behind `production`, or None before the first promotion."""
    from caprank.registry import production_version

    found = production_version(cfg)
    return found.version if found else None
