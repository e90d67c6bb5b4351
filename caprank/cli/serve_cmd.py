"""`caprank serve`: the KServe predictor on the embedded defaults (docs/serving.md).

It runs the serving image's entry point, ``python -m serving``, in this process (exec):
one way to start the server, and the library never imports ``serving/``.
"""

from __future__ import annotations

import os
import sys

import click

from caprank.cli.context import CliState, pass_state


def serving_argv(
    state: CliState, model_dir: str | None, model_ref: str | None, port: int | None
) -> list[str]:
    """The ``python -m serving`` command line for these options and global flags."""
    cfg = state.config()
    argv = [sys.executable, "-m", "serving", "--model_name", cfg.serving.endpoint_name]
    argv += ["--http_port", str(port or cfg.serving.port)]
    if state.config_file:
        argv += ["--config_file", state.config_file]
    overrides = [*state.overrides, *([f"serving.model_ref={model_ref}"] if model_ref else [])]
    for override in overrides:
        argv += ["--set", override]
    return [*argv, "--model_dir", model_dir] if model_dir else argv


@click.command("serve")
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Serve this model directory instead of the registered model.",
)
@click.option("--model-ref", default=None, help="Registry version or alias, or 'dense'.")
@click.option("--port", type=int, default=None, help="HTTP port (default serving.port).")
@pass_state
def serve_cmd(
    state: CliState, model_dir: str | None, model_ref: str | None, port: int | None
) -> None:
    """Serve the ranker: the registry's `production` alias (set when the deploy stage
    promotes) or what --model-ref / serving.model_ref names, never an unpromoted
    challenger; a registry that cannot be read or lacks it is an error naming it
    (serving.missing_model; the embedded registry before any promotion: the dense
    ranker); V1/V2 endpoints, /v1/feedback, /admin/* (with the bearer token in
    $CAPRANK_ADMIN_TOKEN; off without it, docs/security.md), /metrics. KServe's server
    listens on every interface."""
    argv = serving_argv(state, model_dir, model_ref, port)
    click.echo(" ".join(argv[1:]), err=True)
    sys.stdout.flush()
    os.execv(argv[0], argv)
