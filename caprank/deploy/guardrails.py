"""Guardrails that decide a canary's fate, and the sources that measure them.

Error rate and p99 latency come from Prometheus (PromQL templates in ``cfg.canary``);
quality is the success rate of the canary's logged outcomes. A guardrail with too little
evidence (fewer than ``min_requests`` requests, fewer than ``min_feedback`` events) is
not judged during the window; at the window's end too little traffic is itself a failure
whenever traffic is measured at all.
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
    if final and metrics.requests is not None and metrics.requests < cfg.min_requests:
        return (
            f"only {metrics.requests:.0f} requests reached the canary "
            f"(min_requests {cfg.min_requests})"
        )
    return None


def unmeasured(metrics: CanaryMetrics) -> list[str]:
    """Guardrails that had no data, so a report can say what the verdict rests on."""
    names = {
        "error_rate": metrics.error_rate,
        "p99_latency_ms": metrics.p99_latency_ms,
        "success_rate": metrics.success_rate,
    }
    return [name for name, value in names.items() if value is None]


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
        reader = self.events
        if not hasattr(reader, "read_events"):
            reader = WalEvents(reader)
        start = datetime.fromtimestamp(since, tz=UTC)
        try:
            table = reader.read_events(since=start)
        except StoreUnavailable as exc:
            raise MetricsUnavailable(str(exc)) from exc
        mask = pc.and_(
            pc.equal(table["model_version"], model_version),
            pc.greater_equal(table["timestamp"], start),
        )
        rows = table.filter(pc.fill_null(mask, False))
        successes = pc.sum(pc.equal(rows["outcome"], "success")).as_py() or 0
        return int(successes), rows.num_rows
