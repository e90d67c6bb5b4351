"""The predictor's own HTTP routes beside KServe's V1/V2 endpoints: feedback and admin.

``router`` is a FastAPI ``APIRouter`` that the serving adapter (``serving/``) mounts on
KServe's app, with ``ERROR_HANDLERS`` for the bodies of refused requests. The handlers
hold no state: they reach the process's runtime through ``app.state.caprank`` (a
``ServerState``), which the adapter sets. Every ``/admin`` route needs the bearer token
(``caprank.online.control``): 404 when none is configured, 401 on a wrong one; a model
it loads comes from the registry or ``serving.model_roots`` only. API: docs/serving.md,
docs/security.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from caprank.deploy.controller import run_rollout
from caprank.deploy.guardrails import FeedbackLogQuality
from caprank.deploy.local import LocalBackend
from caprank.deploy.state import rollout_state_path
from caprank.online.admission import Overloaded
from caprank.online.control import Unauthorized, check_bearer, check_model_ref
from caprank.online.feedback import STORED, FeedbackConflict
from caprank.online.guards import RateLimit, RepositoryGate, SafeErrors
from caprank.online.hits import CachedHits
from caprank.online.metrics import ServerMetrics
from caprank.online.payload import PayloadLimit
from caprank.online.request import RequestError, StoreUnavailable
from caprank.online.runtime import Runtime, UnknownRequest
from caprank.online.sinks import event_reader

log = logging.getLogger(__name__)


class RolloutJob:
    """The rollout controller running in this server (one at a time), and its outcome."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.result: dict | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, runtime: Runtime, uri: str, version: str) -> None:
        self.result = None
        self.thread = threading.Thread(
            target=self._run, args=(runtime, uri, version), name="rollout", daemon=True
        )
        self.thread.start()

    def _run(self, runtime: Runtime, uri: str, version: str) -> None:
        cfg = runtime.cfg
        try:
            quality = FeedbackLogQuality(event_reader(cfg))
            result = run_rollout(backend(runtime), uri, version, cfg.canary, quality=quality)
            self.result = {"outcome": result.outcome, "reason": result.reason}
        except Exception as exc:
            self.result = {"outcome": "error", "reason": str(exc)}


def backend(runtime: Runtime) -> LocalBackend:
    """The local rollout backend over this server's engine and the one rollout record."""
    cfg = runtime.cfg
    return LocalBackend(
        runtime.engine, lambda uri, v: runtime.load_checked(uri, v or None),
        rollout_state_path(cfg),
        cfg.canary.mode,
    )  # fmt: skip


@dataclass
class ServerState:
    """What the routes serve: set as ``app.state.caprank`` by the serving adapter."""

    runtime: Runtime
    metrics: ServerMetrics
    model: Any = None  # the KServe model over the runtime (``caprank.online.hits``)
    rollout: RolloutJob = field(default_factory=RolloutJob)


def _state(request: Request) -> ServerState:
    return request.app.state.caprank


def _admin(request: Request) -> None:
    """Every /admin route: 404 without a configured token, 401 without the right one."""
    check_bearer(_state(request).runtime.cfg.serving, request.headers.get("authorization"))


State = Annotated[ServerState, Depends(_state)]
router = APIRouter(default_response_class=JSONResponse)  # not KServe's deprecated ORJSON
admin = APIRouter(prefix="/admin", dependencies=[Depends(_admin)])


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise RequestError("<request>", f"body is not valid JSON ({exc})") from exc


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def load_failed(ref: str) -> JSONResponse:
    """422 for a model that would not load; the reason goes to the log, not the caller."""
    log.exception("loading model %r for an admin call failed", ref)
    return error(422, f"could not load model '{ref}' (the server log has the reason)")


