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

import kserve
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from caprank.online.hits import kserve_error
from caprank.online.metrics import ServerMetrics
from caprank.online.predict import V2_INPUT, V2_OUTPUT, Predictor, RankFailed
from caprank.online.request import RequestError
from caprank.online.runtime import Runtime


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

    async def predict(self, payload, headers=None, response_headers=None):
        p = self.predictor
        try:
            header_id = p.client_id((headers or {}).get("x-request-id"), "x-request-id")
            if not isinstance(payload, InferRequest):
                return {"predictions": await p.run(p.v1_bodies(payload), header_id, "instances")}
            inputs = [(i.name, i.datatype, i.shape, i.data) for i in payload.inputs]
            bodies = p.v2_bodies(inputs)
            cid = p.client_id(payload.id, "id") or header_id
            results = await p.run(bodies, cid, "inputs[0].data")
        except (RequestError, RankFailed) as exc:
            raise kserve_error(exc) from exc
        texts = [json.dumps(r, separators=(",", ":")) for r in results]
        return InferResponse(
            response_id=cid or results[0]["request_id"],
            model_name=self.name,
            infer_outputs=[InferOutput(V2_OUTPUT, [len(texts)], "BYTES", texts)],
            model_version=results[0]["model_version"],
        )
