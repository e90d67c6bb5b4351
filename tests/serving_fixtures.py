"""A real predictor on loopback for the serving tests (uvicorn in a thread).

KServe serves one app per process (``kserve.model_server.app``), so the tests do as
KServe's own do: one ``CaprankServer`` and its app for the session, built as
``ModelServer.start`` builds them (``mount``, then KServe's ``create_application``), and
served on loopback; each test module binds its own runtime to it (the tiny synthesized
catalog, its features published to a Feast SQLite store in a temporary home, the packaged
MiniLM encoder, the dense model).
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import uvicorn
from kserve.model_server import app as kserve_app
from kserve.protocol.rest.server import RESTServer

from benchmarks.serving_proc import free_port
from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.online.routes import mount
from caprank.online.runtime import Runtime
from serving.model import CaprankModel
from serving.server import CaprankServer, bind

ADMIN_TOKEN_ENV = "TEST_CAPRANK_ADMIN_TOKEN"  # not CAPRANK_*: no config key
ADMIN_TOKEN = "test-admin-token-0123456789"


@functools.cache
def kserve_server() -> tuple[CaprankServer, str]:
    """The process's server and its URL: KServe's app on a free loopback port."""

    def repository_open() -> bool:
        state = getattr(kserve_app.state, "caprank", None)
        return state is not None and state.runtime.cfg.serving.model_repository

    server = CaprankServer(enable_grpc=False, repository_open=repository_open)
    port = free_port()
    mount(kserve_app, CaprankConfig().serving.max_payload_bytes)
    RESTServer(
        kserve_app, server.dataplane, server.model_repository_extension, port
    ).create_application()
    config = uvicorn.Config(kserve_app, host="127.0.0.1", port=port, log_config=None,
                            access_log=False, lifespan="on", loop="asyncio")  # fmt: skip
    http = uvicorn.Server(config)
    threading.Thread(target=http.run, name="uvicorn", daemon=True).start()
    deadline = time.monotonic() + 30
    while not http.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


@dataclass
class Served:
    model: CaprankModel
    runtime: Runtime
    cfg: CaprankConfig
    url: str

    def close(self) -> None:
        server = kserve_server()[0]
        server.registered_models.unload(self.model.name)
        server.dataplane.served.discard(self.model.name)
        self.model.metrics.close()
        self.runtime.close()

    def call(
        self, method: str, path: str, body=None, raw: bytes | None = None,
        headers: dict | None = None,
    ):  # fmt: skip
        """(status, JSON body); /admin calls carry the test's admin token unless
        ``headers`` names an ``authorization`` of its own."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        sent = {"content-type": "application/json"}
        if path.startswith("/admin"):
            sent["authorization"] = f"Bearer {ADMIN_TOKEN}"
        sent.update(headers or {})
        sent = {k: v for k, v in sent.items() if v is not None}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read()
                return resp.status, json.loads(text) if text else {}
        except urllib.error.HTTPError as exc:
            text = exc.read()
            return exc.code, json.loads(text) if text else {}

    def rank(self, instance: dict) -> dict:
        code, body = self.call("POST", "/v1/models/caprank:predict", {"instances": [instance]})
        assert code == 200, body
        return body["predictions"][0]

    def metric(self, name: str, **labels) -> float:
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
            if not m:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
        return total


def start_served(
    cfg: CaprankConfig, ds: Dataset, home: Path, publish: bool = True, model_ref: str = "dense"
) -> Served:
    cfg = cfg.model_copy(deep=True)
    cfg.paths.home = home
    cfg.paths.data = ds.root
    cfg.serving.feature_refresh_s = 3600.0
    cfg.serving.feedback.compact_s = 3600.0
    # the admin routes on, with a token only the tests know; rate limits off (one client
    # sends every test's requests); tests/test_serving_security.py turns them on
    cfg.serving.admin_token_env = ADMIN_TOKEN_ENV
    os.environ[ADMIN_TOKEN_ENV] = ADMIN_TOKEN
    cfg.serving.rate_limit.predict_per_s = 0.0
    cfg.serving.rate_limit.feedback_per_s = 0.0
    if publish:
        from caprank.features.stage import build_and_publish

        build_and_publish(ds, cfg, home / "feature-build")
    runtime = Runtime(cfg, model_ref).start(background_load=False)
    server, url = kserve_server()
    model = bind(kserve_app, runtime, "caprank")
    server.register_model(model)
    return Served(model, runtime, cfg, url)


class FailingRanker:
    """A model whose scoring raises: the fault the server must survive."""

    text_model = "all-MiniLM-L6-v2"
    has_value_head = False

    def query(self, intent_vec: np.ndarray, text: str) -> np.ndarray:
        return intent_vec

    def score(self, query, candidate_idx):
        raise RuntimeError("scoring exploded")

    def success_probability(self, intent_vec, text, candidate_idx):
        return None
