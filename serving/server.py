"""KServe's ``ModelServer``, and what caprank adds to its app.

``CaprankServer`` is KServe's ``ModelServer`` whose readiness (``/v2/health/ready``, the
readiness probe) waits for the model load: the server starts before the model has loaded,
so that it can answer with the dense fallback meanwhile. ``mount`` adds the library's
feedback and admin router, its error bodies and the payload limit to KServe's app;
``bind`` points them, and a new ``CaprankModel``, at a runtime.
"""

from __future__ import annotations

from fastapi import FastAPI
from kserve import ModelServer
from kserve.protocol.dataplane import DataPlane

from caprank.online.metrics import ServerMetrics
from caprank.online.payload import PayloadLimit
from caprank.online.routes import ERROR_HANDLERS, ServerState, router
from caprank.online.runtime import Runtime
from serving.model import CaprankModel


class LoadedDataPlane(DataPlane):
    """Server readiness means every registered model has loaded, not just "up"."""

    async def ready(self) -> bool:
        models = self.model_registry.get_models().values()
        return all(getattr(m, "loaded", m.ready) for m in models)


class CaprankServer(ModelServer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dataplane = LoadedDataPlane(model_registry=self.registered_models)


def mount(app: FastAPI, max_payload_bytes: int) -> None:
    """Add caprank's routes, error bodies and payload limit to KServe's app (once, before
    it serves; KServe adds its own endpoints when the server starts)."""
    app.include_router(router)
    for exc, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(exc, handler)
    app.add_middleware(PayloadLimit, max_bytes=max_payload_bytes)


def bind(app: FastAPI, runtime: Runtime, model_name: str) -> CaprankModel:
    """The KServe model over ``runtime``, with the app's caprank routes pointed at it."""
    metrics = ServerMetrics(runtime)
    app.state.caprank = ServerState(runtime, metrics)
    model = CaprankModel(model_name, runtime, metrics)
    model.load()
    return model
