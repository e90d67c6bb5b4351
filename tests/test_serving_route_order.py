"""The serving app as it starts: caprank's routes behind KServe's predict routes, and
KServe's per-request timing middleware gone unless its trace logger is on (issue 16's
cache-hit path: both cost time on every request and add nothing caprank's metrics lack)."""

from __future__ import annotations

import logging
from typing import ClassVar

import kserve
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
from timing_asgi import TimingClient, TimingMiddleware
from timing_asgi.integrations import StarletteScopeToName

from caprank.online import routes
from caprank.online.routes import mount


class NoopModel(kserve.Model):
    ANSWER: ClassVar[dict] = {"predictions": ["noop"]}

    async def predict(self, payload, headers=None, response_headers=None):
        return self.ANSWER


class Quiet(TimingClient):
    def timing(self, metric_name, timing, tags) -> None:
        pass


def kserve_shaped_app() -> FastAPI:
    """What ``ModelServer.start`` makes of the app: caprank's mount, then KServe's
    middleware and endpoints (``RESTServer.create_application``)."""
    app = FastAPI()
    mount(app, 1_000_000)
    app.add_middleware(
        TimingMiddleware, client=Quiet(), metric_namer=StarletteScopeToName("k", app)
    )
    repo = ModelRepository()
    model = NoopModel("noop")
    model.ready = True
    repo.update(model)
    register_v1_endpoints(app, DataPlane(model_registry=repo), ModelRepositoryExtension(repo))
    return app


def _owners(app: FastAPI) -> list:
    return [getattr(r, "original_router", None) for r in app.router.routes]


@pytest.mark.parametrize("trace_on", [False, True])
def test_startup_puts_inference_first(trace_on: bool):
    trace = logging.getLogger("kserve.trace")
    before = trace.level
    trace.setLevel(logging.INFO if trace_on else logging.WARNING)
    try:
        app = kserve_shaped_app()
        assert _owners(app).index(routes.router) < len(app.router.routes) - 1  # KServe's after
        with TestClient(app) as client:
            assert _owners(app)[-1] is routes.router  # caprank's own routes matched last
            names = [m.cls.__name__ for m in app.user_middleware]
            assert ("TimingMiddleware" in names) is trace_on
            # the 405 for GET on predict still wins over KServe's model-status route
            assert client.get("/v1/models/caprank:predict").status_code == 405
            answer = client.post("/v1/models/noop:predict", json={"instances": [1]})
            assert answer.status_code == 200 and answer.json() == NoopModel.ANSWER
            # caprank's routes are still matched (no runtime is bound here: not a 404 is all)
            assert client.post("/v1/feedback", json={}).status_code not in (404, 405)
    finally:
        trace.setLevel(before)
