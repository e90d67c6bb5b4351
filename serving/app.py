"""The HTTP application: KServe's V1/V2 endpoints plus feedback, admin and /metrics.

One FastAPI app per server (not KServe's module-level one), so tests can run several.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from kserve import errors as kerrors
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
from kserve.protocol.rest.v2_endpoints import register_v2_endpoints
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from caprank.deploy.controller import run_rollout
from caprank.deploy.local import LocalBackend
from caprank.online.request import RequestError
from caprank.online.runtime import Runtime, UnknownRequest
from serving.metrics import ServerMetrics
from serving.model import CaprankModel

log = logging.getLogger(__name__)


class _DataPlane(DataPlane):
    """Server readiness (``/v2/health/ready``) means the model has loaded, not just up."""

    def __init__(self, model_registry: ModelRepository, runtime: Runtime):
        super().__init__(model_registry=model_registry)
        self._runtime = runtime

    async def ready(self) -> bool:
        return self._runtime.ready


class PayloadLimit:
    """Refuse bodies over ``max_bytes`` with 413 before anything parses them."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._drain(receive)  # read (and drop) it so the client sees the answer
            return await self._refuse(send, int(length))
        if length is not None:
            return await self.app(scope, receive, send)
        messages, size = [], 0  # chunked: buffer up to the limit, then replay
        while True:
            msg = await receive()
            messages.append(msg)
            size += len(msg.get("body", b""))
            if size > self.max_bytes:
                if msg.get("more_body"):
                    await self._drain(receive)
                return await self._refuse(send, size)
            if msg["type"] != "http.request" or not msg.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _drain(receive) -> None:
        while True:
            msg = await receive()
            if msg["type"] != "http.request" or not msg.get("more_body"):
                return

    async def _refuse(self, send, size: int) -> None:
        body = json.dumps(
            {"error": f"payload of {size} bytes exceeds serving.max_payload_bytes "
             f"({self.max_bytes})"}
        ).encode()  # fmt: skip
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, **extra})


