"""One predict call, whatever the protocol: the rank requests it carries, validated and
answered, without any KServe type (``serving/model.py`` adapts V1 and V2 to it).

At most ``serving.max_instances`` requests per call. Every request is validated first (a
bad one is a 400 naming it before any work); a call whose intents are all cached is
answered at once, the others go through the bounded queue of ``caprank.online.admission``
(503 when full or past ``serving.request_timeout_s``). Each response's ``request_id`` is
issued by the server; an ``x-request-id`` header or a V2 request ``id`` is a client
correlation id, echoed as ``client_request_id`` for requests that carry none of their
own. A failure answers with the request id, never the exception (the log has it).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from caprank.errors import CaprankError
from caprank.online.admission import Admission, DeadlinePassed
from caprank.online.engine import ModelFailure
from caprank.online.metrics import ServerMetrics
from caprank.online.request import RankRequest, RequestError, correlation_id
from caprank.online.runtime import Runtime

log = logging.getLogger(__name__)

V2_INPUT = "request"  # the V2 input tensor: rank requests as JSON texts
V2_OUTPUT = "response"  # the V2 output tensor: the responses as JSON texts


class RankFailed(CaprankError):
    """A request could not be ranked (HTTP 500); the message names it, not the cause."""


class Predictor:
    """Validates and ranks the requests of one call on ``runtime``'s engine."""

    def __init__(self, runtime: Runtime, metrics: ServerMetrics):
        self.runtime = runtime
        self.metrics = metrics
        cfg = runtime.cfg.serving
        self.admission = Admission(
            cfg.worker_threads, cfg.max_queued_requests, cfg.request_timeout_s
        )

    def reject(self, field: str, message: str) -> RequestError:
        """A 400 naming ``field``, counted by its top-level name."""
        self.metrics.rejected.labels(field.split("[")[0].split(".")[0]).inc()
        return RequestError(field, message)

    @property
    def max_instances(self) -> int:
        return self.runtime.cfg.serving.max_instances

    def check_count(self, n: int, field: str) -> None:
        limit = self.max_instances
        if not 1 <= n <= limit:
            raise self.reject(
                field, f"holds {n} requests; it must hold 1 to {limit} (serving.max_instances)"
            )

    def client_id(self, value: Any, field: str) -> str | None:
        """A client correlation id (printable text) or None; a 400 naming ``field``."""
        try:
            return correlation_id(value, field)
        except RequestError as exc:
            raise self.reject(exc.field, exc.message) from exc

    def v1_bodies(self, payload: Any) -> list:
        """The rank requests of a V1 body ``{"instances": [...]}`` (nothing else in it)."""
        if not isinstance(payload, dict) or "instances" not in payload:
            raise self.reject("instances", "is required (a list of rank requests)")
        unknown = sorted(set(payload) - {"instances"})
        if unknown:
            raise self.reject(unknown[0], "unknown field (a V1 body holds only 'instances')")
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise self.reject("instances", "must be a non-empty list of rank requests")
        self.check_count(len(instances), "instances")
        return instances

    def v2_bodies(self, inputs: list[tuple[str, str, list | None, list | None]]) -> list:
        """The rank requests of V2 ``inputs`` given as (name, datatype, shape, data): one
        BYTES input named ``request`` whose elements are JSON texts, shape ``[n]``."""
        if len(inputs) != 1 or inputs[0][:2] != (V2_INPUT, "BYTES"):
            raise self.reject(
                "inputs", f"expected one BYTES input named '{V2_INPUT}' holding rank requests "
                "as JSON text",
            )  # fmt: skip
        shape, data = list(inputs[0][2] or []), inputs[0][3] or []
        self.check_count(len(data), "inputs[0].data")
        if shape != [len(data)]:
            raise self.reject(
                "inputs[0].shape", f"is {shape} but the data holds {len(data)} elements "
                f"(it must be [{len(data)}])",
            )  # fmt: skip
        bodies = []
        for i, item in enumerate(data):
            text = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
            try:
                bodies.append(json.loads(text) if isinstance(text, str) else text)
            except ValueError as exc:
                raise self.reject(f"inputs[0].data[{i}]", f"not valid JSON ({exc})") from exc
        return bodies

    def parse(self, bodies: list, client_id: str | None, prefix: str) -> list[RankRequest]:
        out = []
        for i, body in enumerate(bodies):
            try:
                out.append(self.runtime.parse_rank(body, client_id))
            except RequestError as exc:
                self.metrics.rejected.labels(exc.field.split("[")[0]).inc()
                raise exc.within(f"{prefix}[{i}]") from exc
        return out

    def rank_all(self, deadline: float | None, reqs: list[RankRequest], prefix: str) -> list[dict]:
        engine, out = self.runtime.engine, []
        for i, req in enumerate(reqs):
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlinePassed("request not answered within serving.request_timeout_s")
            try:
                result = engine.rank(req)
            except RequestError as exc:
                self.metrics.rejected.labels(exc.field.split("[")[0]).inc()
                raise exc.within(f"{prefix}[{i}]") from exc
            except ModelFailure as exc:
                self.metrics.requests.labels("error", "none").inc()
                cid = (
                    f" (client request id {req.client_request_id})" if req.client_request_id else ""
                )
                raise RankFailed(
                    f"request {exc.request_id}{cid}: ranking failed (the server log has the reason)"
                ) from exc
            except Exception as exc:
                self.metrics.requests.labels("error", "none").inc()
                cid = req.client_request_id or "?"
                log.exception("request (client request id %s) failed", cid)
                raise RankFailed(
                    f"request (client request id {cid}): internal error (the server log has it)"
                ) from exc
            self.metrics.observe_rank(result)
            out.append(result.to_json())
        return out

    def cached_v1(self, payload: Any, header_id: Any) -> list[RankRequest] | None:
        """The requests of a V1 body that is valid throughout (``x-request-id`` included)
        and whose intents are all cached, ready for ``rank_all``; else None, with nothing
        counted, for the full path to answer (errors included, counted there once)."""
        if type(payload) is not dict or len(payload) != 1 or "instances" not in payload:
            return None
        instances = payload["instances"]
        if type(instances) is not list or not 1 <= len(instances) <= self.max_instances:
            return None
        runtime = self.runtime
        try:
            cid = correlation_id(header_id, "x-request-id")
            reqs = [runtime.parse_rank(body, cid) for body in instances]
        except RequestError:
            return None
        engine = runtime.engine
        return reqs if all(engine.cached(r.intent) for r in reqs) else None

    async def run(self, bodies: list, client_id: str | None, prefix: str) -> list[dict]:
        """The responses of ``bodies`` (already counted), in order."""
        reqs = self.parse(bodies, client_id, prefix)
        if all(self.runtime.engine.cached(r.intent) for r in reqs):
            return self.rank_all(None, reqs, prefix)  # no encoder pass: answer now
        return await self.admission.run(self.rank_all, reqs, prefix)

    def close(self) -> None:
        self.admission.close()
