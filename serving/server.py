"""Running the app with uvicorn: in the foreground (``python -m serving``) or in a
thread (tests, ``caprank serve --help`` examples)."""

from __future__ import annotations

import threading
import time

import uvicorn

from caprank.config import CaprankConfig
from caprank.online.runtime import Runtime
from serving.app import build_app


def make_server(runtime: Runtime, model_name: str, host: str, port: int) -> uvicorn.Server:
    app, _model = build_app(runtime, model_name)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        loop="asyncio",
        timeout_keep_alive=65,
    )
    return uvicorn.Server(config)


class ThreadedServer:
    """A real server on loopback in a background thread; ``stop()`` shuts it down."""

    def __init__(self, runtime: Runtime, model_name: str, port: int, host: str = "127.0.0.1"):
        self.runtime = runtime
        self.server = make_server(runtime, model_name, host, port)
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self, timeout_s: float = 30.0) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


def serve(cfg: CaprankConfig, model_ref: str, model_name: str, host: str, port: int) -> None:
    """Start the runtime (model loads in the background) and serve until interrupted."""
    runtime = Runtime(cfg, model_ref).start(background_load=True)
    try:
        make_server(runtime, model_name, host, port).run()
    finally:
        runtime.close()
