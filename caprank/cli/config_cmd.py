"""`caprank config`: inspect the resolved configuration."""

from __future__ import annotations

import json

import click

from caprank.cli.context import CliState, pass_state
from caprank.config import dump_yaml


@click.group("config")
def config_group() -> None:
    """Show the resolved configuration and where each value came from."""


@config_group.command("show")
@click.option("--format", "fmt", type=click.Choice(["table", "yaml", "json"]), default="table")
@pass_state
def show(state: CliState, fmt: str) -> None:
    """Print every setting with its value and source (default, file, env or --set)."""
    resolved = state.resolved()
    if fmt == "yaml":
        click.echo(dump_yaml(resolved.config), nl=False)
        return
    if fmt == "json":
        rows = [{"key": k, "value": v, "source": s} for k, v, s in resolved.rows()]
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    rows = resolved.rows()
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        click.echo(f"{key:<{width}}  {json.dumps(value, default=str):<40}  {source}")
