"""The ``kserve.Model`` that answers V1 and V2 (Open Inference Protocol) requests.

V1: ``POST /v1/models/<name>:predict`` with ``{"instances": [<rank request>, ...]}``;
answers ``{"predictions": [<rank response>, ...]}``.
V2: ``POST /v2/models/<name>/infer`` with one BYTES input named ``request`` of shape
``[n]`` whose elements are rank requests as JSON text; answers one BYTES output named
``response`` of shape ``[n]`` holding the responses as JSON text.

Each response's ``request_id`` is issued by the server (feedback names it); an
``x-request-id`` header or a V2 request ``id`` is a client correlation id, echoed as
``client_request_id`` for instances that carry no ``request_id`` of their own.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import kserve
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from caprank.online.engine import ModelFailure
from caprank.online.metrics import ServerMetrics
from caprank.online.request import RequestError, correlation_id
from caprank.online.runtime import Runtime

V2_INPUT = "request"
V2_OUTPUT = "response"
MAX_INSTANCES = 256


class CaprankModel(kserve.Model):
    """Ranks on the runtime's engine in a thread pool (``serving.worker_threads``).

    ``ready``/``healthy`` mean "can answer" (by the model, or by the dense fallback while
    it loads), so KServe registers it and routes requests at once; ``loaded`` means the
    model named by the reference is in, which the server's readiness reports.
    """

    def __init__(self, name: str, runtime: Runtime, metrics: ServerMetrics):
        super().__init__(name)
        self.runtime = runtime
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(runtime.cfg.serving.worker_threads, "rank")

    def load(self) -> bool:
        self.ready = self.runtime.can_serve
        return self.ready

    def start(self) -> None:  # KServe's default marks the model ready; readiness is ours
        pass

    async def healthy(self) -> bool:
        return self.runtime.can_serve

    @property
    def loaded(self) -> bool:
        return self.runtime.ready

    def get_input_types(self) -> list[dict]:
        return [{"name": V2_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": V2_OUTPUT, "datatype": "BYTES", "shape": [-1]}]

    def _reject(self, field: str, message: str) -> InvalidInput:
        self.metrics.rejected.labels(field.split("[")[0]).inc()
        return InvalidInput(f"field '{field}': {message}")

    def _rank_all(self, bodies: list, client_id: str | None, prefix: str) -> list[dict]:
        out = []
        for i, body in enumerate(bodies):
            try:
                result = self.runtime.rank(body, client_request_id=client_id)
            except RequestError as exc:
                err = exc.within(f"{prefix}[{i}]")
                self.metrics.rejected.labels(exc.field.split("[")[0]).inc()
                raise InvalidInput(str(err)) from exc
            except ModelFailure as exc:
                self.metrics.requests.labels("error", "none").inc()
                raise InferenceError(str(exc)) from exc
            except Exception as exc:
                self.metrics.requests.labels("error", "none").inc()
                raise InferenceError(f"request {client_id or '?'}: internal error: {exc}") from exc
            self.metrics.observe_rank(result)
            out.append(result.to_json())
        return out

    async def _run(self, bodies, client_id, prefix) -> list[dict]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._rank_all, bodies, client_id, prefix)

    def _client_id(self, value, field: str) -> str | None:
        try:
            return correlation_id(value, field)
        except RequestError as exc:
            raise self._reject(exc.field, exc.message) from exc

    async def predict(self, payload, headers=None, response_headers=None):
        header_id = self._client_id((headers or {}).get("x-request-id"), "x-request-id")
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload, header_id)
        if not isinstance(payload, dict) or "instances" not in payload:
            raise self._reject("instances", "is required (a list of rank requests)")
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise self._reject("instances", "must be a non-empty list of rank requests")
        if len(instances) > MAX_INSTANCES:
            raise self._reject("instances", f"more than {MAX_INSTANCES} requests")
        return {"predictions": await self._run(instances, header_id, "instances")}

    async def _predict_v2(self, request: InferRequest, header_id: str | None) -> InferResponse:
        inputs = request.inputs
        if len(inputs) != 1 or inputs[0].name != V2_INPUT or inputs[0].datatype != "BYTES":
            raise self._reject(
                "inputs", f"expected one BYTES input named '{V2_INPUT}' holding rank requests "
                "as JSON text",
            )  # fmt: skip
        bodies = []
        for i, item in enumerate(inputs[0].data or []):
            text = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
            try:
                bodies.append(json.loads(text) if isinstance(text, str) else text)
            except ValueError as exc:
                raise self._reject(f"inputs[0].data[{i}]", f"not valid JSON ({exc})") from exc
        if not bodies or len(bodies) > MAX_INSTANCES:
            raise self._reject("inputs[0].data", f"needs 1 to {MAX_INSTANCES} requests")
        rid = self._client_id(request.id, "id") or header_id
        results = await self._run(bodies, rid, "inputs[0].data")
        texts = [json.dumps(r, separators=(",", ":")) for r in results]
        output = InferOutput(V2_OUTPUT, [len(texts)], "BYTES", texts)
        return InferResponse(
            response_id=rid or results[0]["request_id"],
            model_name=self.name,
            infer_outputs=[output],
            model_version=results[0]["model_version"],
        )
