"""The ``kserve.Model`` that answers V1 and V2 (Open Inference Protocol) requests.

V1: ``POST /v1/models/<name>:predict`` with ``{"instances": [<rank request>, ...]}``;
answers ``{"predictions": [<rank response>, ...]}``.
V2: ``POST /v2/models/<name>/infer`` with one BYTES input named ``request`` of shape
``[n]`` whose elements are rank requests as JSON text; answers one BYTES output named
``response`` of shape ``[n]`` holding the responses as JSON text.

At most ``serving.max_instances`` requests per call. Every request is validated on the
event loop first (a bad one is a 400 naming it before any work); a call whose intents
are all cached is answered there at once, the others go through the bounded queue of
``caprank.online.admission`` (503 when full or past ``serving.request_timeout_s``).
A 500 names the request id, never the exception (the log has it).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import kserve
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from caprank.online.admission import Admission, DeadlinePassed
from caprank.online.engine import ModelFailure
from caprank.online.metrics import ServerMetrics
from caprank.online.request import RankRequest, RequestError, check_id
from caprank.online.runtime import Runtime

log = logging.getLogger(__name__)

V2_INPUT = "request"
V2_OUTPUT = "response"
V1_FIELDS = ("instances",)


class CaprankModel(kserve.Model):
    """Ranks on the runtime's engine: cached intents at once, the rest in the worker pool
    (``serving.worker_threads``) behind a bounded queue.

    ``ready``/``healthy`` mean "can answer" (by the model, or by the dense fallback while
    it loads), so KServe registers it and routes requests at once; ``loaded`` means the
    model named by the reference is in, which the server's readiness reports.
    """

    def __init__(self, name: str, runtime: Runtime, metrics: ServerMetrics):
        super().__init__(name)
        self.runtime = runtime
        self.metrics = metrics
        cfg = runtime.cfg.serving
        self.admission = Admission(
            cfg.worker_threads, cfg.max_queued_requests, cfg.request_timeout_s
        )

    def load(self) -> bool:
        self.ready = self.runtime.can_serve
        return self.ready

    def start(self) -> None:  # KServe's default marks the model ready; readiness is ours
        pass

    def stop(self) -> None:
        self.ready = False
        self.admission.close()

    async def healthy(self) -> bool:
        return self.ready and self.runtime.can_serve

    @property
    def loaded(self) -> bool:
        return self.ready and self.runtime.ready

    @property
    def max_instances(self) -> int:
        return self.runtime.cfg.serving.max_instances

    def get_input_types(self) -> list[dict]:
        return [{"name": V2_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": V2_OUTPUT, "datatype": "BYTES", "shape": [-1]}]

    def _reject(self, field: str, message: str) -> InvalidInput:
        self.metrics.rejected.labels(field.split("[")[0].split(".")[0]).inc()
        return InvalidInput(f"field '{field}': {message}")

    def _check_count(self, n: int, field: str) -> None:
        if not 1 <= n <= self.max_instances:
            raise self._reject(
                field, f"holds {n} requests; it must hold 1 to {self.max_instances} "
                "(serving.max_instances)",
            )  # fmt: skip

    def _parse(self, bodies: list, prefix: str) -> list[RankRequest]:
        out = []
        for i, body in enumerate(bodies):
            try:
                out.append(self.runtime.parse_rank(body))
            except RequestError as exc:
                self.metrics.rejected.labels(exc.field.split("[")[0]).inc()
                raise InvalidInput(str(exc.within(f"{prefix}[{i}]"))) from exc
        return out

    def _rank_all(
        self, deadline: float | None, reqs: list[RankRequest], ids: list[str | None], prefix: str
    ) -> list[dict]:
        engine, out = self.runtime.engine, []
        for i, (req, rid) in enumerate(zip(reqs, ids, strict=True)):
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlinePassed("request not answered within serving.request_timeout_s")
            try:
                result = engine.rank(req, rid)
            except RequestError as exc:
                self.metrics.rejected.labels(exc.field.split("[")[0]).inc()
                raise InvalidInput(str(exc.within(f"{prefix}[{i}]"))) from exc
            except ModelFailure as exc:
                self.metrics.requests.labels("error", "none").inc()
                raise InferenceError(
                    f"request {exc.request_id}: ranking failed (the server log has the reason)"
                ) from exc
            except Exception as exc:
                self.metrics.requests.labels("error", "none").inc()
                log.exception("request %s failed", rid or req.request_id or "?")
                raise InferenceError(
                    f"request {rid or req.request_id or '?'}: internal error "
                    "(the server log has it)"
                ) from exc
            self.metrics.observe_rank(result)
            out.append(result.to_json())
        return out

    async def _run(self, bodies: list, ids: list[str | None], prefix: str) -> list[dict]:
        reqs = self._parse(bodies, prefix)
        engine = self.runtime.engine
        if all(engine.cached(r.intent) for r in reqs):
            return self._rank_all(None, reqs, ids, prefix)  # no encoder pass: answer now
        return await self.admission.run(self._rank_all, reqs, ids, prefix)

    def _header_id(self, headers: dict | None) -> str | None:
        value = (headers or {}).get("x-request-id")
        if value is None:
            return None
        try:
            return check_id(value, "x-request-id")
        except RequestError as exc:
            raise self._reject(exc.field, exc.message) from exc

    async def predict(self, payload, headers=None, response_headers=None):
        header_id = self._header_id(headers)
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload, header_id)
        if not isinstance(payload, dict) or "instances" not in payload:
            raise self._reject("instances", "is required (a list of rank requests)")
        unknown = sorted(set(payload) - set(V1_FIELDS))
        if unknown:
            raise self._reject(unknown[0], "unknown field (a V1 body holds only 'instances')")
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise self._reject("instances", "must be a non-empty list of rank requests")
        self._check_count(len(instances), "instances")
        ids = [header_id if len(instances) == 1 else None] * len(instances)
        return {"predictions": await self._run(instances, ids, "instances")}

    def _v2_bodies(self, request: InferRequest) -> list[Any]:
        inputs = request.inputs
        if len(inputs) != 1 or inputs[0].name != V2_INPUT or inputs[0].datatype != "BYTES":
            raise self._reject(
                "inputs", f"expected one BYTES input named '{V2_INPUT}' holding rank requests "
                "as JSON text",
            )  # fmt: skip
        data = inputs[0].data or []
        self._check_count(len(data), "inputs[0].data")
        shape = list(inputs[0].shape or [])
        if shape != [len(data)]:
            raise self._reject(
                "inputs[0].shape", f"is {shape} but the data holds {len(data)} elements "
                f"(it must be [{len(data)}])",
            )  # fmt: skip
        bodies = []
        for i, item in enumerate(data):
            text = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
            try:
                bodies.append(json.loads(text) if isinstance(text, str) else text)
            except ValueError as exc:
                raise self._reject(f"inputs[0].data[{i}]", f"not valid JSON ({exc})") from exc
        return bodies

    async def _predict_v2(self, request: InferRequest, header_id: str | None) -> InferResponse:
        bodies = self._v2_bodies(request)
        rid = header_id
        if request.id:
            try:
                rid = check_id(request.id, "id")
            except RequestError as exc:
                raise self._reject(exc.field, exc.message) from exc
        ids = [rid if len(bodies) == 1 else None] * len(bodies)
        results = await self._run(bodies, ids, "inputs[0].data")
        texts = [json.dumps(r, separators=(",", ":")) for r in results]
        output = InferOutput(V2_OUTPUT, [len(texts)], "BYTES", texts)
        return InferResponse(
            response_id=rid or results[0]["request_id"],
            model_name=self.name,
            infer_outputs=[output],
            model_version=results[0]["model_version"],
        )
