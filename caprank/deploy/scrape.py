"""Guardrail inputs read straight from the predictor pods' ``/metrics`` (no Prometheus).

A canary pod serves only the canary (Standard mode: the canary's own predictor
Deployment; Knative: the new revision), so every counter it has exported since it
started is the canary's evidence; the stable model's pods give the baseline for relative
quality. Counters are summed over the pods; p99 comes from the summed latency histogram,
interpolated inside its bucket as PromQL's ``histogram_quantile`` does. A pod that does
not answer makes the poll fail (``MetricsUnavailable``): a silent gap would thin the
evidence without saying so.
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from caprank.deploy.backend import CanaryMetrics, MetricsUnavailable

REQUESTS = "caprank_rank_requests"  # {status, model_version}; fallback answers are errors
OUTCOMES = "caprank_feedback_outcomes"  # {model_version, outcome}
LATENCY = "request_predict_seconds"  # KServe's own predict histogram (the PromQL's too)
POD_LABEL = "serving.kserve.io/inferenceservice"


@dataclass
class PodTotals:
    """What a set of predictor pods exported, summed."""

    ok: float = 0.0
    errors: float = 0.0
    successes: float = 0.0
    outcomes: float = 0.0
    buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, text: str, source: str) -> None:
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError as exc:
            raise MetricsUnavailable(f"{source}: not Prometheus text ({exc})") from exc
        for family in families:
            for sample in family.samples:
                self._take(sample.name, sample.labels, sample.value)

    def _take(self, name: str, labels: dict[str, str], value: float) -> None:
        if name == f"{REQUESTS}_total":
            if labels.get("status") == "error":
                self.errors += value
            else:
                self.ok += value
        elif name == f"{OUTCOMES}_total":
            self.outcomes += value
            if labels.get("outcome") == "success":
                self.successes += value
        elif name == f"{LATENCY}_bucket":
            self.buckets[float(labels["le"])] += value

    @property
    def requests(self) -> float:
        return self.ok + self.errors


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of cumulative ``buckets`` (upper bound -> count), as PromQL
    computes it; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower  # above the highest finite bound: its value, as PromQL does
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


@dataclass(frozen=True)
class PodScraper:
    """Lists an InferenceService's Running pods and reads each one's ``/metrics``."""

    core: Any  # kubernetes.client.CoreV1Api
    namespace: str
    service: str
    port: int
    timeout_s: float = 10.0

    def pods(self, name_regex: str) -> list[tuple[str, str]]:
        """(name, IP) of the Running pods whose name matches ``name_regex`` in full."""
        from kubernetes.client.exceptions import ApiException

        try:
            found = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{POD_LABEL}={self.service}"
            )
        except ApiException as exc:
            raise MetricsUnavailable(
                f"listing pods of {self.namespace}/{self.service} failed ({exc.status} "
                f"{exc.reason})"
            ) from exc
        pattern = re.compile(name_regex)
        return [
            (p.metadata.name, p.status.pod_ip)
            for p in found.items
            if pattern.fullmatch(p.metadata.name)
            and p.status.phase == "Running"
            and p.status.pod_ip
        ]

    def totals(self, name_regex: str) -> tuple[PodTotals, int]:
        """The summed counters of the matching pods, and how many pods answered."""
        totals, pods = PodTotals(), self.pods(name_regex)
        for name, ip in pods:
            url = f"http://{ip}:{self.port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    text = resp.read().decode("utf-8", "replace")
            except (urllib.error.URLError, OSError) as exc:
                raise MetricsUnavailable(f"pod {name}: GET {url} failed ({exc})") from exc
            totals.add(text, f"pod {name} {url}")
        return totals, len(pods)


def scraped_metrics(scraper: PodScraper, canary_regex: str, stable_regex: str | None):
    """The canary's guardrail inputs from its pods, with the stable pods' quality."""
    canary, n = scraper.totals(canary_regex)
    if n == 0:
        return CanaryMetrics()  # no canary pod Running: nothing measured this poll
    requests = canary.requests
    p99_s = histogram_quantile(0.99, canary.buckets)
    metrics = CanaryMetrics(
        requests=requests,
        error_rate=canary.errors / requests if requests else None,
        p99_latency_ms=None if p99_s is None else 1000.0 * p99_s,
        feedback=int(canary.outcomes),
        success_rate=canary.successes / canary.outcomes if canary.outcomes else None,
    )
    if stable_regex is None:
        return metrics
    stable, _ = scraper.totals(stable_regex)
    return CanaryMetrics(
        **{
            **metrics.as_dict(),
            "baseline_feedback": int(stable.outcomes),
            "baseline_success_rate": (
                stable.successes / stable.outcomes if stable.outcomes else None
            ),
        }
    )