def build_app(runtime: Runtime, model_name: str) -> tuple[FastAPI, CaprankModel]:
    cfg = runtime.cfg
    metrics = ServerMetrics(runtime)
    model = CaprankModel(model_name, runtime, metrics, cfg.serving.worker_threads)
    repo = ModelRepository()
    repo.update(model)
    dataplane = _DataPlane(repo, runtime)
    extension = ModelRepositoryExtension(model_registry=repo)
    app = FastAPI(title="caprank predictor", docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.add_api_route("/", dataplane.live)
    register_v1_endpoints(app, dataplane, extension)
    register_v2_endpoints(app, dataplane, extension)

    async def invalid_input(_request, exc: kerrors.InvalidInput) -> JSONResponse:
        return _error(400, str(exc))  # a client error: no traceback in the log

    app.add_exception_handler(kerrors.InvalidInput, invalid_input)
    app.add_exception_handler(kerrors.InferenceError, kerrors.inference_error_handler)
    app.add_exception_handler(kerrors.ModelNotFound, kerrors.model_not_found_handler)
    app.add_exception_handler(kerrors.ModelNotReady, kerrors.model_not_ready_handler)
    app.add_exception_handler(NotImplementedError, kerrors.not_implemented_error_handler)
    app.add_exception_handler(kerrors.ServerNotLive, kerrors.server_not_live_handler)
    app.add_exception_handler(kerrors.ServerNotReady, kerrors.server_not_ready_handler)

    async def validation_error(_request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "<request>"
        return _error(400, f"field '{where}': {first.get('msg', 'invalid request')}")

    async def request_error(_request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, str(exc))

    async def unexpected(_request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return _error(500, f"{type(exc).__name__}: {exc}")

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(Exception, unexpected)

    async def prometheus(_request: Request) -> Response:
        body = generate_latest(REGISTRY) + generate_latest(metrics.registry)
        return Response(body, headers={"content-type": CONTENT_TYPE_LATEST})

    app.add_api_route("/metrics", prometheus, methods=["GET"])
    _feedback_routes(app, runtime, metrics)
    _admin_routes(app, runtime)
    return PayloadLimit(app, cfg.serving.max_payload_bytes), model


async def _json_body(request: Request):
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise RequestError("<request>", f"body is not valid JSON ({exc})") from exc


def _feedback_routes(app: FastAPI, runtime: Runtime, metrics: ServerMetrics) -> None:
    async def feedback(request: Request) -> JSONResponse:
        start = time.perf_counter()
        try:
            body = await _json_body(request)
            row, _post = runtime.feedback_event(body)
        except RequestError as exc:
            metrics.feedback.labels("rejected").inc()
            return _error(exc.status, str(exc))
        except UnknownRequest as exc:
            metrics.feedback.labels("unknown_request").inc()
            return _error(404, str(exc))
        if row is None:
            metrics.feedback.labels("dropped").inc()
            return JSONResponse(
                {"status": "dropped", "event_id": None, "reason": "privacy policy (opt-out or "
                 "retention)"}
            )  # fmt: skip
        status = await asyncio.wrap_future(runtime.feedback_log.append(row))
        metrics.feedback.labels(status).inc()
        metrics.feedback_ack.observe(time.perf_counter() - start)
        return JSONResponse({"status": status, "event_id": row["event_id"]})

    app.add_api_route("/v1/feedback", feedback, methods=["POST"])


def _admin_routes(app: FastAPI, runtime: Runtime) -> None:
    cfg = runtime.cfg
    rollout: dict = {"thread": None, "result": None}

    async def in_thread(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def backend() -> LocalBackend:
        state_file = Path(cfg.home()) / "serving" / "rollout-state.json"
        return LocalBackend(
            runtime.engine, lambda uri, v: runtime.load(uri, v or None), state_file,
            cfg.canary.mode,
        )  # fmt: skip

    async def status(_request: Request):
        return runtime.status()

    async def refresh(_request: Request):
        snap = await in_thread(runtime.refresh_features)
        return {
            "available": snap.available,
            "stale_capabilities": snap.n_stale,
            "age_hours": snap.age_hours(),
            "error": snap.error,
        }

    def _ref(body) -> tuple[str, str | None]:
        if not isinstance(body, dict) or not isinstance(body.get("ref"), str):
            raise RequestError("ref", "is required: a model directory, version or alias")
        version = body.get("version")
        if version is not None and not isinstance(version, str):
            raise RequestError("version", "must be a string")
        return body["ref"], version

    async def primary(request: Request):
        ref, version = _ref(await _json_body(request))
        try:
            model = await in_thread(runtime.swap, ref, version)
        except Exception as exc:
            return _error(422, f"could not load '{ref}': {exc}")
        return {"primary": model.version}

    async def canary(request: Request):
        body = await _json_body(request)
        ref, version = _ref(body)
        percent = body.get("percent", cfg.canary.traffic_percent)
        mode = body.get("mode", cfg.canary.mode)
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise RequestError("percent", "must be an integer in [0, 100]")
        if mode not in ("split", "shadow"):
            raise RequestError("mode", "must be 'split' or 'shadow'")
        try:
            model = await in_thread(runtime.set_second, ref, percent, mode, version)
        except Exception as exc:
            return _error(422, f"could not load '{ref}': {exc}")
        return {"second": model.version, "mode": mode, "percent": percent}

    async def drop_canary(_request: Request):
        r = runtime.engine.routing
        runtime.engine.set_second(None, r.mode, 0)
        return {"second": None}

    async def promote(_request: Request):
        try:
            model = runtime.engine.promote()
        except RuntimeError as exc:
            return _error(409, str(exc))
        return {"primary": model.version}

    async def canary_metrics(request: Request):
        version = request.query_params.get("version")
        window = float(request.query_params.get("window_s", cfg.canary.window_s))
        if not version:
            second = runtime.engine.routing.second
            version = second.version if second else None
        if version is None:
            return _error(404, "no canary model and no ?version= given")
        n, err, p99 = runtime.engine.stats.window(version, window)
        return {"version": version, "requests": n, "error_rate": err, "p99_latency_ms": p99}

    async def compact(_request: Request):
        parts = await in_thread(runtime.feedback_log.compact, True)
        return {"parts": [str(p) for p in parts], "events": len(runtime.feedback_log)}

    async def start_rollout(request: Request):
        body = await _json_body(request)
        uri, version = _ref({"ref": body.get("uri"), "version": body.get("version")})
        t = rollout["thread"]
        if t is not None and t.is_alive():
            return _error(409, "a rollout is already running in this server")

        def run():
            from caprank.deploy.guardrails import FeedbackLogQuality

            try:
                result = run_rollout(
                    backend(), uri, version or uri, cfg.canary,
                    quality=FeedbackLogQuality(cfg.feedback_dir()),
                )  # fmt: skip
                rollout["result"] = {"outcome": result.outcome, "reason": result.reason}
            except Exception as exc:
                rollout["result"] = {"outcome": "error", "reason": str(exc)}

        import threading

        rollout["result"] = None
        rollout["thread"] = threading.Thread(target=run, name="rollout", daemon=True)
        rollout["thread"].start()
        return {"started": uri}

    async def rollout_status(_request: Request):
        return {"result": rollout["result"], **backend().describe()}

    app.add_api_route("/admin/status", status, methods=["GET"])
    app.add_api_route("/admin/features/refresh", refresh, methods=["POST"])
    app.add_api_route("/admin/models/primary", primary, methods=["POST"])
    app.add_api_route("/admin/canary", canary, methods=["PUT"])
    app.add_api_route("/admin/canary", drop_canary, methods=["DELETE"])
    app.add_api_route("/admin/canary/promote", promote, methods=["POST"])
    app.add_api_route("/admin/canary/metrics", canary_metrics, methods=["GET"])
    app.add_api_route("/admin/feedback/compact", compact, methods=["POST"])
    app.add_api_route("/admin/rollout", start_rollout, methods=["POST"])
    app.add_api_route("/admin/rollout", rollout_status, methods=["GET"])
