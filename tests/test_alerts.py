"""The alert rules (manifests/base/prometheusrule.yaml) read metrics the code exports, at
the config's thresholds, each with a runbook; the monitor pushes its drift gauges."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from prometheus_client import generate_latest

from caprank.config import CaprankConfig
from caprank.monitoring.drift import DriftCheck, DriftResult
from caprank.monitoring.gauges import JOB, monitor_registry, publish
from caprank.monitoring.stage import MonitorResult
from caprank.monitoring.windows import WindowBounds

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "manifests" / "base" / "prometheusrule.yaml"
EXPORTERS = ("caprank/online/metrics.py", "caprank/monitoring/gauges.py")
CFG = CaprankConfig()
# What each kind of definition exposes (prometheus_client's naming).
SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Gauge": ("",),
    "GaugeMetricFamily": ("",),
}
WANTED = {  # the brief's alerts, by what they watch
    "error rate": "CaprankErrorRateHigh",
    "p99 latency": "CaprankP99LatencyHigh",
    "fallback rate": "CaprankFallbackRateHigh",
    "feature staleness": "CaprankFeaturesStale",
    "drift": "CaprankDriftDetected",
    "success rate": "CaprankSuccessRateLow",
}


def exported_series() -> set[str]:
    """Series names the predictor and the monitor define, read from their source."""
    out = set()
    for path in EXPORTERS:
        source = (ROOT / path).read_text()
        for kind, name in re.findall(
            r'\b(Counter|Histogram|Gauge|GaugeMetricFamily)\(\s*"(\w+)"', source
        ):
            out.update(name + s for s in SUFFIXES[kind])
    return out


@pytest.fixture(scope="module")
def rules() -> dict[str, dict]:
    doc = yaml.safe_load(RULES.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    found = {r["alert"]: r for g in doc["spec"]["groups"] for r in g["rules"]}
    assert len(found) == sum(len(g["rules"]) for g in doc["spec"]["groups"])  # unique names
    return found


def test_kustomization_includes_the_rules():
    kust = yaml.safe_load((RULES.parent / "kustomization.yaml").read_text())
    assert RULES.name in kust["resources"]


def test_every_wanted_alert_has_a_runbook(rules):
    assert set(WANTED.values()) <= set(rules)
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for name, rule in rules.items():
        notes = rule["annotations"]
        assert notes["summary"] and len(notes["runbook"]) > 80, name
        assert f"docs/runbook.md#{name.lower()}" in notes["runbook"], name
        assert f"## {name}" in runbook, name
        assert rule["labels"]["severity"] in ("page", "ticket"), name


def test_every_expression_reads_an_exported_metric(rules):
    exported = exported_series()
    assert {
        "caprank_rank_requests_total",
        "caprank_feature_age_hours",
    } <= exported  # the regex works
    for name, rule in rules.items():
        used = set(re.findall(r"\bcaprank_\w+", rule["expr"]))
        assert used, name
        assert used <= exported, f"{name}: {used - exported} exported by nobody"


def test_label_values_are_ones_the_code_emits(rules):
    from caprank.data.schemas import OUTCOMES
    from caprank.online.engine import STAGES

    assert 'status="error"' in rules["CaprankErrorRateHigh"]["expr"]
    assert '"error"' in (ROOT / EXPORTERS[0]).read_text()
    assert re.search(r'stage="(\w+)"', rules["CaprankP99LatencyHigh"]["expr"])[1] in STAGES
    assert re.search(r'outcome="(\w+)"', rules["CaprankSuccessRateLow"]["expr"])[1] in OUTCOMES


def test_thresholds_match_the_config(rules):
    def threshold(name: str) -> float:
        return float(re.search(r">\s*([0-9.]+)\s*$", rules[name]["expr"].strip())[1])

    assert threshold("CaprankErrorRateHigh") == CFG.canary.max_error_rate
    assert threshold("CaprankP99LatencyHigh") * 1000 == CFG.canary.max_p99_latency_ms
    assert threshold("CaprankFeaturesStale") == CFG.features.max_staleness_hours
    success = rules["CaprankSuccessRateLow"]["expr"]
    assert f"- {CFG.canary.max_success_rate_drop}" in success
    assert f">= {CFG.canary.min_feedback}" in success


# --------------------------------------------------------------------------- drift gauges


def _result(drifted: bool | None) -> MonitorResult:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    bounds = WindowBounds(now, now, now, 100, 50)
    drift = None
    if drifted is not None:
        checks = {
            "intent_mix": DriftCheck("intent_mix", 0.3, 0.1, drifted, "psi > threshold"),
            "feature_staleness": DriftCheck("feature_staleness", 2.0, 48.0, False, "hours"),
        }
        drift = DriftResult(checks, drifted, drifted)
    return MonitorResult(drift, bounds, bool(drifted), "on_drift", "why")


def _value(text: str, series: str) -> float:
    return float(re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)[1])


def test_gauges_of_a_verdict():
    text = generate_latest(monitor_registry(_result(True), now=1234.0)).decode()
    assert _value(text, "caprank_drift_detected") == 1.0
    assert _value(text, "caprank_drift_judged") == 1.0
    assert _value(text, 'caprank_drift_check_fired{check="intent_mix"}') == 1.0
    assert _value(text, 'caprank_drift_check_fired{check="feature_staleness"}') == 0.0
    assert _value(text, 'caprank_drift_check_threshold{check="intent_mix"}') == 0.1
    assert _value(text, "caprank_monitor_last_run_timestamp_seconds") == 1234.0
    quiet = generate_latest(monitor_registry(_result(None))).decode()
    assert _value(quiet, "caprank_drift_detected") == 0.0
    assert _value(quiet, "caprank_drift_judged") == 0.0


class _Gateway(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_publish_pushes_to_the_gateway_and_survives_its_absence():
    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cfg = CaprankConfig()
        assert publish(_result(True), cfg) is False  # no URL: nothing pushed
        cfg.services.pushgateway_url = f"http://127.0.0.1:{server.server_port}"
        assert publish(_result(True), cfg) is True
    finally:
        server.shutdown()
        server.server_close()
    method, path, body = _Gateway.received[-1]
    assert method == "PUT" and path == f"/metrics/job/{JOB}"
    assert b"caprank_drift_detected 1.0" in body
    assert publish(_result(True), cfg) is False  # gateway gone: logged, not raised


def test_monitor_pushes_its_verdict():
    from caprank.data.synth import synthesize
    from caprank.monitoring import monitor
    from tests.test_monitoring import _cfg, _logs

    cfg = _cfg(3)
    cfg.monitoring.min_window_events = 10_000  # not judged: the quickest verdict
    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg.services.pushgateway_url = f"http://127.0.0.1:{server.server_port}"
    try:
        result = monitor(_logs(synthesize(cfg), cfg), cfg, production_exists=True)
    finally:
        server.shutdown()
        server.server_close()
    assert result.drift is None
    body = _Gateway.received[-1][2]
    assert b"caprank_drift_judged 0.0" in body and b"caprank_monitor_should_train" in body
