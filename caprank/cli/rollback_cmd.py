"""`caprank rollback --to VERSION`: serve a registered version again, by hand."""

from __future__ import annotations

import json

import click

from caprank.cli.context import CliState, pass_state


@click.command("rollback")
@click.option("--to", "version", required=True, help="Registered model version to serve.")
@click.option(
    "--target",
    type=click.Choice(["local", "cluster", "fleet"]),
    default=None,
    help="Where to roll back (default: canary.target; auto is cluster inside a pod).",
)
@pass_state
def rollback_cmd(state: CliState, version: str, target: str | None) -> None:
    """Point `production` at VERSION and (cluster) make the InferenceService serve it."""
    from caprank.deploy.rollback import rollback_to

    result = rollback_to(state.config(), version, target=target)
    click.echo(result.to_markdown())
    click.echo(json.dumps(result.to_json(), sort_keys=True, default=str))
