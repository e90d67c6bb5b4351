"""Rolling a new model out: a canary controller over a backend protocol.

``run_rollout`` holds the logic (canary, readiness, guardrails, promote or rollback,
resume after a crash); ``KServeBackend`` applies it to an InferenceService through the
kubernetes client. The local in-process canary implements the same ``RolloutBackend``.
"""

from caprank.deploy.backend import (
    CanaryMetrics,
    LiveModel,
    QualitySource,
    Readiness,
    ReadyCheck,
    RolloutBackend,
)
from caprank.deploy.controller import RolloutError, RolloutResult, run_rollout
from caprank.deploy.guardrails import FeedbackLogQuality, PrometheusClient, breach
from caprank.deploy.state import RolloutState

__all__ = [
    "CanaryMetrics",
    "FeedbackLogQuality",
    "LiveModel",
    "PrometheusClient",
    "QualitySource",
    "Readiness",
    "ReadyCheck",
    "RolloutBackend",
    "RolloutError",
    "RolloutResult",
    "RolloutState",
    "breach",
    "run_rollout",
]
