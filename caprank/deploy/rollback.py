"""`caprank rollback --to VERSION`: put a registered version back by hand, at once.

What the watch does automatically, for an operator: the `production` alias moves to
VERSION and, on the cluster target, the InferenceService serves VERSION's storage URI
(on the fleet target, every replica serves VERSION)
alone (any canary dropped), waited on until its generation is ready. The rollout record
says it was a rollback by hand. A rollout still under way is refused (rerun `deploy`
to finish it first): two writers on one InferenceService would fight. Locally there is
no long-lived server to patch: the alias is what `caprank serve` loads at start-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from caprank.config import CaprankConfig
from caprank.deploy.backend import Readiness, RolloutBackend
from caprank.deploy.controller import RolloutError
from caprank.deploy.stage import DeployResult, Target, production_of, resolve_target
from caprank.deploy.state import RolloutState
from caprank.registry import PRODUCTION, get_version, set_alias, version_storage_uri

log = logging.getLogger(__name__)


def rollback_to(
    cfg: CaprankConfig,
    version: str,
    *,
    target: Target | None = None,
    backend: RolloutBackend | None = None,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployResult:
    """Serve registered ``version`` alone and point `production` at it."""
    version = str(version).strip()
    get_version(cfg, version)
    target = target or resolve_target(cfg)
    before = production_of(cfg)
    reason = f"rollback by hand to version {version}"
    if target == "local":
        set_alias(cfg, PRODUCTION, version)
        return DeployResult(
            "local", "rolled_back", version, version, before, reason, False, version,
            notes=["a running `caprank serve` loads the alias at start-up: restart it"],
        )  # fmt: skip
    if target == "fleet":  # the replicas load registry versions themselves
        uri = version
        if backend is None:
            from caprank.deploy.fleet import fleet_backend

            backend = fleet_backend(cfg)
    else:
        uri = version_storage_uri(cfg, version)
        if backend is None:
            from caprank.deploy.kserve import kserve_backend

            backend = kserve_backend(cfg)
    current = backend.get_state()
    if current is not None and current.active:
        raise RolloutError(
            f"a rollout of {current.new_uri} is in phase '{current.phase}'; rerun `caprank "
            "pipeline`'s deploy (or the deploy component) to finish it before a rollback"
        )
    live = backend.live()
    state = RolloutState(
        new_uri=uri,
        model_version=version,
        previous_uri=live.uri,
        traffic_percent=100,
        mode=live.mode,
        phase="canary",
        started_at=now(),
        initial=True,
        reason=reason,
        previous_version=before,
    )
    backend.set_canary(state)  # initial: one patch making ``uri`` the only model
    _await(backend, state, cfg.canary.ready_timeout_s, cfg.canary.poll_s, now, sleep)
    set_alias(cfg, PRODUCTION, version)
    state = replace(state, phase="promoted", hook_done=True, finished_at=now())
    backend.save_state(state)
    log.info("rolled back by hand: %s -> version %s (%s)", before, version, uri)
    return DeployResult(
        target, "rolled_back", version, uri, live.uri, reason, False, production_of(cfg)
    )


def _await(backend, state, timeout_s, poll_s, now, sleep) -> None:
    started = now()
    while True:
        check = backend.ready(state)
        if check.status is Readiness.READY:
            return
        waited = now() - started
        if check.status is Readiness.FAILED or waited >= timeout_s:
            raise RolloutError(
                f"rollback to {state.new_uri} is not ready after {waited:.0f}s "
                f"({check.message or check.status.value}); the alias was not moved"
            )
        sleep(min(poll_s, timeout_s - waited))
