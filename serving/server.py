"""KServe's ``ModelServer`` with probes that tell whether a model is served (readiness
waits for the load; readiness and liveness fail once a served model is gone) and its
model-repository extension closed unless ``serving.model_repository``; ``bind`` points
caprank's routes (``caprank.online.routes.mount``) at a runtime. docs/security.md."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import FastAPI
from kserve import ModelServer
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from caprank.online.metrics import ServerMetrics
from caprank.online.routes import ServerState
from caprank.online.runtime import Runtime
from serving.model import CaprankModel


class LoadedDataPlane(DataPlane):
    """Readiness means every model this server was given is registered and loaded (not just
    "up"); liveness means none of them is gone. An unknown name stays a 404."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.served: set[str] = set()

    def _present(self) -> bool:
        models = self.model_registry.get_models()
        return bool(models) and self.served <= set(models)

    async def ready(self) -> bool:
        models = self.model_registry.get_models().values()
        return self._present() and all(getattr(m, "loaded", m.ready) for m in models)

    async def live(self) -> dict[str, str]:
        return {"status": "alive" if self._present() else "model gone"}

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False):
        if model_name in self.served and self.model_registry.get_model(model_name) is None:
            return False  # it was served and is gone: 503, not "model does not exist"
        return await super().model_ready(model_name, disable_predictor_health_check)

    def decode(self, body, headers, *args, **kwargs):
        """KServe's V1 decoding, with Python's JSON reader where orjson refuses a valid body
        (integers past 64 bits), so the field check names the field."""
        try:
            return super().decode(body, headers, *args, **kwargs)
        except InvalidInput as exc:
            if not isinstance(body, bytes | bytearray):
                raise
            refused = exc
        try:
            parsed = json.loads(body)
        except ValueError:
            raise refused from None  # not JSON at all: KServe's own message
        return super().decode(parsed, headers, *args, **kwargs)


class GatedRepository(ModelRepositoryExtension):
    """KServe's model-repository extension that refuses to load or unload unless
    ``is_open()`` (``serving.model_repository``); over REST ``RepositoryGate`` also asks
    for the admin token, and this covers the gRPC RPCs, which carry none."""

    def __init__(self, model_registry, is_open: Callable[[], bool]):
        super().__init__(model_registry=model_registry)
        self.is_open = is_open

    def _check(self) -> None:
        if not self.is_open():
            raise NotImplementedError("the model-repository extension is off")

    async def load(self, model_name: str) -> None:
        self._check()
        await super().load(model_name)

    async def unload(self, model_name: str) -> None:
        self._check()
        await super().unload(model_name)


class CaprankServer(ModelServer):
    def __init__(self, repository_open: Callable[[], bool] = lambda: False, **kwargs):
        super().__init__(**kwargs)
        self.dataplane = LoadedDataPlane(model_registry=self.registered_models)
        self.model_repository_extension = GatedRepository(self.registered_models, repository_open)

    def register_model(self, model, name: str | None = None):
        super().register_model(model, name)
        self.dataplane.served.add(name or model.name)


def bind(app: FastAPI, runtime: Runtime, model_name: str) -> CaprankModel:
    """The KServe model over ``runtime``, with the app's caprank routes pointed at it."""
    metrics = ServerMetrics(runtime)
    model = CaprankModel(model_name, runtime, metrics)
    app.state.caprank = ServerState(runtime, metrics, model)
    model.load()
    return model
