"""The ranking engine: routes a request to a model, scores, applies rules, answers.

Models are held in one immutable ``Routing`` (primary, optional second model, mode,
share). Every change (hot swap, canary set/promote/drop, feature refresh) builds a new
``Routing`` and replaces the reference in one assignment; a request reads it once, so
one in flight finishes on the models it started with and no request ever fails because
of a swap.

- ``split``: the second model (canary) answers ``percent``% of requests, chosen by a hash
  of the client's correlation id when it sends one (deterministic: a retry with the same
  ``request_id`` gets the same model), else of the server-issued request id.

Every ranking gets a request id issued here (``new_request_id``); a client's
``request_id`` is kept as ``client_request_id`` for correlation only.
- ``shadow``: the primary answers every request; the second model scores the same request
  in a background thread and its ranking is logged and kept for comparison.
- fallback: when the model raises (or none is loaded yet) the dense fallback answers,
  the response says so and the fallback is counted; the request still counts as an error
  of the model that raised (its outcome window, ``RankResult.failed_version`` for the
  server's metrics), so a canary failing every request never looks healthy; with
  ``serving.fallback_on_error``
  off, a model error is a ``ModelFailure`` (HTTP 500 with the request id).
- exploration (``serving.explore``, off by default): whichever arm answered, the top of
  its ranking may be reordered at random, seeded by the request id; the served record
  keeps each shown position's propensity for the feedback events (``caprank.online.explore``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from caprank.config import CaprankConfig
from caprank.errors import CaprankError
from caprank.online.catalog import Catalog
from caprank.online.explore import explore
from caprank.online.features import FeatureSnapshot
from caprank.online.intents import IntentEncoder
from caprank.online.models import LoadedModel
from caprank.online.ranker import ScoreCache
from caprank.online.request import CandidateLists, RankRequest, RequestError
from caprank.online.rules import apply_rules, rule_adjustments
from caprank.online.served import RequestStore, ServedRanking
from caprank.online.stats import VersionStats

log = logging.getLogger(__name__)
shadow_log = logging.getLogger("caprank.online.shadow")

Mode = Literal["split", "shadow"]
STAGES = ("embed", "score", "rules", "total")


class ModelFailure(CaprankError):
    """The model (and the fallback, if allowed) failed on a valid request (HTTP 500)."""

    def __init__(self, request_id: str, message: str, client_request_id: str | None = None):
        self.request_id = request_id
        self.client_request_id = client_request_id
        named = f" (client request id {client_request_id})" if client_request_id else ""
        super().__init__(f"request {request_id}{named}: ranking failed: {message}")


@dataclass(frozen=True)
class Routing:
    primary: LoadedModel | None
    second: LoadedModel | None = None
    mode: Mode = "split"
    percent: int = 0


@dataclass
class RankResult:
    request_id: str
    model_version: str
    arm: str  # primary | canary | fallback
    rankings: list[dict]
    latency_ms: float
    cache_hit: bool
    fallback_reason: str | None
    features_stale: bool
    feature_age_hours: float | None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    client_request_id: str | None = None
    failed_version: str | None = None  # the model that raised before the fallback answered

    def to_json(self) -> dict:
        return {
            "request_id": self.request_id,
            "client_request_id": self.client_request_id,
            "model_version": self.model_version,
            "arm": self.arm,
            "rankings": self.rankings,
            "latency_ms": round(self.latency_ms, 3),
            "cache_hit": self.cache_hit,
            "fallback": self.fallback_reason,
            "features_stale": self.features_stale,
            "feature_age_hours": None
            if self.feature_age_hours is None
            else round(self.feature_age_hours, 3),
        }


def bucket(request_id: str) -> int:
    """A stable 0-99 bucket of a routing unit (canary and experiment split): the user,
    else the session, else the request, so a user stays in one arm on every replica."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") % 100


@dataclass
class _Scored:
    idx: np.ndarray
    scores: np.ndarray
    probs: np.ndarray | None
    cache_hit: bool
    embed_s: float
    score_s: float
    rules_s: float


