"""ASGI middlewares at the edge of the inference port: control gate, rate limits, 5xx bodies.

- ``RepositoryGate``: KServe's model-repository extension (``/v2/repository/...``) is 404
  unless ``serving.model_repository`` is on, and then needs the admin bearer token.
- ``RateLimit``: a token bucket per client (peer address, or ``rate_limit.client_header``)
  on predict/infer and on feedback; an empty bucket is 429 with ``Retry-After``.
- ``SafeErrors``: an exception nothing handled is logged and answered with a 500 that
  names no exception text (KServe's own handler would echo it).

Each reads the serving config at request time from ``app.state.caprank`` (the serving
adapter sets it), so a test may change it between calls.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from caprank.config import RateLimitConfig, ServingConfig
from caprank.online.control import Unauthorized, check_bearer

log = logging.getLogger(__name__)
REPOSITORY_PREFIX = "/v2/repository"


def serving_config(scope) -> ServingConfig | None:
    state = getattr(getattr(scope.get("app"), "state", None), "caprank", None)
    return state.runtime.cfg.serving if state is not None else None


async def send_json(send, status: int, body: dict, headers: dict | None = None) -> None:
    raw = [(b"content-type", b"application/json")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return None


class RepositoryGate:
    """``/v2/repository/*`` only when configured, and then only with the admin token."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(REPOSITORY_PREFIX):
            cfg = serving_config(scope)
            try:
                if cfg is None or not cfg.model_repository:
                    raise Unauthorized(404, "Not Found")
                check_bearer(cfg, _header(scope, b"authorization"))
            except Unauthorized as exc:
                extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                return await send_json(send, exc.status, {"error": str(exc)}, extra)
        return await self.app(scope, receive, send)


class TokenBuckets:
    """Token buckets keyed by client, the least recently seen dropped past ``max_keys``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def take(self, key: tuple[str, str], rate: float, burst: int, max_keys: int) -> float:
        """0.0 when a token was taken, else the seconds until one is there."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > max_keys:
            self._buckets.popitem(last=False)
        return wait


def limited_kind(method: str, path: str) -> str | None:
    """'predict' or 'feedback' for the rate-limited routes, else None."""
    if method != "POST":
        return None
    if path == "/v1/feedback":
        return "feedback"
    if path.startswith("/v1/models/") and path.endswith((":predict", ":explain")):
        return "predict"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "predict"
    return None


def client_key(scope, cfg: RateLimitConfig) -> str:
    if cfg.client_header:
        value = _header(scope, cfg.client_header.lower().encode())
        if value:
            return value.split(",")[0].strip()
    client = scope.get("client")
    return client[0] if client else "?"


class RateLimit:
    """429 with ``Retry-After`` once a client has used its predict or feedback bucket."""

    def __init__(self, app, clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.buckets = TokenBuckets(clock)

    async def __call__(self, scope, receive, send):
        kind = limited_kind(scope.get("method", ""), scope.get("path", ""))
        cfg = serving_config(scope) if kind and scope["type"] == "http" else None
        if cfg is not None:
            limits = cfg.rate_limit
            rate = limits.predict_per_s if kind == "predict" else limits.feedback_per_s
            burst = limits.predict_burst if kind == "predict" else limits.feedback_burst
            if rate > 0:
                key = (kind, client_key(scope, limits))
                wait = self.buckets.take(key, rate, burst, limits.max_clients)
                if wait > 0:
                    field = f"serving.rate_limit.{kind}_per_s"
                    body = {"error": f"rate limit: more than {rate:g} {kind} calls/s ({field})"}
                    retry = {"Retry-After": str(max(1, math.ceil(wait)))}
                    return await send_json(send, 429, body, retry)
        return await self.app(scope, receive, send)


class SafeErrors:
    """A 500 that says nothing of the exception; the traceback goes to the log."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await send_json(send, 500, {"error": "internal error (the server log has it)"})
