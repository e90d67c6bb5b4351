"""`caprank embed`: text, Node2Vec and hybrid embeddings of a dataset's catalog."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import data_option, out_dir_option


def _timestamp(_ctx, _param, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO timestamp: {value!r}") from exc
    if ts.tzinfo is None:
        raise click.BadParameter("give a timezone, e.g. 2026-10-22T00:00:00+00:00")
    return ts


@click.command("embed")
@data_option()
@out_dir_option("Where the two tables and embeddings.json go.", required=True)
@click.option(
    "--train-until",
    callback=_timestamp,
    default=None,
    help="Only interactions before this time add co-selection edges (ISO, with zone).",
)
@pass_state
def embed_cmd(state: CliState, data_dir: Path, out_dir: Path, train_until: datetime | None) -> None:
    """Embed the catalog of --data into --out (two Parquet tables + embeddings.json)."""
    from caprank.data.dataset import load_dataset
    from caprank.embeddings.stage import embed

    result = embed(load_dataset(data_dir), state.config(), out_dir, train_until=train_until)
    summary = {k: v for k, v in result.summary.items() if k != "params"}
    summary["out_dir"] = str(result.out_dir)
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