class RankEngine:
    def __init__(
        self,
        cfg: CaprankConfig,
        catalog: Catalog,
        encoder: IntentEncoder,
        fallback: LoadedModel,
        clock=time.time,
        requests: RequestStore | None = None,
    ):
        self.cfg = cfg
        self.catalog = catalog
        self.candidate_lists = CandidateLists(
            catalog.position, max_bytes=int(cfg.serving.candidate_list_cache_mb * 2**20)
        )
        self.encoder = encoder
        self.fallback = fallback
        self.stats = VersionStats(clock)
        self.requests = (
            requests
            if requests is not None
            else RequestStore(
                cfg.serving.feedback.request_store_size, cfg.serving.feedback.request_store_ttl_s
            )
        )
        self._routing = Routing(primary=None, mode=cfg.canary.mode)
        self._lock = threading.Lock()  # serializes writers; readers never lock
        self._adjust = rule_adjustments(catalog.ids, cfg.serving.boost, cfg.serving.penalty)
        self.scores = ScoreCache(int(cfg.serving.intents.score_cache_mb * 2**20))
        self._shadow_pool = ThreadPoolExecutor(1, thread_name_prefix="shadow")
        self.shadow_results: deque[dict] = deque(maxlen=1000)
        self.fallbacks: dict[str, int] = {}

    # ------------------------------------------------------------- model management
    @property
    def routing(self) -> Routing:
        return self._routing

    @property
    def features(self) -> FeatureSnapshot | None:
        r = self._routing
        return (r.primary or self.fallback).features

    def set_primary(self, model: LoadedModel) -> None:
        """Hot swap: ``model`` answers from the next request on."""
        with self._lock:
            self._routing = replace(self._routing, primary=model)

    def set_second(self, model: LoadedModel | None, mode: Mode, percent: int) -> None:
        """Install (or with None, drop) the canary / shadow model."""
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be in [0, 100], got {percent}")
        with self._lock:
            self._routing = replace(self._routing, second=model, mode=mode, percent=percent)

    def promote(self) -> LoadedModel:
        """The second model becomes the primary; no second model remains."""
        with self._lock:
            second = self._routing.second
            if second is None:
                raise RuntimeError("no canary or shadow model to promote")
            self._routing = Routing(primary=second, mode=self._routing.mode)
            return second

    def with_features(self, snapshot: FeatureSnapshot) -> None:
        """Swap in a new feature snapshot (models that read features are rebuilt first)."""
        r = self._routing
        primary = r.primary.with_features(snapshot) if r.primary else None
        second = r.second.with_features(snapshot) if r.second else None
        fallback = self.fallback.with_features(snapshot)
        with self._lock:
            cur = self._routing
            # keep any model swapped in meanwhile; only replace the ones we rebuilt
            self._routing = Routing(
                primary if cur.primary is r.primary else cur.primary,
                second if cur.second is r.second else cur.second,
                cur.mode,
                cur.percent,
            )
            self.fallback = fallback

    def observe_on(self, clock) -> None:
        """Start a fresh per-version outcome window on ``clock`` (the local canary's
        virtual clock, so its guardrails count requests, not wall-clock seconds)."""
        self.stats = VersionStats(clock)

    # --------------------------------------------------------------------- ranking
    def cached(self, intent: str) -> bool:
        """Whether every model that may answer has ``intent``'s vector cached: the request
        then costs no encoder pass and the server answers it without queueing."""
        r = self._routing
        models = [r.primary or self.fallback]
        if r.second is not None and r.mode == "split" and r.percent > 0:
            models.append(r.second)
        return all(self.encoder.cache.peek(m.ranker.text_model, intent) for m in models)

    def new_request_id(self) -> str:
        """A fresh server-issued request id (128 random bits, 32 hex digits: never reused;
        ``uuid4`` costs four times as much and carries six random bits fewer)."""
        return os.urandom(16).hex()

    def _score(self, model: LoadedModel, req: RankRequest, idx: np.ndarray | None) -> _Scored:
        t0 = time.perf_counter()
        vec, hit = self.encoder.embed(req.intent, model.ranker.text_model)
        t1 = time.perf_counter()
        ranker = model.ranker
        if hit:  # a cached intent: its scores over the catalog are cached too
            scores = self.scores.scores(ranker, req.intent, vec, idx, len(self.catalog))
        else:
            scores = ranker.score(ranker.query(vec, req.intent), idx)
        if not (hit or np.isfinite(scores).all()):  # a diverged model must not serve an
            # arbitrary order (cached scores were checked once, when the cache took them)
            raise FloatingPointError(f"model {model.version} produced non-finite scores")
        t2 = time.perf_counter()
        cand = idx if idx is not None else np.arange(len(self.catalog), dtype=np.int64)
        rows, adjusted = apply_rules(
            cand,
            scores,
            tool_sets=self.catalog.tool_sets,
            context_tools=req.context_tools,
            adjustments=self._adjust,
            min_score=req.min_score,
            top_k=req.top_k,
        )
        probs = None
        if ranker.has_value_head and len(rows):
            probs = ranker.success_probability(vec, req.intent, rows)
        t3 = time.perf_counter()
        return _Scored(rows, adjusted, probs, hit, t1 - t0, t2 - t1, t3 - t2)

    def _candidates(self, req: RankRequest) -> np.ndarray | None:
        if req.candidate_ids is None:
            return None
        if req.candidate_rows is not None and req.rows_of is self.catalog.position:
            return req.candidate_rows  # found while parsing, for this catalog
        try:
            return self.catalog.index_of(req.candidate_ids)
        except KeyError as exc:
            raise RequestError("candidate_ids", f"unknown capability ids: {exc.args[0]}") from None

    def rank(self, req: RankRequest, request_id: str | None = None) -> RankResult:
        """Rank one validated request; raises ``RequestError`` or ``ModelFailure``.

        ``request_id`` is for server-side callers only (the local canary traffic's seeded
        ids); otherwise a fresh one is issued. Never the client's ``request_id``."""
        start = time.perf_counter()
        request_id = request_id or self.new_request_id()
        cid = req.client_request_id
        idx = self._candidates(req)
        routing = self._routing
        model, arm = routing.primary, "primary"
        if (
            routing.second is not None
            and routing.mode == "split"
            and bucket(req.user_id or req.session_id or cid or request_id) < routing.percent
        ):
            model, arm = routing.second, "canary"
        reason, failed = None, None
        if model is None:
            model, arm, reason = self.fallback, "fallback", "not_loaded"
        try:
            scored = self._score(model, req, idx)
        except RequestError:
            raise
        except Exception as exc:
            elapsed = (time.perf_counter() - start) * 1000
            self.stats.record(model.version, elapsed, error=True)
            log.exception("model %s failed on request %s", model.version, request_id)
            if model is self.fallback or not self.cfg.serving.fallback_on_error:
                raise ModelFailure(request_id, f"{type(exc).__name__}: {exc}", cid) from exc
            failed, model, arm, reason = model.version, self.fallback, "fallback", "model_error"
            try:
                scored = self._score(model, req, idx)
            except Exception as exc2:
                msg = f"fallback: {type(exc2).__name__}: {exc2}"
                raise ModelFailure(request_id, msg, cid) from exc2
        if reason is not None:
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
        scored, propensities = self._explore(scored, request_id)
        shown, rankings = self._rankings(scored)
        total = time.perf_counter() - start
        if reason != "model_error":
            self.stats.record(model.version, total * 1000, error=False)
        snap = model.features
        stale = snap is None or bool(snap.n_stale and snap.stale_mask[scored.idx].any())
        result = RankResult(
            request_id=request_id,
            model_version=model.version,
            arm=arm,
            rankings=rankings,
            latency_ms=total * 1000,
            cache_hit=scored.cache_hit,
            fallback_reason=reason,
            features_stale=stale,
            feature_age_hours=snap.age_hours() if snap is not None else None,
            timings={
                "embed": scored.embed_s,
                "score": scored.score_s,
                "rules": scored.rules_s,
                "total": total,
            },
            client_request_id=cid,
            failed_version=failed,
        )
        self.requests.put(
            ServedRanking(
                request_id=request_id,
                intent_text=req.intent,
                context_tools=req.context_tools or (),
                shown=shown,
                model_version=model.version,
                served_at=datetime.now(UTC),
                session_id=req.session_id,
                user_id=req.user_id,
                propensities=propensities,
            )
        )
        if routing.second is not None and routing.mode == "shadow" and arm == "primary":
            self._shadow_pool.submit(self._shadow, routing.second, req, idx, result)
        return result

    def _explore(self, scored: _Scored, request_id: str) -> tuple[_Scored, tuple | None]:
        """``scored`` in the order shown and each position's propensity (None when
        exploration is off: the order is the model's and every propensity is 1)."""
        cfg = self.cfg.serving.explore
        if cfg.policy == "none":
            return scored, None
        shown = explore(scored.scores, cfg, request_id)
        o = shown.order
        probs = None if scored.probs is None else scored.probs[o]
        scored = replace(scored, idx=scored.idx[o], scores=scored.scores[o], probs=probs)
        return scored, tuple(float(p) for p in shown.propensities)

    def _rankings(self, scored: _Scored) -> tuple[tuple[str, ...], list[dict]]:
        """(the capability ids shown, in order; the response's ranking items)."""
        ids = self.catalog.ids
        names = tuple([ids[row] for row in scored.idx.tolist()])
        values = [round(s, 6) for s in scored.scores.tolist()]
        if scored.probs is None:
            items = [{"capability_id": c, "score": s} for c, s in zip(names, values, strict=True)]
            return names, items
        probs = [round(p, 6) for p in scored.probs.tolist()]
        return names, [
            {"capability_id": c, "score": s, "success_probability": p}
            for c, s, p in zip(names, values, probs, strict=True)
        ]

    def _shadow(
        self, model: LoadedModel, req: RankRequest, idx: np.ndarray | None, primary: RankResult
    ) -> None:
        t0 = time.perf_counter()
        try:
            scored = self._score(model, req, idx)
        except Exception as exc:
            self.stats.record(model.version, (time.perf_counter() - t0) * 1000, error=True)
            shadow_log.warning("shadow %s failed on %s: %s", model.version, primary.request_id, exc)
            return
        self.stats.record(model.version, (time.perf_counter() - t0) * 1000, error=False)
        shown = [self.catalog.ids[i] for i in scored.idx.tolist()]
        served = [r["capability_id"] for r in primary.rankings]
        record = {
            "request_id": primary.request_id,
            "primary_version": primary.model_version,
            "shadow_version": model.version,
            "primary": served,
            "shadow": shown,
            "overlap": len(set(served) & set(shown)) / max(len(served), 1),
            "same_top1": bool(served[:1] == shown[:1]),
        }
        self.shadow_results.append(record)
        shadow_log.info(json.dumps(record))

    def close(self) -> None:
        self._shadow_pool.shutdown(wait=False)
        self.encoder.close()
