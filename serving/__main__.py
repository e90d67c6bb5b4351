"""``python -m serving``: the serving image's entry point, with KServe's own flags.

KServe's ``model_server.parser`` (``--model_name``, ``--http_port``, ...) plus caprank's
``--model_dir`` (KServe: ``/mnt/models``; else ``default_model_ref``), ``--config_file`` and
``--set K=V``. gRPC is off unless ``--enable_grpc true``. ``caprank serve`` runs this.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kserve import model_server

from caprank.config import load_config
from caprank.online.routes import mount
from caprank.online.runtime import Runtime, default_model_ref
from serving.server import CaprankServer, bind

PASSED_ON = ("grpc_port", "enable_grpc", "max_threads", "max_asyncio_workers",
             "enable_docs_url", "enable_latency_logging", "access_log_format", "event_loop",
             "timeout_keep_alive", "ssl_certfile", "ssl_keyfile")  # fmt: skip

parser = argparse.ArgumentParser(
    prog="python -m serving", parents=[model_server.parser], description=__doc__
)
parser.add_argument("--model_dir", default=None, help="model directory (KServe: /mnt/models)")
parser.add_argument("--config_file", help="caprank YAML (KServe reads argv first: no --config)")
parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
# caprank's metrics time every request: no KServe latency log line per request
parser.set_defaults(
    model_name=None, http_port=None, enable_grpc=False, enable_latency_logging=False
)


def main(argv: list[str] | None = None) -> int:
    args = parser.parse_args(argv)
    if args.workers != 1:
        parser.error("--workers: the runtime lives in one process; run more replicas instead")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = load_config(args.config_file, args.overrides)
    if cfg.serving.model_repository and args.enable_grpc:
        parser.error("serving.model_repository: gRPC carries no admin token; keep it off there")
    runtime = Runtime(cfg, args.model_dir or default_model_ref(cfg)).start(background_load=True)
    model = bind(model_server.app, runtime, args.model_name or cfg.serving.endpoint_name)
    mount(model_server.app, cfg.serving.max_payload_bytes)
    kwargs = {name: getattr(args, name) for name in PASSED_ON}
    server = CaprankServer(
        http_port=args.http_port or cfg.serving.port, workers=1,
        repository_open=lambda: cfg.serving.model_repository, **kwargs,
    )  # fmt: skip
    if args.log_config_file is None:  # no log line per request unless a log config asks
        for name in ("kserve.trace", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        server.start([model])
    finally:
        model.metrics.close()
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
