"""Guardrails that decide a canary's fate, and the sources that measure them.

Request count, error rate and p99 latency come from Prometheus (PromQL templates in
``cfg.canary``) or, without one, from the predictor pods' own ``/metrics``
(``caprank.deploy.scrape``); quality is the success rate of the canary's logged
outcomes, absolute (``min_success_rate``) and against the stable model's
(``max_success_rate_drop``) and significantly below it by the experiments' always-valid
test (``caprank.experiments.canary``). A guardrail with too little evidence (fewer than
``min_requests`` requests, fewer than ``min_feedback`` events) is not judged during the
window; at the window's end too little traffic is itself a failure, and a guardrail left
unmeasured refuses promotion unless ``canary.allow_unmeasured`` names it.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template

import pyarrow.compute as pc

from caprank.config import CanaryConfig
from caprank.deploy.backend import CanaryMetrics, MetricsUnavailable
from caprank.experiments.canary import metrics_breach
from caprank.online.feedback import WalEvents
from caprank.online.request import StoreUnavailable
from caprank.online.sinks import EventReader


def breach(metrics: CanaryMetrics, cfg: CanaryConfig, *, final: bool) -> str | None:
    """The first guardrail ``metrics`` breaks, as a sentence; None when all hold."""
    enough_traffic = metrics.requests is None or metrics.requests >= cfg.min_requests
    error_rate, p99 = metrics.error_rate, metrics.p99_latency_ms
    if enough_traffic and error_rate is not None and error_rate > cfg.max_error_rate:
        return f"error rate {error_rate:.4f} > max_error_rate {cfg.max_error_rate}"
    if enough_traffic and p99 is not None and p99 > cfg.max_p99_latency_ms:
        return f"p99 latency {p99:.1f} ms > max_p99_latency_ms {cfg.max_p99_latency_ms}"
    if (
        metrics.success_rate is not None
        and (metrics.feedback or 0) >= cfg.min_feedback
        and metrics.success_rate < cfg.min_success_rate
    ):
        return (
            f"success rate {metrics.success_rate:.3f} over {metrics.feedback} outcomes < "
            f"min_success_rate {cfg.min_success_rate}"
        )
    drop = _success_drop(metrics, cfg)
    if drop is not None:
        return drop
    if (worse := metrics_breach(metrics, cfg)) is not None:  # significantly worse (mSPRT)
        return worse
    if final and metrics.requests is not None and metrics.requests < cfg.min_requests:
        return (
            f"only {metrics.requests:.0f} requests reached the canary "
            f"(min_requests {cfg.min_requests})"
        )
    return None


def _success_drop(metrics: CanaryMetrics, cfg: CanaryConfig) -> str | None:
    """The canary's success rate against the stable model's, when both are judged."""
    ours, theirs = metrics.success_rate, metrics.baseline_success_rate
    if ours is None or theirs is None:
        return None
    if (metrics.feedback or 0) < cfg.min_feedback or (
        metrics.baseline_feedback or 0
    ) < cfg.min_feedback:
        return None
    if ours < theirs - cfg.max_success_rate_drop:
        return (
            f"success rate {ours:.3f} over {metrics.feedback} outcomes is more than "
            f"max_success_rate_drop {cfg.max_success_rate_drop} below the stable model's "
            f"{theirs:.3f} ({metrics.baseline_feedback} outcomes)"
        )
    return None


def unmeasured(metrics: CanaryMetrics, cfg: CanaryConfig | None = None) -> list[str]:
    """Guardrails without data, so a verdict says what it rests on; with ``cfg``, a
    success rate that could not be judged (too few outcomes, nothing to hold it to)
    counts as unmeasured too."""
    values = {
        "requests": metrics.requests,
        "error_rate": metrics.error_rate,
        "p99_latency_ms": metrics.p99_latency_ms,
        "success_rate": metrics.success_rate,
    }
    missing = [name for name, value in values.items() if value is None]
    if cfg is not None and "success_rate" not in missing and not _quality_judged(metrics, cfg):
        missing.append("success_rate")
    return missing


def _quality_judged(metrics: CanaryMetrics, cfg: CanaryConfig) -> bool:
    """Enough outcomes of the canary, and something to hold them to: the absolute floor
    ``min_success_rate``, or the stable model's success rate over ``min_feedback``."""
    if (metrics.feedback or 0) < cfg.min_feedback:
        return False
    if cfg.min_success_rate > 0:
        return True
    return (
        metrics.baseline_success_rate is not None
        and (metrics.baseline_feedback or 0) >= cfg.min_feedback
    )


