"""The monitor's verdict as Prometheus gauges, pushed where an alert rule can read them.

The monitor runs as a short pipeline step that nothing scrapes, so with
``services.pushgateway_url`` set every verdict is pushed (job ``caprank-monitor``) to a
Prometheus Pushgateway; the ``CaprankDriftDetected`` rule of
manifests/base/prometheusrule.yaml reads ``caprank_drift_detected``. Without the URL
nothing is pushed (the manifests deploy no Pushgateway; docs/runbook.md). A failed push
is logged, never fatal: the nightly run goes on, and ``CaprankMonitorSilent`` fires
when no verdict has arrived for two days.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge

from caprank.config import CaprankConfig

if TYPE_CHECKING:
    from caprank.monitoring.stage import MonitorResult

log = logging.getLogger(__name__)

JOB = "caprank-monitor"


def monitor_registry(result: MonitorResult, now: float | None = None) -> CollectorRegistry:
    """Gauges of one verdict: drift (judged or not), each check, the training decision."""
    r = CollectorRegistry()
    judged = Gauge(
        "caprank_drift_judged", "1 when the windows were large enough to judge", registry=r
    )
    drifted = Gauge("caprank_drift_detected", "1 when a drift check fired", registry=r)
    check = Gauge(
        "caprank_drift_check_fired", "1 when this drift check fired", ["check"], registry=r
    )
    value = Gauge("caprank_drift_check_value", "The check's statistic", ["check"], registry=r)
    limit = Gauge("caprank_drift_check_threshold", "The check's threshold", ["check"], registry=r)
    train = Gauge("caprank_monitor_should_train", "1 when this run trains", registry=r)
    ran = Gauge("caprank_monitor_last_run_timestamp_seconds", "When the monitor judged", registry=r)
    drift = result.drift
    judged.set(0.0 if drift is None else 1.0)
    drifted.set(1.0 if drift is not None and drift.drifted else 0.0)
    for name, c in ({} if drift is None else drift.checks).items():
        check.labels(name).set(1.0 if c.drifted else 0.0)
        value.labels(name).set(c.value)
        limit.labels(name).set(c.threshold)
    train.set(1.0 if result.should_train else 0.0)
    ran.set(time.time() if now is None else now)
    return r


def push_gauges(
    cfg: CaprankConfig,
    job: str,
    registry: CollectorRegistry,
    grouping: dict[str, str] | None = None,
) -> bool:
    """Push ``registry`` to ``services.pushgateway_url`` as ``job`` (and ``grouping``
    labels); False when unset or when the push failed (logged, never raised)."""
    url = cfg.services.pushgateway_url
    if not url:
        return False
    from prometheus_client import push_to_gateway

    try:
        push_to_gateway(url, job=job, registry=registry, grouping_key=grouping, timeout=10)
    except OSError as exc:
        log.warning("%s gauges not pushed to %s: %s", job, url, exc)
        return False
    return True


def publish(result: MonitorResult, cfg: CaprankConfig) -> bool:
    """Push the verdict's gauges (job ``caprank-monitor``); False when not pushed."""
    return push_gauges(cfg, JOB, monitor_registry(result))
