"""Prometheus metrics of one predictor process.

They go into ``prometheus_client``'s default registry, which KServe's ``/metrics`` serves
beside its own request histograms; ``close()`` takes them out again (a test process
serves one runtime after another).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from caprank.online.runtime import Runtime

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.2, 0.5, 1.0, 2.5,
)  # fmt: skip


class ServerMetrics:
    def __init__(self, runtime: Runtime, registry: CollectorRegistry = REGISTRY):
        self.registry = registry
        r = registry
        self.requests = Counter(
            "caprank_rank_requests",
            "Rank requests by outcome (error: the server failed a valid request, or the "
            "model named failed and the fallback answered)",
            ["status", "model_version"],
            registry=r,
        )
        self.rejected = Counter(
            "caprank_rank_rejected", "Rank requests refused as bad input (4xx)", ["field"],
            registry=r,
        )  # fmt: skip
        self.stage = Histogram(
            "caprank_rank_stage_seconds",
            "Time per ranking stage (embed, score, rules, total)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "caprank_intent_cache_lookups", "Intent embedding cache lookups", ["result"],
            registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "caprank_fallbacks",
            "Requests answered by the dense fallback (not_loaded, model_error)",
            ["reason"],
            registry=r,
        )
        self.feedback = Counter(
            "caprank_feedback_events",
            "Feedback posts by outcome (stored, duplicate, conflict, dropped, rejected, "
            "unknown_request, unavailable)",
            ["status"],
            registry=r,
        )
        self.outcomes = Counter(
            "caprank_feedback_outcomes",
            "Stored feedback by the model version that served the ranking and its outcome "
            "(the cluster canary's quality guardrail reads it from the pods)",
            ["model_version", "outcome"],
            registry=r,
        )
        self.feedback_ack = Histogram(
            "caprank_feedback_ack_seconds",
            "Time from a feedback post to its durable acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._children: dict[tuple, object] = {}
        self._state = _StateCollector(runtime)
        r.register(self._state)
        self._collectors = [
            *(self.requests, self.rejected, self.stage, self.cache, self.fallbacks),
            *(self.feedback, self.outcomes, self.feedback_ack, self._state),
        ]

    def close(self) -> None:
        """Unregister every metric (the registry outlives this runtime)."""
        for collector in self._collectors:
            self.registry.unregister(collector)

    def child(self, metric, *labels: str):
        """``metric.labels(*labels)``, remembered: a label lookup costs more than the
        increment, on every request (the label sets are few: outcomes, versions, stages)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_rank(self, result) -> None:
        """Count an answered request; one the fallback answered after the model raised is
        an error of that model (the canary guardrail's error rate must see it)."""
        child = self.child
        if result.failed_version is not None:
            child(self.requests, "error", result.failed_version).inc()
        else:
            child(self.requests, "ok", result.model_version).inc()
        for stage, seconds in result.timings.items():
            child(self.stage, stage).observe(seconds)
        child(self.cache, "hit" if result.cache_hit else "miss").inc()
        if result.fallback_reason:
            self.fallbacks.labels(result.fallback_reason).inc()


class _StateCollector:
    """Gauges read from the runtime at scrape time (model versions, features, cache)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def describe(self):
        return []

    def collect(self):
        rt = self.runtime
        ready = GaugeMetricFamily("caprank_model_ready", "1 once the model has loaded")
        ready.add_metric([], 1.0 if rt.ready else 0.0)
        yield ready
        if rt.engine is None:
            return
        info = GaugeMetricFamily(
            "caprank_model_info", "Models in service (role: primary, canary, shadow, fallback)",
            labels=["role", "version"],
        )  # fmt: skip
        routing = rt.engine.routing
        if routing.primary is not None:
            info.add_metric(["primary", routing.primary.version], 1.0)
        if routing.second is not None:
            role = "shadow" if routing.mode == "shadow" else "canary"
            info.add_metric([role, routing.second.version], float(routing.percent))
        info.add_metric(["fallback", rt.engine.fallback.version], 1.0)
        yield info
        snap = rt.engine.features
        stale = GaugeMetricFamily(
            "caprank_feature_stale_capabilities",
            "Capabilities whose online features are missing or past features.max_staleness_hours "
            "(served with neutral features)",
        )
        stale.add_metric([], float(snap.n_stale if snap else len(rt.engine.catalog)))
        yield stale
        age = GaugeMetricFamily(
            "caprank_feature_age_hours", "Age of the oldest online feature snapshot in memory"
        )
        hours = snap.age_hours() if snap else None
        age.add_metric([], float("nan") if hours is None else hours)
        yield age
        refresh = GaugeMetricFamily("caprank_feature_refreshes", "Feature refreshes done")
        refresh.add_metric([], float(rt.feature_refreshes))
        yield refresh
        cache = rt.engine.encoder.cache
        ratio = GaugeMetricFamily("caprank_intent_cache_hit_ratio", "Hits / lookups so far")
        ratio.add_metric([], cache.hit_rate)
        yield ratio
        size = GaugeMetricFamily("caprank_intent_cache_entries", "Intents cached")
        size.add_metric([], float(len(cache)))
        yield size
