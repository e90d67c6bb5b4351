"""`caprank config`: inspect the resolved configuration."""

from __future__ import annotations

import json
from pathlib import Path

import click

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import out_file_option
from caprank.config import dump_yaml
from caprank.config_doc import render
from caprank.files import atomic_write_text


@click.group("config")
def config_group() -> None:
    """Show the resolved configuration and where each value came from, or document it."""


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


@config_group.command("doc")
@out_file_option(
    "--out", help="Write the page here (e.g. docs/configuration.md) instead of printing it."
)
def doc(out: Path | None) -> None:
    """Render docs/configuration.md: every setting, its meaning and default, from the code."""
    text = render()
    if out is None:
        click.echo(text, nl=False)
        return
    atomic_write_text(out, text)
    click.echo(f"wrote {out}", err=True)