def window_param(raw: str | None, default: float) -> float:
    """The ``window_s`` query parameter: seconds, finite and positive."""
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RequestError("window_s", "must be a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise RequestError("window_s", "must be a finite number of seconds above 0")
    return value


def model_ref(body: Any) -> tuple[str, str | None]:
    """``(ref, version)`` of an admin body: a model directory, version or alias."""
    if not isinstance(body, dict) or not isinstance(body.get("ref"), str):
        raise RequestError("ref", "is required: a model directory, version or alias")
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        raise RequestError("version", "must be a string")
    return body["ref"], version


# ------------------------------------------------------------------------ feedback


@router.post("/v1/feedback")
async def feedback(request: Request, state: State):
    start, runtime, counts = time.perf_counter(), state.runtime, state.metrics.feedback
    try:
        row, _post = runtime.feedback_event(await json_body(request))
    except RequestError as exc:
        counts.labels("rejected").inc()
        return error(exc.status, str(exc))
    except UnknownRequest as exc:
        counts.labels("unknown_request").inc()
        return error(404, str(exc))
    except StoreUnavailable:
        counts.labels("unavailable").inc()
        raise
    if row is None:
        counts.labels("dropped").inc()
        reason = "privacy policy (opt-out or retention)"
        return {"status": "dropped", "event_id": None, "reason": reason}
    try:
        status = await asyncio.wrap_future(runtime.feedback_log.append(row))
    except FeedbackConflict as exc:
        counts.labels("conflict").inc()
        return error(exc.status, str(exc))
    except StoreUnavailable:
        counts.labels("unavailable").inc()
        raise
    counts.labels(status).inc()
    if status == STORED:
        state.metrics.outcomes.labels(row["model_version"], row["outcome"]).inc()
    state.metrics.feedback_ack.observe(time.perf_counter() - start)
    return {"status": status, "event_id": row["event_id"]}


# ------------------------------------------------------------ admin: state and data


@admin.get("/status")
async def status(state: State):
    return state.runtime.status()


@admin.post("/features/refresh")
async def refresh_features(state: State):
    snap = await in_thread(state.runtime.refresh_features)
    return {
        "available": snap.available,
        "stale_capabilities": snap.n_stale,
        "age_hours": snap.age_hours(),
        "error": snap.error,
    }


@admin.post("/feedback/compact")
async def compact_feedback(state: State):
    log = state.runtime.feedback_log
    parts = await in_thread(log.compact, True)
    return {"parts": [str(p) for p in parts], "events": len(log)}


# ------------------------------------------------------------ admin: models, canary


@admin.post("/models/primary")
async def swap_primary(request: Request, state: State):
    ref, version = model_ref(await json_body(request))
    try:
        model = await in_thread(state.runtime.swap, ref, version)
    except RequestError:
        raise
    except Exception:
        return load_failed(ref)
    return {"primary": model.version}


@admin.put("/canary")
async def set_canary(request: Request, state: State):
    body = await json_body(request)
    ref, version = model_ref(body)
    canary = state.runtime.cfg.canary
    percent = body.get("percent", canary.traffic_percent)
    mode = body.get("mode", canary.mode)
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise RequestError("percent", "must be an integer in [0, 100]")
    if mode not in ("split", "shadow"):
        raise RequestError("mode", "must be 'split' or 'shadow'")
    try:
        model = await in_thread(state.runtime.set_second, ref, percent, mode, version)
    except RequestError:
        raise
    except Exception:
        return load_failed(ref)
    return {"second": model.version, "mode": mode, "percent": percent}


@admin.delete("/canary")
async def drop_canary(state: State):
    engine = state.runtime.engine
    engine.set_second(None, engine.routing.mode, 0)
    return {"second": None}


@admin.post("/canary/promote")
async def promote_canary(state: State):
    try:
        model = state.runtime.engine.promote()
    except RuntimeError as exc:
        return error(409, str(exc))
    return {"primary": model.version}


@admin.get("/canary/metrics")
async def canary_metrics(request: Request, state: State):
    engine, query = state.runtime.engine, request.query_params
    version = query.get("version")
    window = window_param(query.get("window_s"), state.runtime.cfg.canary.window_s)
    if not version:
        second = engine.routing.second
        version = second.version if second else None
    if version is None:
        return error(404, "no canary model and no ?version= given")
    n, err, p99 = engine.stats.window(version, window)
    return {"version": version, "requests": n, "error_rate": err, "p99_latency_ms": p99}


# ------------------------------------------------------------------ admin: rollout


@admin.post("/rollout")
async def start_rollout(request: Request, state: State):
    body = await json_body(request)
    uri, version = model_ref({"ref": body.get("uri"), "version": body.get("version")})
    if state.rollout.running:
        return error(409, "a rollout is already running in this server")
    if uri != "dense":
        check_model_ref(state.runtime.cfg.serving, uri)
    state.rollout.start(state.runtime, uri, version or uri)
    return {"started": uri}


@admin.get("/rollout")
async def rollout_status(state: State):
    return {"result": state.rollout.result, **backend(state.runtime).describe()}


router.include_router(admin)


# ------------------------------------------------------------------- error bodies


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a body KServe's V2 models cannot parse, as our 400 naming the field."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "<request>"
    return error(400, f"field '{where}': {first.get('msg', 'invalid request')}")


async def request_error(_request: Request, exc: RequestError) -> JSONResponse:
    return error(exc.status, str(exc))


async def unauthorized(_request: Request, exc: Unauthorized) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(status_code=exc.status, content={"error": str(exc)}, headers=headers)


async def overloaded(_request: Request, exc: Overloaded) -> JSONResponse:
    return JSONResponse(
        status_code=503, content={"error": str(exc)},
        headers={"Retry-After": str(exc.retry_after_s)},
    )  # fmt: skip


async def unavailable(_request: Request, exc: StoreUnavailable) -> JSONResponse:
    """503 with Retry-After: a shared store did not answer and nothing was acknowledged."""
    return JSONResponse(
        status_code=503, content={"error": str(exc)},
        headers={"Retry-After": str(exc.retry_after_s)},
    )  # fmt: skip


ERROR_HANDLERS = {
    RequestValidationError: validation_error,
    RequestError: request_error,
    Unauthorized: unauthorized,
    Overloaded: overloaded,
    StoreUnavailable: unavailable,
}

# GET /v1/models/<name>:predict would otherwise match KServe's model-status route
not_allowed = APIRouter()


@not_allowed.api_route("/v1/models/{name}:predict", methods=["GET", "PUT", "DELETE", "PATCH"])
@not_allowed.api_route("/v1/models/{name}:explain", methods=["GET", "PUT", "DELETE", "PATCH"])
async def method_not_allowed(request: Request) -> JSONResponse:
    return JSONResponse(
        status_code=405,
        content={"error": f"{request.method} is not allowed here; use POST"},
        headers={"Allow": "POST"},
    )


def inference_first(app: FastAPI) -> None:
    """At startup, once KServe has added its endpoints and middleware: caprank's own
    routes (feedback, admin) go behind KServe's, so a predict call is matched first, and
    KServe's ``TimingMiddleware``, which matches every route a second time and formats two
    ``kserve.trace`` lines per request, is dropped unless that logger is on (caprank's
    metrics time every request). docs/benchmarks.md has what each costs."""
    routes = app.router.routes
    ours = [r for r in routes if getattr(r, "original_router", None) is router]
    routes[:] = [r for r in routes if r not in ours] + ours
    if not logging.getLogger("kserve.trace").isEnabledFor(logging.INFO):
        kept = [m for m in app.user_middleware if m.cls.__name__ != "TimingMiddleware"]
        if len(kept) != len(app.user_middleware):
            app.user_middleware[:] = kept
            app.middleware_stack = None  # rebuilt, without it, on the next request


def mount(app: FastAPI, max_payload_bytes: int) -> None:
    """Add caprank's routes, error bodies, limits and gates to the serving app (KServe's,
    once, before it serves; KServe adds its own endpoints when the server starts)."""
    app.include_router(not_allowed)
    app.include_router(router)
    app.router.on_startup.append(lambda: inference_first(app))
    for exc, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(exc, handler)
    app.add_middleware(CachedHits)  # innermost: the limits and guards below wrap it
    app.add_middleware(PayloadLimit, max_bytes=max_payload_bytes)
    app.add_middleware(RateLimit)
    app.add_middleware(RepositoryGate)
    app.add_middleware(SafeErrors)
