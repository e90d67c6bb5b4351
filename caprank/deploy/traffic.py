"""Synthetic-but-real traffic for the local canary: real requests through the engine.

With no cluster and no users, the local rollout still needs requests for its guardrails
to judge. These are drawn (seeded) from the dataset's own intent texts, ranked over the
whole catalog by the real engine, so the canary's error rate and latency are measured on
the same code path a server runs; only the users are synthetic. The pool's intent
embeddings are cached first (a pool of repeated intents, as real traffic repeats), so the
window measures the cache-hit path. The window is a number of requests, not a stretch of
wall-clock time (``VirtualClock``): a busy machine makes the run slower, never the
evidence thinner. No outcomes are invented: the quality guardrail stays unmeasured in
local mode.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from caprank.config import CaprankConfig
from caprank.online.catalog import Catalog, catalog_from_tables, load_catalog
from caprank.online.engine import ModelFailure
from caprank.online.runtime import Runtime


def local_inputs(cfg: CaprankConfig, model_dir: str | Path | None, n_intents: int):
    """(catalog, intent texts) for the local canary: the model's catalog if it ships one,
    else ``paths.data``, else the embedded default; intents from the same dataset."""
    if cfg.paths.data is None:
        from caprank.data.synth import synthesize

        ds = synthesize(cfg)
        source = f"embedded default (synthetic, seed {cfg.data.seed})"
        default = catalog_from_tables(ds.tools, ds.capabilities, source)
        texts = ds.intents["text"].to_pylist()
    else:
        from caprank.data.dataset import read_table

        default = None
        texts = read_table(cfg.paths.data, "intents")["text"].to_pylist()
        if not texts:
            log = read_table(cfg.paths.data, "interactions")
            texts = sorted(set(log["intent_text"].to_pylist()))
    catalog = _model_catalog(model_dir) or default or load_catalog(cfg)
    if not texts:
        texts = list(catalog.texts)
    return catalog, sample_intents(texts, n_intents, cfg.data.seed)


def _model_catalog(model_dir: str | Path | None) -> Catalog | None:
    if model_dir is None or not Path(model_dir).is_dir():
        return None
    from caprank.online.catalog import CATALOG_DIR, read_catalog
    from caprank.online.models import find_model_root

    root = find_model_root(model_dir)
    return read_catalog(root / CATALOG_DIR) if (root / CATALOG_DIR).is_dir() else None


def sample_intents(texts: list[str], n: int, seed: int) -> list[str]:
    """Up to ``n`` distinct texts, drawn reproducibly."""
    unique = sorted({t for t in texts if t and t.strip()})
    if len(unique) <= n:
        return unique
    return random.Random(seed).sample(unique, n)


class VirtualClock:
    """The local canary's clock: time advances only when the controller sleeps, and each
    sleep sends that interval's requests. So the window holds a fixed number of requests
    however slow or busy the CPU is, and the decision rests on what the guardrails
    measure (error rate, latency of the requests themselves), not on the machine's load."""

    def __init__(self, on_sleep: Callable[[float], None], start: float | None = None):
        self._now = time.time() if start is None else start
        self._on_sleep = on_sleep

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self._on_sleep(seconds)
        self._now += seconds


@dataclass
class SyntheticTraffic:
    """Sends ``total`` requests spread over a ``window_s`` observation window, then tops up
    until every routed model has ``min_per_model`` requests (at most ``max_total`` sent).

    Request ids are drawn from the seed, so the split between the arms, like the intents
    drawn, is the same on every run."""

    runtime: Runtime
    intents: list[str]
    total: int
    window_s: float
    min_per_model: int = 0
    max_total: int | None = None
    seed: int = 0
    top_k: int = 10
    sent: int = 0
    errors: int = 0
    elapsed: float = 0.0
    by_version: Counter = field(default_factory=Counter)
    by_arm: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if not self.intents:
            raise ValueError("synthetic traffic needs at least one intent text")
        self._rng = random.Random(self.seed)
        self._warmed: set[str] = set()
        self._due = 0.0

    def warm(self) -> None:
        """Cache the pool's embeddings for every model now routed: the pool repeats, as
        real traffic does, so requests are cache hits."""
        routing = self.runtime.engine.routing
        for model in (routing.primary, routing.second):
            text_model = model.ranker.text_model if model is not None else None
            if text_model is not None and text_model not in self._warmed:
                self.runtime.engine.encoder.warm(self.intents, text_model)
                self._warmed.add(text_model)

    def run_for(self, seconds: float) -> None:
        """Send this interval's share of ``total``; on the interval that closes the window,
        top up so that no routed model is judged on fewer than ``min_per_model``."""
        self.warm()
        self.elapsed += max(seconds, 0.0)
        self._due += self.total * max(seconds, 0.0) / self.window_s
        while self.sent < math.floor(self._due + 1e-9):
            self.send_one()
        if self.elapsed >= self.window_s - 1e-9:
            self.top_up()

    def routed_versions(self) -> list[str]:
        routing = self.runtime.engine.routing
        return [m.version for m in (routing.primary, routing.second) if m is not None]

    def top_up(self) -> None:
        cap = self.max_total if self.max_total is not None else 20 * max(self.total, 1)
        stats = self.runtime.engine.stats
        while self.sent < cap and any(
            stats.count(v) < self.min_per_model for v in self.routed_versions()
        ):
            self.send_one()

    def send_one(self) -> None:
        request_id = f"canary-{self._rng.getrandbits(64):016x}"
        body = {"intent": self._rng.choice(self.intents), "top_k": self.top_k}
        self.sent += 1
        try:
            result = self.runtime.rank(body, request_id)
        except ModelFailure:
            self.errors += 1
            return
        self.by_version[result.model_version] += 1
        self.by_arm[result.arm] += 1

    def summary(self) -> dict:
        return {
            "requests": self.sent,
            "errors": self.errors,
            "by_version": dict(self.by_version),
            "by_arm": dict(self.by_arm),
        }
