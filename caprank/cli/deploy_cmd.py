"""`caprank deploy --version N`: roll a registered version out by hand (the deploy stage)."""

from __future__ import annotations

import json

import click

from caprank.cli.context import CliState, pass_state


@click.command("deploy")
@click.option("--version", "version", required=True, help="Registered model version to roll out.")
@click.option(
    "--target",
    type=click.Choice(["local", "cluster", "fleet"]),
    default=None,
    help="Where to roll out (default: canary.target; auto is cluster inside a pod).",
)
@pass_state
def deploy_cmd(state: CliState, version: str, target: str | None) -> None:
    """Canary VERSION, then promote it or roll it back by the guardrails (exit 3 when
    it is rolled back)."""
    from caprank.deploy.stage import deploy

    result = deploy(state.config(), version, target=target)
    click.echo(result.to_markdown())
    click.echo(json.dumps(result.to_json(), sort_keys=True, default=str))
    if result.outcome == "rolled_back":
        raise click.exceptions.Exit(3)
