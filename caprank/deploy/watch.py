"""The watch after a promotion: keep the previous version at hand, and go back to it if
the new one does worse in traffic.

When the canary's guardrails hold (or a blue-green switch survives its window), the
controller moves the `production` alias and gives the new version the traffic, less
``watch.holdback_percent``% that the previous version keeps (``holdback`` mode); in
``shadow`` mode (and for blue-green) the new version takes it all and the previous stays
deployed, with no traffic, for an instant switch back. For ``watch.period_s`` error rate
and latency are held to the guardrails; at its end the new version's success rate from
feedback is compared with the previous version's (over the same period in holdback mode;
over the period before the watch in shadow mode) by a one-sided two-proportion test
(``caprank.experiments.margin``). Worse by more than ``watch.margin`` at level
``watch.alpha``: the rollout is rolled back (KServe) and the alias restored; else the
promotion completes. One test at the end, not one per poll: repeated looks would raise
the rate of false rollbacks above ``alpha``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from caprank.config import CanaryConfig
from caprank.deploy.backend import MetricsUnavailable, QualitySource, RolloutBackend
from caprank.deploy.guardrails import breach
from caprank.deploy.state import RolloutState

log = logging.getLogger(__name__)


def watch_applies(state: RolloutState, cfg: CanaryConfig, quality: QualitySource | None) -> bool:
    """A watch needs a period, a version to compare with, and outcomes to compare."""
    return (
        cfg.watch.period_s > 0
        and not state.initial
        and quality is not None
        and state.previous_version is not None
    )


def watch_percent(state: RolloutState, cfg: CanaryConfig) -> int:
    """The new version's share of traffic during the watch."""
    if state.strategy == "blue_green" or cfg.watch.mode == "shadow":
        return 100
    return 100 - cfg.watch.holdback_percent


def start_watch(
    backend: RolloutBackend,
    state: RolloutState,
    cfg: CanaryConfig,
    quality: QualitySource,
    now: float,
    on_promote: Callable[[RolloutState], None] | None,
) -> RolloutState:
    """Give the new version its watch share, move the alias, and start the clock."""
    percent = watch_percent(state, cfg)
    info: dict = {"mode": "holdback" if percent < 100 else "shadow", "percent": percent}
    if percent == 100:  # the previous version gets no traffic: its recent past is the reference
        assert state.previous_version is not None
        since = now - cfg.watch.period_s
        info["reference_counts"] = list(quality.success_counts(state.previous_version, since))
    state = replace(state, traffic_percent=percent)
    backend.shift(state)
    if on_promote is not None:
        on_promote(state)
    state = replace(state, hook_done=True, watch_started_at=now, watch=info)
    backend.save_state(state)
    log.info("watching %s for %ss (%s)", state.model_version, cfg.watch.period_s, info["mode"])
    return state


def _roll_back(state: RolloutState, reason: str, now: float, watch: dict) -> RolloutState:
    log.warning("watch rolls back %s: %s", state.model_version, reason)
    return replace(
        state, phase="rolling_back", reason=f"watch: {reason}", rollback_started_at=now, watch=watch
    )


def watch_step(
    backend: RolloutBackend,
    state: RolloutState,
    cfg: CanaryConfig,
    quality: QualitySource,
    now: float,
    sleep: Callable[[float], None],
) -> RolloutState:
    """One poll of the watch: guardrails now, the comparison at the end."""
    from caprank.experiments.margin import worse_by_margin

    assert state.watch_started_at is not None and state.previous_version is not None
    w = cfg.watch
    elapsed = now - state.watch_started_at
    try:
        metrics = backend.metrics(state, max(elapsed, cfg.poll_s))
    except MetricsUnavailable as exc:  # the canary passed: an outage is no evidence
        log.warning("guardrail metrics unavailable during the watch: %s", exc)
        metrics = None
    broken = breach(metrics, cfg, final=False) if metrics is not None else None
    if broken is not None:
        state = _roll_back(state, broken, now, {**state.watch, "breach": broken})
        backend.save_state(state)
        return state
    if elapsed < w.period_s:
        sleep(min(cfg.poll_s, w.period_s - elapsed))
        return state
    tested = quality.success_counts(state.model_version, state.watch_started_at)
    held = state.watch.get("reference_counts")
    reference = (
        (int(held[0]), int(held[1]))
        if held is not None
        else quality.success_counts(state.previous_version, state.watch_started_at)
    )
    verdict = worse_by_margin(
        tested, reference, margin=w.margin, alpha=w.alpha, min_events=w.min_feedback
    )
    watch = {**state.watch, **verdict.to_dict()}
    if verdict.worse:
        state = _roll_back(state, verdict.reason, now, watch)
    else:
        why = verdict.reason if verdict.p_value is not None else f"not judged: {verdict.reason}"
        state = replace(state, phase="promoting", reason=f"guardrails held; watch: {why}",
                        watch=watch)  # fmt: skip
    backend.save_state(state)
    return state
