"""`caprank serve`: the KServe predictor on the embedded defaults (docs/serving.md)."""

from __future__ import annotations

import click

from caprank.cli.context import CliState, pass_state


@click.command("serve")
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Serve this model directory instead of the registered model.",
)
@click.option("--model-ref", default=None, help="Registry version or alias, or 'dense'.")
@click.option("--port", type=int, default=None, help="HTTP port (default serving.port).")
@click.option("--host", default=None, help="Bind address (default serving.host).")
@pass_state
def serve_cmd(
    state: CliState,
    model_dir: str | None,
    model_ref: str | None,
    port: int | None,
    host: str | None,
) -> None:
    """Serve the ranker: the registry's `production` alias (set when the deploy stage
    promotes), else `challenger`, else its latest version, else the dense ranker; V1/V2
    endpoints, /v1/feedback, /admin/*, /metrics."""
    from caprank.online.runtime import default_model_ref
    from serving.server import serve

    cfg = state.config()
    ref = model_dir or model_ref or default_model_ref(cfg)
    host, port = host or cfg.serving.host, port or cfg.serving.port
    click.echo(f"serving '{ref}' as {cfg.serving.endpoint_name} on http://{host}:{port}", err=True)
    serve(cfg, ref, cfg.serving.endpoint_name, host, port)
