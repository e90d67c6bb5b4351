"""What a rollout needs from the thing it rolls out to.

The controller only speaks this protocol, so the same promote/rollback logic drives
KServe on a cluster (``caprank.deploy.kserve``) and an in-process canary in the local
predictor. Every method must be idempotent: the controller calls them again after a
crash, and a call that finds its change already in place only records the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from caprank.deploy.state import RolloutState


class Readiness(Enum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ReadyCheck:
    status: Readiness
    message: str = ""


@dataclass(frozen=True)
class LiveModel:
    """What serves before a rollout starts: its model URI and whether it is healthy."""

    uri: str | None
    ready: bool
    mode: str


@dataclass(frozen=True)
class CanaryMetrics:
    """Guardrail inputs over the observation window; None means not measured."""

    requests: float | None = None
    error_rate: float | None = None
    p99_latency_ms: float | None = None
    feedback: int | None = None
    success_rate: float | None = None
    baseline_feedback: int | None = None  # the stable model's outcomes (relative quality)
    baseline_success_rate: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "requests": self.requests,
            "error_rate": self.error_rate,
            "p99_latency_ms": self.p99_latency_ms,
            "feedback": self.feedback,
            "success_rate": self.success_rate,
            "baseline_feedback": self.baseline_feedback,
            "baseline_success_rate": self.baseline_success_rate,
        }


class RolloutBackend(Protocol):
    """A serving target that can hold a stable model and one canary."""

    def get_state(self) -> RolloutState | None:
        """The persisted rollout record, or None if none was ever written."""
        ...

    def save_state(self, state: RolloutState) -> None:
        """Persist ``state`` without touching what serves."""
        ...

    def live(self) -> LiveModel:
        """The model serving now (read before a rollout starts)."""
        ...

    def set_canary(self, state: RolloutState) -> None:
        """Serve ``state.new_uri`` to ``state.traffic_percent``% of traffic (all of it when
        ``state.initial``); persist ``state`` with the change."""
        ...

    def shift(self, state: RolloutState) -> None:
        """Give the new model ``state.traffic_percent``% of traffic now (the blue-green
        switch, the watch's holdback); persist ``state`` with the change."""
        ...

    def ready(self, state: RolloutState) -> ReadyCheck:
        """Whether the new model's generation is up and healthy."""
        ...

    def metrics(self, state: RolloutState, window_s: float) -> CanaryMetrics:
        """Error rate, latency and request count of the canary over the last ``window_s``."""
        ...

    def promote(self, state: RolloutState) -> None:
        """Send all traffic to the new model; persist ``state`` with the change."""
        ...

    def rollback(self, state: RolloutState) -> bool:
        """Take one step back to ``state.previous_uri``; True once it serves all traffic."""
        ...


class QualitySource(Protocol):
    """Outcome feedback for one model version (the integrator feeds the serving log)."""

    def success_counts(self, model_version: str, since: float) -> tuple[int, int]:
        """(successes, events) logged for ``model_version`` since the epoch time ``since``."""
        ...

    def baseline_counts(self, model_version: str, since: float) -> tuple[int, int]:
        """(successes, events) since ``since`` of every *other* version: the stable model
        serving beside the canary, whose success rate the canary is held to."""
        ...


class MetricsUnavailable(Exception):
    """A metrics backend could not answer (network, bad query): not a guardrail breach."""
