"""The real servers a cluster-shaped run talks to, on loopback, and the pods beside them.

PostgreSQL and Redis are the machine's own (CI has both); each run gets fresh databases
(MLflow's backend store, Feast's registry, the feedback sink) and a flushed Redis
database. MLflow is a real ``mlflow server`` process on the PostgreSQL backend with
proxied artifacts. ``pod_env`` is what a ConfigMap and a Secret would put in every pod.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.serving_proc import free_port

PG_HOST = os.environ.get("CAPRANK_E2E_PG", "postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("CAPRANK_E2E_REDIS", "redis://127.0.0.1:6379/9")
DATABASES = ("mlflow", "feast", "feedback")


def fresh_database(name: str) -> str:
    """Drop and create database ``name``; its SQLAlchemy/libpq URL."""
    import psycopg

    with psycopg.connect(f"postgresql://{PG_HOST}/test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://{PG_HOST}/{name}"


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not up in {timeout_s}s: {log.read_text()[-3000:]}")


@dataclass
class Services:
    """The shared services of one run, started under ``root``."""

    root: Path
    prefix: str = "caprank_e2e"
    urls: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    id_hash_key: str = field(default_factory=lambda: secrets.token_hex(32))

    def start(self) -> Services:
        for name in DATABASES:
            self.urls[name] = fresh_database(f"{self.prefix}_{name}")
        flush_redis(REDIS_URL)
        port = free_port()
        store = self.root / "mlflow-artifacts"
        store.mkdir(parents=True, exist_ok=True)
        log = self.root / "mlflow-server.log"
        argv = [
            str(Path(sys.executable).with_name("mlflow")), "server",
            "--backend-store-uri", self.urls["mlflow"],
            "--artifacts-destination", store.as_uri(), "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, cwd=self.root)
        self.procs.append(proc)
        self.urls["mlflow_server"] = f"http://127.0.0.1:{port}"
        wait_http(f"{self.urls['mlflow_server']}/health", 180, proc, log)
        return self

    def pod_env(self) -> dict[str, str]:
        """The ConfigMap (endpoints) and the Secret (DSNs, keys) every pod gets."""
        return {
            "CAPRANK_SERVICES__MLFLOW_TRACKING_URI": self.urls["mlflow_server"],
            "CAPRANK_SERVICES__FEAST_ONLINE_STORE": "redis",
            "CAPRANK_SERVICES__REDIS_URL": REDIS_URL,
            "CAPRANK_SERVING__FEEDBACK__SINK": "postgres",
            "CAPRANK_SERVING__FEEDBACK__SERVED_STORE": "redis",
            "CAPRANK_SERVICES__FEAST_REGISTRY": self.urls["feast"],
            "CAPRANK_SERVICES__FEEDBACK_DSN": self.urls["feedback"],
            "CAPRANK_ADMIN_TOKEN": self.admin_token,
            "CAPRANK_SECRET_ID_HASH_KEY": self.id_hash_key,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@dataclass
class Replica:
    """One ``caprank serve`` replica in its own empty directory, started from the registry."""

    root: Path
    env: dict[str, str]
    args: list[str]
    overrides: list[str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 300.0) -> Replica:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "serving", "--http_port", str(self.port), *self.args]
        for override in self.overrides:
            argv += ["--set", override]
        env = {**os.environ, **self.env, "HOME": str(self.root)}
        log = self.root / "server.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=self.root, env=env, stdout=out, stderr=out)
        wait_http(f"{self.url}/v2/health/ready", timeout_s, self.proc, log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
