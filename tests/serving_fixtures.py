"""A real predictor on loopback for the serving tests (uvicorn in a thread).

One server per test module: the tiny synthesized catalog, its features published to a
Feast SQLite store in a temporary home, the packaged MiniLM encoder, the dense model.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.serving_proc import free_port
from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.online.runtime import Runtime
from serving.server import ThreadedServer


@dataclass
class Served:
    server: ThreadedServer
    runtime: Runtime
    cfg: CaprankConfig

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, method: str, path: str, body=None, raw: bytes | None = None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
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


def start_served(cfg: CaprankConfig, ds: Dataset, home: Path, publish: bool = True) -> Served:
    cfg = cfg.model_copy(deep=True)
    cfg.paths.home = home
    cfg.paths.data = ds.root
    cfg.serving.feature_refresh_s = 3600.0
    cfg.serving.feedback.compact_s = 3600.0
    if publish:
        from caprank.features.stage import build_and_publish

        build_and_publish(ds, cfg, home / "feature-build")
    runtime = Runtime(cfg, "dense").start(background_load=False)
    server = ThreadedServer(runtime, "caprank", free_port()).start()
    return Served(server, runtime, cfg)


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
