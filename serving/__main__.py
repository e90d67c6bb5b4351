"""``python -m serving``: the entry point of the serving image (KServe's runtime flags).

Accepts ``--model_name``, ``--model_dir`` (KServe's storage initializer puts the model in
``/mnt/models``) and ``--http_port`` as the ServingRuntime passes them; other KServe flags
are ignored. Without ``--model_dir`` the model comes from ``serving.model_ref``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from caprank.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("--model_name", default=None, help="name in the endpoint paths")
    parser.add_argument("--model_dir", default=None, help="model directory (KServe: /mnt/models)")
    parser.add_argument("--http_port", type=int, default=None)
    parser.add_argument("--host", default=None)
    parser.add_argument("--config", default=None, help="caprank YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args, unknown = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if unknown:
        logging.getLogger("serving").info("ignoring KServe flags %s", unknown)
    cfg = load_config(args.config, args.overrides)
    from serving.server import serve

    serve(
        cfg,
        model_ref=args.model_dir or cfg.serving.model_ref,
        model_name=args.model_name or cfg.serving.endpoint_name,
        host=args.host or ("0.0.0.0" if args.model_dir else cfg.serving.host),
        port=args.http_port or cfg.serving.port,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
