"""Everything a predictor process holds, wired together (the server is an adapter on it).

Start-up order: catalog, feature snapshot (one online read), dense fallback, feedback log
recovery; then the model named by the reference loads in a background thread. Until it
has loaded the runtime can already answer (with the fallback, counted as such) but is not
*ready*, which is what the readiness probe reports. Background threads refresh features
every ``serving.feature_refresh_s`` and compact the feedback log every
``serving.feedback.compact_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_bytes
from typing import Any

from caprank.config import CaprankConfig
from caprank.errors import CaprankError
from caprank.online.catalog import Catalog, load_catalog
from caprank.online.control import check_model_ref
from caprank.online.engine import Mode, RankEngine, RankResult
from caprank.online.features import FeatureSnapshot, read_snapshot
from caprank.online.feedback import DROPPED, FeedbackLog, build_event, parse_feedback
from caprank.online.feedback_pg import PostgresFeedbackSink
from caprank.online.intents import Encode, IntentEncoder, default_encode, serving_backend
from caprank.online.models import (
    FALLBACK_VERSION,
    LoadedModel,
    ModelLoadError,
    RegistryUnavailable,
    build_model,
    dense_builder,
    load_model_ref,
    registry_version,
)
from caprank.online.request import RankRequest, RequestError, parse_rank_request
from caprank.online.served import SERVED_DIR, DurableRequestStore, RequestStore
from caprank.online.served_redis import RedisRequestStore
from caprank.online.sinks import open_sink
from caprank.privacy import scrub_pii
from caprank.pseudonym import IdProtector, PiiIdError, id_protector

log = logging.getLogger(__name__)

DENSE_REF = "dense"  # model reference: the dense ranker itself is the served model


class UnknownRequest(CaprankError):
    """Feedback names a request id the server does not hold (HTTP 404)."""


@dataclass
class FeedbackAck:
    status: str  # stored | duplicate | dropped
    event_id: str | None
    reason: str = ""


def default_model_ref(cfg: CaprankConfig) -> str:
    """What ``caprank serve`` loads: ``serving.model_ref`` (a directory, ``dense``, a
    version number or an alias; by default ``production``, the alias only the deploy
    stage's promotion moves). Never another alias or the latest version: an evaluated
    but unpromoted ``challenger`` is served only when named.

    A registry that cannot be read is an error naming it (``RegistryUnavailable``), and
    so is a version or alias it lacks, unless ``serving.missing_model`` says ``dense``
    (or ``auto`` on the embedded local registry, which holds nothing before the first
    promotion: a registry without the name is then served by the dense ranker)."""
    ref = cfg.serving.model_ref
    if ref == DENSE_REF or Path(ref).expanduser().is_dir():
        return ref
    try:
        return registry_version(cfg, ref)
    except RegistryUnavailable:
        if cfg.serving.missing_model != "dense":
            raise
        log.warning("the registry cannot be read; serving.missing_model=dense: serving "
                    "the dense ranker instead of '%s'", ref)  # fmt: skip
        return DENSE_REF
    except ModelLoadError:
        embedded = cfg.serving.missing_model == "auto" and not cfg.services.mlflow_tracking_uri
        if ref.isdigit() or not (cfg.serving.missing_model == "dense" or embedded):
            raise
        log.warning("registered model '%s' has no '%s' yet: serving the dense ranker",
                    cfg.services.registered_model, ref)  # fmt: skip
        return DENSE_REF


class Runtime:
    def __init__(
        self,
        cfg: CaprankConfig,
        model_ref: str | None = None,
        *,
        encode: Encode | None = None,
        catalog: Catalog | None = None,
    ):
        self.cfg = cfg
        self.model_ref = model_ref or cfg.serving.model_ref
        self._encode = encode or default_encode(cfg.embedding.device, serving_backend(cfg))
        self._catalog = catalog
        self.engine: RankEngine | None = None
        self.feedback_log: FeedbackLog | PostgresFeedbackSink | None = None
        self.ids: IdProtector | None = None
        self.load_error: str = ""
        self.loading = False
        self.feature_refreshes = 0
        self.feature_refresh_errors = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- life cycle
    def start(self, background_load: bool = True, feedback: bool = True) -> Runtime:
        """Load everything; ``feedback=False`` (the deploy stage's in-process canary) opens no
        feedback log, so it never contends with a server's log."""
        cfg = self.cfg
        # Fails here when a required key is missing; without a feedback log nothing is
        # stored, so an in-process canary hashes with a throwaway key and needs no Secret.
        self.ids = (
            id_protector(cfg) if feedback else IdProtector(cfg.privacy.pii_ids, token_bytes(32))
        )
        if cfg.serving.intents.torch_threads:
            import torch

            torch.set_num_threads(cfg.serving.intents.torch_threads)
        catalog = self._catalog or load_catalog(
            cfg, self.model_ref if Path(self.model_ref).is_dir() else None
        )
        snapshot = read_snapshot(cfg, catalog.ids)
        fallback = build_model(
            dense_builder(cfg), catalog, snapshot, FALLBACK_VERSION, "fallback:dense"
        )
        self._encode(["warm up the intent encoder"], cfg.embedding.text_model)
        encoder = IntentEncoder(cfg.serving, self._encode)
        self.engine = RankEngine(
            cfg, catalog, encoder, fallback, requests=self._request_store(feedback)
        )
        if feedback:
            self.feedback_log = open_sink(cfg, self.ids)
            self.feedback_log.enforce_retention()
        if background_load:
            self.loading = True
            self._spawn(self._load_initial, "model-load")
        else:
            self._load_initial()
        self._spawn(self._refresh_loop, "feature-refresh")
        if feedback:
            self._spawn(self._compact_loop, "feedback-compact")
        return self

    def _request_store(self, durable: bool) -> RequestStore:
        """The served-ranking store: when this process takes feedback, in Redis
        (``served_store: redis``, shared by the replicas) or in a log beside the feedback
        log (so a restart keeps it); else in memory."""
        fb = self.cfg.serving.feedback
        if not durable:
            return RequestStore(fb.request_store_size, fb.request_store_ttl_s)
        scrub = scrub_pii if self.cfg.privacy.scrub_pii else None
        if fb.served_store == "redis":
            return RedisRequestStore(
                self.cfg.services.redis_url, fb.served_key_prefix, fb.request_store_size,
                fb.request_store_ttl_s, scrub=scrub,
            ).open()  # fmt: skip
        return DurableRequestStore(
            self.cfg.feedback_dir() / SERVED_DIR, fb.request_store_size,
            fb.request_store_ttl_s, fb.request_store_fsync_s, scrub=scrub,
        ).open()  # fmt: skip

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _load_initial(self) -> None:
        try:
            self.engine.set_primary(self._warm(self.load(self.model_ref)))
            self.load_error = ""
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("loading model %s failed", self.model_ref)
        finally:
            self.loading = False

    def close(self) -> None:
        self._stop.set()
        if self.feedback_log is not None:
            self.feedback_log.close()
        if self.engine is not None:
            self.engine.requests.close()
            self.engine.close()

    # -------------------------------------------------------------------- state
    @property
    def can_serve(self) -> bool:
        """Requests can be answered (by the model, or by the fallback until it loads)."""
        return self.engine is not None

    @property
    def ready(self) -> bool:
        """The model named by the reference (or a later swap) is loaded."""
        return self.engine is not None and self.engine.routing.primary is not None

    # ------------------------------------------------------------------- models
    def load(
        self, ref: str, version: str | None = None, registry_only: bool = False
    ) -> LoadedModel:
        """Load ``ref`` (directory, registry version or alias, or 'dense') for this catalog."""
        engine = self.engine
        snapshot = engine.features
        if ref == DENSE_REF:
            return build_model(
                dense_builder(self.cfg), engine.catalog, snapshot, version or "dense", ref
            )
        return load_model_ref(
            self.cfg, ref, engine.catalog, snapshot, version or None, registry_only
        )

    def load_checked(self, ref: str, version: str | None = None) -> LoadedModel:
        """``load`` for a reference from outside (the admin API): only the registry, the
        dense ranker or a directory under ``serving.model_roots`` (``RequestError`` else)."""
        if ref == DENSE_REF:
            return self.load(ref, version)
        target, registry_only = check_model_ref(self.cfg.serving, ref)
        return self.load(target, version, registry_only)

    def _warm(self, model: LoadedModel) -> LoadedModel:
        """Load the model's text encoder now, not on the first request."""
        self._encode(["warm up the intent encoder"], model.ranker.text_model)
        return model

    def swap(self, ref: str, version: str | None = None) -> LoadedModel:
        model = self.load_checked(ref, version)
        self.engine.set_primary(model)
        return model

    def set_second(self, ref: str, percent: int, mode: Mode, version: str | None = None):
        model = self.load_checked(ref, version)
        self.engine.set_second(model, mode, percent)
        return model

    # ----------------------------------------------------------------- features
    def refresh_features(self) -> FeatureSnapshot:
        """Read every capability's features once and swap them in (also on demand)."""
        snapshot = read_snapshot(self.cfg, self.engine.catalog.ids)
        self.engine.with_features(snapshot)
        self.feature_refreshes += 1
        if snapshot.error:
            self.feature_refresh_errors += 1
        return snapshot

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.cfg.serving.feature_refresh_s):
            try:
                self.refresh_features()
            except Exception:
                self.feature_refresh_errors += 1
                log.exception("feature refresh failed")

    def _compact_loop(self) -> None:
        while not self._stop.wait(self.cfg.serving.feedback.compact_s):
            try:
                self.feedback_log.compact(rotate=True)
            except Exception:
                log.exception("feedback compaction failed")

    # ------------------------------------------------------------------ requests
    def parse_rank(self, body: Any, client_request_id: str | None = None) -> RankRequest:
        """A validated request whose identifiers are already hashed or refused per
        ``privacy.pii_ids`` (nothing downstream, the served-ranking store or feedback,
        sees them raw). ``client_request_id`` (an already validated header or V2 id) is
        the correlation id of a body that carries none. Every way into ranking goes
        through here."""
        engine = self.engine
        req = parse_rank_request(body, self.cfg.serving, engine.candidate_lists if engine else None)
        cid = req.client_request_id or client_request_id
        user_id = self._protect(req.user_id, "user_id")
        session_id = self._protect(req.session_id, "session_id")
        if (cid, user_id, session_id) == (req.client_request_id, req.user_id, req.session_id):
            return req  # nothing changed (the common case): no copy
        return replace(req, client_request_id=cid, user_id=user_id, session_id=session_id)

    def rank(
        self, body: Any, request_id: str | None = None, *, client_request_id: str | None = None
    ) -> RankResult:
        """Rank one request body. ``request_id`` is a server-side id (the local canary
        traffic's seeded ids), never a client's."""
        return self.engine.rank(self.parse_rank(body, client_request_id), request_id)

    def _protect(self, value: str | None, field: str) -> str | None:
        """``value`` hashed, refused (400) or kept per ``privacy.pii_ids``."""
        if self.ids is None:
            return value
        try:
            return self.ids.protect(value, field)
        except PiiIdError as exc:
            raise RequestError(field, exc.reason) from None

    def feedback_event(self, body: Any):
        """Validate a post and build its event: (event row or None if dropped, post)."""
        post = parse_feedback(body)
        post = replace(
            post,
            user_id=self._protect(post.user_id, "user_id"),
            session_id=self._protect(post.session_id, "session_id"),
        )
        served = self.engine.requests.get(post.request_id)
        if served is None:
            raise UnknownRequest(
                f"request_id '{post.request_id}' is unknown or expired: feedback must "
                f"follow a ranking served by {self._served_by()} within "
                f"{self.cfg.serving.feedback.request_store_ttl_s:.0f}s"
            )
        return build_event(post, served, self.cfg.privacy, datetime.now(UTC), self.ids), post

    def _served_by(self) -> str:
        redis = isinstance(self.engine.requests, RedisRequestStore)
        return "any replica sharing this Redis" if redis else "this replica"

    def feedback(self, body: Any, timeout_s: float = 30.0) -> FeedbackAck:
        """Store one feedback event durably (blocking until fsync or commit)."""
        row, _ = self.feedback_event(body)
        if row is None:
            return FeedbackAck(DROPPED, None, "privacy policy (opt-out or retention)")
        status = self.feedback_log.append(row).result(timeout=timeout_s)
        return FeedbackAck(status, row["event_id"])

    def status(self) -> dict:
        engine = self.engine
        r = engine.routing
        snap = engine.features
        return {
            "ready": self.ready,
            "loading": self.loading,
            "load_error": self.load_error,
            "model_ref": self.model_ref,
            "primary": _describe(r.primary),
            "second": _describe(r.second),
            "mode": r.mode,
            "percent": r.percent,
            "catalog": {"capabilities": len(engine.catalog), "source": engine.catalog.source},
            "features": {
                "available": bool(snap and snap.available),
                "stale_capabilities": snap.n_stale if snap else None,
                "age_hours": snap.age_hours() if snap else None,
                "read_at": snap.read_at.isoformat() if snap else None,
                "error": snap.error if snap else "",
                "refreshes": self.feature_refreshes,
            },
            "intent_cache": {
                "size": len(engine.encoder.cache),
                "hits": engine.encoder.cache.hits,
                "misses": engine.encoder.cache.misses,
            },
            "fallbacks": dict(engine.fallbacks),
            "feedback": {
                "sink": self.cfg.serving.feedback.sink,
                "events": len(self.feedback_log),
                "commits": self.feedback_log.commits,
                "served_store": self.cfg.serving.feedback.served_store,
            },
            "time": time.time(),
        }


def _describe(model: LoadedModel | None) -> dict | None:
    if model is None:
        return None
    return {"version": model.version, "source": model.source, "kind": model.builder.kind}


__all__ = ["DENSE_REF", "FeedbackAck", "RequestError", "Runtime", "UnknownRequest"]
