"""Cache hits answered in front of the serving app's routing (issue 16, docs/serving.md).

``CachedHits`` is the innermost ASGI middleware of KServe's app (the rate limits, payload
limit and error guards still wrap it). A V1 predict call to the bound model whose body is
valid throughout and whose intents are all cached is parsed with orjson, ranked and
answered here: FastAPI's routing and request objects, KServe's decoding, ``Model.__call__``
and response class, which together cost more than ranking a hit, are skipped. Anything
else (a miss, V2, an error in the body, a CloudEvent, another content type, a model that
is not ready) goes on to the app unchanged, its body replayed, and is answered and counted
exactly as before.

Kept from the skipped path: caprank's validation, metrics and served-ranking store (the
same ``Predictor`` calls), KServe's ``request_predict_seconds`` (the canary's latency
and request count; ``request_preprocess_seconds``/``request_postprocess_seconds`` are
observed as 0: no such step runs), the response bytes of KServe's ``ORJSONResponse``, and
KServe's own error handlers for a request refused while ranking (unknown candidate ids).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from kserve.errors import (
    InferenceError,
    InvalidInput,
    inference_error_handler,
    invalid_input_handler,
)
from kserve.metrics import POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME
from kserve.protocol.dataplane import JSON_HEADERS

from caprank.online.predict import RankFailed
from caprank.online.request import RequestError

JSON_TYPES = frozenset(h.encode() for h in JSON_HEADERS)  # what KServe decodes as JSON
RENDER = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY  # KServe's ORJSONResponse


def kserve_error(exc: RequestError | RankFailed) -> InvalidInput | InferenceError:
    """KServe's exception for a refused (400) or failed (500) rank request."""
    return InvalidInput(str(exc)) if isinstance(exc, RequestError) else InferenceError(str(exc))


def _served_model(scope) -> Any:
    """The bound model when ``scope`` is a POST to its V1 predict path and it can answer."""
    state = getattr(getattr(scope.get("app"), "state", None), "caprank", None)
    model = getattr(state, "model", None)
    if model is None or not model.ready or not model.runtime.can_serve:
        return None
    return model if scope["path"] == f"/v1/models/{model.name}:predict" else None


def _headers(scope) -> tuple[bool, bytes | None]:
    """(whether KServe would decode the body as plain JSON, the ``x-request-id`` value);
    the last of repeated headers counts, as in KServe's header dict."""
    plain, request_id = True, None
    for key, value in scope["headers"]:
        if key == b"content-type":
            plain = value in JSON_TYPES
        elif key == b"x-request-id":
            request_id = value
        elif key.startswith(b"ce-"):
            return False, None  # a binary CloudEvent: KServe unwraps it
    return plain, request_id


class CachedHits:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        model = _served_model(scope)
        plain, header_id = _headers(scope) if model is not None else (False, None)
        if not plain:
            return await self.app(scope, receive, send)
        messages, body, more = [], [], True
        while more:
            msg = await receive()
            messages.append(msg)
            if msg["type"] != "http.request":
                return await self.app(scope, _replay(messages, receive), send)
            body.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        start = time.perf_counter()
        try:
            payload = orjson.loads(b"".join(body))
        except orjson.JSONDecodeError:
            payload = None
        cid = header_id.decode("latin-1") if header_id is not None else None
        reqs = model.predictor.cached_v1(payload, cid) if payload is not None else None
        if reqs is None:
            return await self.app(scope, _replay(messages, receive), send)
        child = model.metrics.child
        child(PRE_HIST_TIME, model.name).observe(0.0)
        try:
            results = model.predictor.rank_all(None, reqs, "instances")
        except (RequestError, RankFailed) as exc:
            error = kserve_error(exc)
            bad = isinstance(error, InvalidInput)
            response = await (invalid_input_handler if bad else inference_error_handler)(
                None, error
            )
            return await response(scope, receive, send)
        finally:
            child(PREDICT_HIST_TIME, model.name).observe(time.perf_counter() - start)
        child(POST_HIST_TIME, model.name).observe(0.0)
        out = orjson.dumps({"predictions": results}, option=RENDER)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(out)).encode()),
            (b"content-type", b"application/json"),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": out})


def _replay(messages: list, receive):
    """A ``receive`` that gives ``messages`` again, then reads on."""

    async def replay():
        return messages.pop(0) if messages else await receive()

    return replay
