"""The canary rollout controller: one model version from canary to promote or rollback.

Steps: route ``canary.traffic_percent``% to the new model (``blue_green``: deploy it with
no traffic, and once ready switch all of it at once), wait for its generation to be
ready (``ready_timeout_s``), watch the guardrails for ``window_s`` polling every
``poll_s``, then promote (and call ``on_promote``) or roll back to the previous URI.
With a quality source and a previous version, a promotion is watched first
(``caprank.deploy.watch``): the alias moves and the new model takes the traffic, the
previous keeps a holdback (or none, in shadow mode) for ``watch.period_s``, and a
significantly worse success rate rolls both back (``on_rollback`` restores the alias).
Every transition is persisted through the backend before the next step, so running the
controller again after a crash resumes where it stopped instead of patching twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from caprank.config import CanaryConfig
from caprank.deploy.backend import (
    CanaryMetrics,
    MetricsUnavailable,
    QualitySource,
    Readiness,
    RolloutBackend,
)
from caprank.deploy.guardrails import breach, unmeasured, unmeasured_refusal
from caprank.deploy.state import RolloutState
from caprank.deploy.watch import start_watch, watch_applies, watch_step
from caprank.errors import CaprankError

log = logging.getLogger(__name__)

Outcome = Literal["promoted", "rolled_back", "unchanged"]


class RolloutError(CaprankError):
    """A rollout cannot start or cannot finish (the state says where it stopped)."""


@dataclass
class RolloutResult:
    outcome: Outcome
    state: RolloutState | None
    reason: str = ""
    resumed: bool = False
    unmeasured: list[str] = field(default_factory=list)


@dataclass
class _Clock:
    now: Callable[[], float]
    sleep: Callable[[float], None]


def run_rollout(
    backend: RolloutBackend,
    new_uri: str,
    model_version: str,
    cfg: CanaryConfig,
    *,
    on_promote: Callable[[RolloutState], None] | None = None,
    on_rollback: Callable[[RolloutState], None] | None = None,
    quality: QualitySource | None = None,
    previous_version: str | None = None,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> RolloutResult:
    """Roll ``new_uri`` out through ``backend``, or resume the rollout already under way.

    ``on_promote`` runs once the new model takes the traffic (at the start of the watch
    when there is one); ``on_rollback`` runs after a rollback that follows it (the watch
    found the new model worse). Both must be idempotent, since a crash right after one
    means it runs again on resume. ``previous_version`` (the registry version serving
    now) enables the watch.
    """
    clock = _Clock(now, sleep)
    state = backend.get_state()
    resumed = False
    if state is not None and state.new_uri == new_uri and not state.finished:
        resumed = True
        log.info("resuming rollout of %s from phase %s", new_uri, state.phase)
    elif state is not None and state.active:
        raise RolloutError(
            f"a rollout of {state.new_uri} is in phase '{state.phase}'; run the controller "
            "for that URI to finish it before starting another"
        )
    elif state is not None and state.new_uri == new_uri:
        return _result(state, cfg, resumed=True)
    else:
        live = backend.live()
        if live.uri == new_uri and live.ready:
            return RolloutResult("unchanged", state, f"{new_uri} already serves")
        initial = live.uri is None or not live.ready
        blue_green = cfg.strategy == "blue_green" and not initial
        state = RolloutState(
            new_uri=new_uri,
            model_version=model_version,
            previous_uri=live.uri,
            traffic_percent=100 if initial else 0 if blue_green else cfg.traffic_percent,
            mode=live.mode,
            phase="canary",
            started_at=clock.now(),
            initial=initial,
            strategy=cfg.strategy,
            previous_version=previous_version,
        )
        log.info(
            "rollout of %s (version %s): %s%% canary beside %s",
            new_uri,
            model_version,
            state.traffic_percent,
            live.uri,
        )
        backend.set_canary(state)

    while True:
        if state.phase == "canary":
            state = _await_ready(backend, state, cfg, clock)
        elif state.phase == "observing":
            state = _observe(backend, state, cfg, clock, quality)
        elif state.phase == "watching":
            if quality is None:
                raise RolloutError(
                    f"the rollout of {state.new_uri} is being watched: resume it with the "
                    "quality source it started with"
                )
            if state.watch_started_at is None:
                state = start_watch(backend, state, cfg, quality, clock.now(), on_promote)
            else:
                state = watch_step(backend, state, cfg, quality, clock.now(), clock.sleep)
        elif state.phase == "promoting":
            state = replace(state, phase="promoted", finished_at=clock.now())
            backend.promote(state)
        elif state.phase == "promoted":
            if not state.hook_done:
                if on_promote is not None:
                    on_promote(state)
                state = replace(state, hook_done=True)
                backend.save_state(state)
            return _result(state, cfg, resumed)
        elif state.phase == "rolling_back":
            state = _roll_back(backend, state, cfg, clock)
        else:  # rolled_back
            if state.hook_done and not state.restored:
                if on_rollback is not None:
                    on_rollback(state)
                state = replace(state, restored=True)
                backend.save_state(state)
            return _result(state, cfg, resumed)


def _result(state: RolloutState, cfg: CanaryConfig, resumed: bool) -> RolloutResult:
    outcome: Outcome = "promoted" if state.phase == "promoted" else "rolled_back"
    metrics = CanaryMetrics(**state.metrics) if state.metrics else CanaryMetrics()
    return RolloutResult(outcome, state, state.reason, resumed, unmeasured(metrics, cfg))


def _start_rollback(backend: RolloutBackend, state: RolloutState, reason: str, now: float):
    log.warning("rolling back %s: %s", state.new_uri, reason)
    state = replace(state, phase="rolling_back", reason=reason, rollback_started_at=now)
    backend.save_state(state)
    return state


def _await_ready(backend: RolloutBackend, state: RolloutState, cfg: CanaryConfig, clock: _Clock):
    check = backend.ready(state)
    if check.status is Readiness.READY:
        if state.strategy == "blue_green" and not state.initial and state.traffic_percent < 100:
            state = replace(state, traffic_percent=100)  # warmed: switch all traffic at once
            backend.shift(state)
        if state.initial:
            state = replace(state, phase="promoting", reason="initial deployment")
        else:
            state = replace(state, phase="observing", observe_started_at=clock.now())
        backend.save_state(state)
        return state
    if check.status is Readiness.FAILED:
        return _start_rollback(backend, state, f"new model failed: {check.message}", clock.now())
    waited = clock.now() - state.started_at
    if waited >= cfg.ready_timeout_s:
        reason = f"not ready after {waited:.0f}s (ready_timeout_s {cfg.ready_timeout_s})"
        if check.message:
            reason += f": {check.message}"
        return _start_rollback(backend, state, reason, clock.now())
    clock.sleep(min(cfg.poll_s, cfg.ready_timeout_s - waited))
    return state


def _measure(
    backend: RolloutBackend,
    state: RolloutState,
    elapsed: float,
    quality: QualitySource | None,
) -> CanaryMetrics:
    metrics = backend.metrics(state, elapsed)
    if quality is None or state.observe_started_at is None:
        return metrics
    since = state.observe_started_at
    successes, events = quality.success_counts(state.model_version, since)
    if not events and metrics.feedback:
        return metrics  # the backend measured outcomes (the pods' counters); keep them
    base_successes, base_events = quality.baseline_counts(state.model_version, since)
    return replace(
        metrics,
        feedback=events,
        success_rate=(successes / events) if events else None,
        baseline_feedback=base_events,
        baseline_success_rate=(base_successes / base_events) if base_events else None,
    )


def _observe(
    backend: RolloutBackend,
    state: RolloutState,
    cfg: CanaryConfig,
    clock: _Clock,
    quality: QualitySource | None,
):
    assert state.observe_started_at is not None
    elapsed = clock.now() - state.observe_started_at
    final = elapsed >= cfg.window_s
    try:
        metrics = _measure(backend, state, elapsed, quality)
    except MetricsUnavailable as exc:
        if final:
            reason = f"guardrail metrics unavailable: {exc}"
            return _start_rollback(backend, state, reason, clock.now())
        log.warning("guardrail metrics unavailable this poll: %s", exc)
        clock.sleep(min(cfg.poll_s, cfg.window_s - elapsed))
        return state
    broken = breach(metrics, cfg, final=final)
    if broken is not None:
        state = replace(state, metrics=metrics.as_dict())
        return _start_rollback(backend, state, broken, clock.now())
    if final:
        refusal = unmeasured_refusal(metrics, cfg)
        if refusal is not None:
            state = replace(state, metrics=metrics.as_dict())
            return _start_rollback(backend, state, refusal, clock.now())
        following = "watching" if watch_applies(state, cfg, quality) else "promoting"
        state = replace(state, phase=following, metrics=metrics.as_dict(), reason="guardrails held")
        backend.save_state(state)
        return state
    clock.sleep(min(cfg.poll_s, cfg.window_s - elapsed))
    return state


def _roll_back(backend: RolloutBackend, state: RolloutState, cfg: CanaryConfig, clock: _Clock):
    if backend.rollback(state):
        state = replace(state, phase="rolled_back", finished_at=clock.now())
        backend.save_state(state)
        return state
    started = state.rollback_started_at if state.rollback_started_at is not None else clock.now()
    if clock.now() - started >= cfg.ready_timeout_s:
        raise RolloutError(
            f"rollback to {state.previous_uri} did not complete within ready_timeout_s "
            f"({cfg.ready_timeout_s}s); canary traffic is off, rerun to finish"
        )
    clock.sleep(cfg.poll_s)
    return state
