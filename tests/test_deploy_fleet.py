"""The fleet target: the rollout controller driving `caprank serve` replicas over HTTP.

Each fake replica is a real HTTP server on loopback speaking the admin API's shapes
(status, canary, promote, per-version metrics) behind the bearer token; `make e2e` runs
the same backend against real replicas."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from caprank.config import CanaryConfig, CaprankConfig
from caprank.deploy.backend import MetricsUnavailable
from caprank.deploy.controller import run_rollout
from caprank.deploy.fleet import FleetBackend, FleetError, Replica, fleet_backend
from caprank.deploy.state import RolloutState

TOKEN = "t0ken"


class FakeReplica:
    """A replica serving ``primary``; its canary answers with ``canary_error_rate``."""

    def __init__(self, primary: str = "1", canary_error_rate: float = 0.0):
        self.primary, self.second, self.percent = primary, None, 0
        self.canary_error_rate = canary_error_rate
        self.calls: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                fake.calls.append((method, url.path))
                if self.headers.get("authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, {"error": "admin routes need a bearer token"})
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                self._answer(*fake.route(method, url.path, parse_qs(url.query), body))

            def do_GET(self):
                self._handle("GET")

            def do_PUT(self):
                self._handle("PUT")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, method: str, path: str, query: dict, body):
        version = lambda v: None if v is None else {"version": v, "source": v}  # noqa: E731
        if (method, path) == ("GET", "/admin/status"):
            return 200, {"primary": version(self.primary), "second": version(self.second)}
        if (method, path) == ("PUT", "/admin/canary"):
            self.second, self.percent = body["ref"], body["percent"]
            return 200, {"second": self.second, "percent": self.percent}
        if (method, path) == ("DELETE", "/admin/canary"):
            self.second = None
            return 200, {"second": None}
        if (method, path) == ("POST", "/admin/canary/promote"):
            self.primary, self.second = self.second, None
            return 200, {"primary": self.primary}
        if (method, path) == ("POST", "/admin/models/primary"):
            self.primary = body["ref"]
            return 200, {"primary": self.primary}
        if (method, path) == ("GET", "/admin/canary/metrics"):
            asked = query["version"][0]
            n = 50 if asked == self.second else 0
            err = self.canary_error_rate if n else None
            return 200, {"version": asked, "requests": n, "error_rate": err, "p99_latency_ms": 12.0}
        return 404, {"error": f"no route {method} {path}"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def replicas():
    made: list[FakeReplica] = []
    yield lambda *a, **kw: made.append(FakeReplica(*a, **kw)) or made[-1]
    for r in made:
        r.close()


class Clock:
    def __init__(self):
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def _canary() -> CanaryConfig:
    return CanaryConfig(
        window_s=30.0, poll_s=5.0, min_requests=60, traffic_percent=25,
        allow_unmeasured=["success_rate"],
    )  # fmt: skip


def _roll(backend: FleetBackend, version: str = "2"):
    clock = Clock()
    return run_rollout(backend, version, version, _canary(), now=clock.now, sleep=clock.sleep)


def test_a_healthy_canary_is_split_on_every_replica_then_promoted(replicas, tmp_path):
    a, b = replicas(), replicas()
    backend = FleetBackend(
        [Replica(a.url, TOKEN), Replica(b.url, TOKEN)], tmp_path / "s.json", "split"
    )
    result = _roll(backend)
    assert result.outcome == "promoted", result.reason
    # 50 requests on each replica: 100 in all, above min_requests 60 only when summed
    assert result.state.metrics["requests"] == 100.0
    assert (a.primary, b.primary) == ("2", "2") and a.second is None and b.second is None
    assert ("PUT", "/admin/canary") in a.calls and ("POST", "/admin/canary/promote") in b.calls
    assert json.loads((tmp_path / "s.json").read_text())["phase"] == "promoted"


def test_a_canary_failing_on_one_replica_is_rolled_back_everywhere(replicas, tmp_path):
    a, b = replicas(), replicas(canary_error_rate=1.0)
    backend = FleetBackend(
        [Replica(a.url, TOKEN), Replica(b.url, TOKEN)], tmp_path / "s.json", "split"
    )
    result = _roll(backend)
    assert result.outcome == "rolled_back"
    assert "error rate 0.5000" in result.reason  # 50 failures of 100 requests
    assert (a.primary, b.primary) == ("1", "1") and a.second is None and b.second is None


def test_a_replica_that_does_not_answer_fails_the_poll_naming_it(replicas, tmp_path):
    a = replicas()
    gone = "http://127.0.0.1:9"  # discard port: nothing listens
    backend = FleetBackend(
        [Replica(a.url, TOKEN), Replica(gone, TOKEN, timeout_s=2)], tmp_path / "s", "split"
    )
    state = RolloutState(new_uri="2", model_version="2", previous_uri="1", traffic_percent=25,
                         mode="fleet", phase="observing", started_at=0.0)  # fmt: skip
    with pytest.raises(MetricsUnavailable, match=r"127\.0\.0\.1:9"):
        backend.metrics(state, 30.0)
    with pytest.raises(FleetError, match=r"127\.0\.0\.1:9"):
        backend.live()


def test_replicas_that_disagree_or_a_bad_token_stop_the_rollout(replicas, tmp_path, monkeypatch):
    a, b = replicas(primary="1"), replicas(primary="3")
    backend = FleetBackend([Replica(a.url, TOKEN), Replica(b.url, TOKEN)], tmp_path / "s", "split")
    with pytest.raises(FleetError, match="different primaries"):
        backend.live()
    with pytest.raises(FleetError, match="answered 401"):
        Replica(a.url, "wrong").must("GET", "/admin/status")
    cfg = CaprankConfig()
    cfg.services.replica_urls = [a.url]
    monkeypatch.delenv(cfg.serving.admin_token_env, raising=False)
    with pytest.raises(FleetError, match=cfg.serving.admin_token_env):
        fleet_backend(cfg)