def unmeasured_refusal(metrics: CanaryMetrics, cfg: CanaryConfig) -> str | None:
    """Why the canary may not be promoted on what was measured; None when it may."""
    missing = [g for g in unmeasured(metrics, cfg) if g not in cfg.allow_unmeasured]
    if not missing:
        return None
    return (
        f"not measured: {', '.join(missing)}; a canary is promoted only on measured "
        "guardrails (canary.allow_unmeasured lists those that may go unmeasured)"
    )


@dataclass(frozen=True)
class PrometheusClient:
    """Instant queries against Prometheus's HTTP API (``/api/v1/query``)."""

    url: str
    timeout_s: float = 10.0

    def query(self, promql: str) -> float | None:
        """The single value of an instant vector or scalar; None for no data or NaN."""
        address = f"{self.url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        try:
            with urllib.request.urlopen(address, timeout=self.timeout_s) as resp:
                body = json.loads(resp.read().decode("utf-8"))
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
            raise MetricsUnavailable(f"Prometheus query failed ({exc}): {promql}") from exc
        if body.get("status") != "success":
            raise MetricsUnavailable(f"Prometheus: {body.get('error', body)}: {promql}")
        data = body.get("data", {})
        result = data.get("result")
        if data.get("resultType") == "scalar":
            return _number(result[1])
        if not result:
            return None
        if len(result) > 1:
            raise MetricsUnavailable(
                f"Prometheus returned {len(result)} series where one was expected: {promql}"
            )
        return _number(result[0]["value"][1])


def _number(text: str) -> float | None:
    value = float(text)
    return None if math.isnan(value) or math.isinf(value) else value


def prometheus_metrics(
    client: PrometheusClient, cfg: CanaryConfig, *, namespace: str, pod_regex: str, window_s: float
) -> CanaryMetrics:
    """Canary request count, error rate and p99 latency over the last ``window_s``."""
    values = {
        "namespace": namespace,
        "pod": pod_regex,
        "range": f"{max(math.ceil(window_s), math.ceil(cfg.poll_s), 1)}s",
    }

    def ask(template: str) -> float | None:
        return client.query(Template(template).safe_substitute(values))

    return CanaryMetrics(
        requests=ask(cfg.promql_requests),
        error_rate=ask(cfg.promql_error_rate),
        p99_latency_ms=ask(cfg.promql_p99_ms),
    )


@dataclass(frozen=True)
class FeedbackLogQuality:
    """Success rate from the feedback sink's events (``caprank.online.sinks.event_reader``:
    the write-ahead log's parts and segments not yet compacted, or the PostgreSQL table):
    an event counts from its acknowledgement. A directory stands for its log's reader."""

    events: EventReader | Path

    def success_counts(self, model_version: str, since: float) -> tuple[int, int]:
        return self._counts(model_version, since, same=True)

    def baseline_counts(self, model_version: str, since: float) -> tuple[int, int]:
        return self._counts(model_version, since, same=False)

    def _counts(self, model_version: str, since: float, same: bool) -> tuple[int, int]:
        reader = self.events
        if not hasattr(reader, "read_events"):
            reader = WalEvents(reader)
        start = datetime.fromtimestamp(since, tz=UTC)
        try:
            table = reader.read_events(since=start)
        except StoreUnavailable as exc:
            raise MetricsUnavailable(str(exc)) from exc
        version = table["model_version"]
        match = pc.equal(version, model_version) if same else pc.not_equal(version, model_version)
        mask = pc.and_(match, pc.greater_equal(table["timestamp"], start))
        rows = table.filter(pc.fill_null(mask, False))
        successes = pc.sum(pc.equal(rows["outcome"], "success")).as_py() or 0
        return int(successes), rows.num_rows
