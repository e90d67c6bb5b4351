"""Helpers shared by the serving benchmarks and tests: a predictor in its own process.

``ServerProcess`` starts ``python -m serving`` on a free port (KServe's server listens on
every interface; the client talks to loopback) with a given caprank home and model
directory, waits for readiness, and kills it (SIGKILL or SIGTERM).
``cpus`` pins the server (all its threads) to those cores, so a benchmark's load
generator can run on the others. ``Client`` is a small keep-alive JSON client over
``http.client`` (one per thread).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from serving import PROMETHEUS_MULTIPROCESS_ENV

ROOT = Path(__file__).resolve().parent.parent
# the throughput benchmarks load one server from one address: per-client limits off
NO_RATE_LIMIT = ["serving.rate_limit.predict_per_s=0", "serving.rate_limit.feedback_per_s=0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, port: int, timeout: float = 30.0):
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body=None, headers: dict | None = None
    ) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        sent = {"content-type": "application/json", **(headers or {})}
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=sent)
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else {}
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, body, headers: dict | None = None) -> tuple[int, dict]:
        return self.request("POST", path, body, headers)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class ServerProcess:
    def __init__(
        self,
        model_dir: str | Path,
        home: str | Path,
        port: int | None = None,
        overrides: list[str] | None = None,
        model_name: str = "caprank",
        extra_env: dict | None = None,
        module: str = "serving",
        cpus: set[int] | None = None,
    ):
        self.port = port or free_port()
        self.model_name = model_name
        args = [sys.executable, "-m", *module.split(), "--model_name", model_name]
        args += ["--model_dir", str(model_dir), "--http_port", str(self.port)]
        args += ["--set", f"paths.home={home}"]
        for o in overrides or []:
            args += ["--set", o]
        self.args = args
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        for name in PROMETHEUS_MULTIPROCESS_ENV:  # what importing Feast here set (serving/)
            self.env.pop(name, None)
        self.env["PYTHONPATH"] = str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env.update(extra_env or {})
        self.log_path = Path(home) / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.cpus = set(cpus) if cpus else None
        self.started_s: float | None = None  # process start to ready, seconds

    def _pin(self) -> None:
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)  # in the child, before exec: threads inherit

    def start(self, timeout_s: float = 120.0) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child holds it)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=log, stderr=log, preexec_fn=self._pin
        )
        client = Client(self.port, timeout=5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                code, _ = client.request("GET", "/v2/health/ready")
                if code == 200:
                    client.close()
                    self.started_s = time.perf_counter() - t0
                    return self
            except OSError:
                pass
            client.close()
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server not ready in {timeout_s}s: {self.log_path.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
