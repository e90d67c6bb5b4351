"""The ``kserve.Model`` that answers V1 and V2 (Open Inference Protocol) requests.

V1: ``POST /v1/models/<name>:predict`` with ``{"instances": [<rank request>, ...]}``;
answers ``{"predictions": [<rank response>, ...]}``.
V2: ``POST /v2/models/<name>/infer`` with one BYTES input named ``request`` of shape
``[n]`` whose elements are rank requests as JSON text; answers one BYTES output named
``response`` of shape ``[n]`` holding the responses as JSON text.
Validation, the cache-hit fast path, the queue and ids: ``caprank.online.predict``.
"""

from __future__ import annotations

import json
from typing import Any

import kserve
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from caprank.online.metrics import ServerMetrics
from caprank.online.predict import Predictor, RankFailed
from caprank.online.request import RequestError
from caprank.online.runtime import Runtime

V2_INPUT = "request"
V2_OUTPUT = "response"
V1_FIELDS = ("instances",)


class CaprankModel(kserve.Model):
    """``ready``/``healthy`` mean "can answer" (by the model, or by the dense fallback
    while it loads), so KServe routes requests at once; ``loaded`` means the model named
    by the reference is in, which the server's readiness reports."""

    def __init__(self, name: str, runtime: Runtime, metrics: ServerMetrics):
        super().__init__(name)
        self.runtime = runtime
        self.metrics = metrics
        self.predictor = Predictor(runtime, metrics)

    def load(self) -> bool:
        self.ready = self.runtime.can_serve
        return self.ready

    def start(self) -> None:  # KServe's default marks the model ready; readiness is ours
        pass

    def stop(self) -> None:
        self.ready = False
        self.predictor.close()

    async def healthy(self) -> bool:
        return self.ready and self.runtime.can_serve

    @property
    def loaded(self) -> bool:
        return self.ready and self.runtime.ready

    def get_input_types(self) -> list[dict]:
        return [{"name": V2_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": V2_OUTPUT, "datatype": "BYTES", "shape": [-1]}]

    async def _answer(self, bodies: list, client_id: str | None, prefix: str) -> list[dict]:
        try:
            return await self.predictor.run(bodies, client_id, prefix)
        except RequestError as exc:
            raise InvalidInput(str(exc)) from exc
        except RankFailed as exc:
            raise InferenceError(str(exc)) from exc

    def _checked(self, fn, *args):
        try:
            return fn(*args)
        except RequestError as exc:
            raise InvalidInput(str(exc)) from exc

    async def predict(self, payload, headers=None, response_headers=None):
        header = (headers or {}).get("x-request-id")
        header_id = self._checked(self.predictor.client_id, header, "x-request-id")
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload, header_id)
        reject = self.predictor.reject
        if not isinstance(payload, dict) or "instances" not in payload:
            raise InvalidInput(str(reject("instances", "is required (a list of rank requests)")))
        unknown = sorted(set(payload) - set(V1_FIELDS))
        if unknown:
            msg = "unknown field (a V1 body holds only 'instances')"
            raise InvalidInput(str(reject(unknown[0], msg)))
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            msg = "must be a non-empty list of rank requests"
            raise InvalidInput(str(reject("instances", msg)))
        self._checked(self.predictor.check_count, len(instances), "instances")
        return {"predictions": await self._answer(instances, header_id, "instances")}

    def _v2_bodies(self, request: InferRequest) -> list[Any]:
        inputs, reject = request.inputs, self.predictor.reject
        if len(inputs) != 1 or inputs[0].name != V2_INPUT or inputs[0].datatype != "BYTES":
            raise reject(
                "inputs", f"expected one BYTES input named '{V2_INPUT}' holding rank requests "
                "as JSON text",
            )  # fmt: skip
        data = inputs[0].data or []
        self.predictor.check_count(len(data), "inputs[0].data")
        shape = list(inputs[0].shape or [])
        if shape != [len(data)]:
            raise reject(
                "inputs[0].shape", f"is {shape} but the data holds {len(data)} elements "
                f"(it must be [{len(data)}])",
            )  # fmt: skip
        bodies = []
        for i, item in enumerate(data):
            text = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
            try:
                bodies.append(json.loads(text) if isinstance(text, str) else text)
            except ValueError as exc:
                raise reject(f"inputs[0].data[{i}]", f"not valid JSON ({exc})") from exc
        return bodies

    async def _predict_v2(self, request: InferRequest, header_id: str | None) -> InferResponse:
        bodies = self._checked(self._v2_bodies, request)
        cid = self._checked(self.predictor.client_id, request.id, "id") or header_id
        results = await self._answer(bodies, cid, "inputs[0].data")
        texts = [json.dumps(r, separators=(",", ":")) for r in results]
        output = InferOutput(V2_OUTPUT, [len(texts)], "BYTES", texts)
        return InferResponse(
            response_id=cid or results[0]["request_id"],
            model_name=self.name,
            infer_outputs=[output],
            model_version=results[0]["model_version"],
        )
