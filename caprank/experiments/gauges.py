"""Prometheus gauges of an experiment, in the text exposition format.

``status`` and ``stop`` run as short CLI processes, so the gauges are written as a
``metrics.prom`` file beside the record (atomically), the format node-exporter's textfile
collector serves, and with ``services.pushgateway_url`` set they are also pushed to the
Pushgateway (job ``caprank-experiment``, grouped by experiment) where Prometheus scrapes
them; ``registry_for`` builds the same gauges for a process that serves them.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from caprank.config import CaprankConfig
from caprank.experiments.decision import DECISIONS, Decision
from caprank.experiments.readout import Analysis
from caprank.files import atomic_write_bytes


def registry_for(a: Analysis, d: Decision) -> CollectorRegistry:
    r = CollectorRegistry()
    labels = ["experiment", "arm", "version"]
    outcomes = Gauge("caprank_experiment_outcomes", "Outcomes per arm", labels, registry=r)
    rate = Gauge("caprank_experiment_success_rate", "Success rate per arm", labels, registry=r)
    fails = Gauge("caprank_experiment_failure_rate", "Failure rate per arm", labels, registry=r)
    ms = Gauge("caprank_experiment_latency_mean_ms", "Mean execution ms", labels, registry=r)
    for s in a.arms.values():
        key = (a.experiment_id, s.arm, s.version)
        outcomes.labels(*key).set(s.n)
        rate.labels(*key).set(s.success_rate)
        fails.labels(*key).set(s.failure_rate)
        ms.labels(*key).set(s.latency_mean_ms)
    p = a.primary
    exp = ["experiment"]
    Gauge("caprank_experiment_diff", "Success-rate difference (treatment - control)", exp,
          registry=r).labels(a.experiment_id).set(p.diff)  # fmt: skip
    bound = Gauge("caprank_experiment_diff_ci", "Always-valid CI of the difference",
                  ["experiment", "bound"], registry=r)  # fmt: skip
    bound.labels(a.experiment_id, "low").set(p.ci_low)
    bound.labels(a.experiment_id, "high").set(p.ci_high)
    Gauge("caprank_experiment_p_value", "Always-valid p-value of the primary metric", exp,
          registry=r).labels(a.experiment_id).set(p.p_value)  # fmt: skip
    Gauge("caprank_experiment_elapsed_hours", "Hours since the start", exp,
          registry=r).labels(a.experiment_id).set(a.elapsed_h)  # fmt: skip
    decision = Gauge("caprank_experiment_decision", "1 for the current decision",
                     ["experiment", "decision"], registry=r)  # fmt: skip
    for name in DECISIONS:
        decision.labels(a.experiment_id, name).set(1.0 if d.action == name else 0.0)
    return r


JOB = "caprank-experiment"


def write_textfile(path: Path, a: Analysis, d: Decision) -> Path:
    return atomic_write_bytes(path, generate_latest(registry_for(a, d)))


def push(cfg: CaprankConfig, a: Analysis, d: Decision) -> bool:
    """The same gauges to the Pushgateway, one group per experiment; False when not."""
    from caprank.monitoring.gauges import push_gauges

    return push_gauges(cfg, JOB, registry_for(a, d), {"experiment": a.experiment_id})
