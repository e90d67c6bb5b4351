"""`caprank features`: build the capability feature snapshots and publish them to Feast."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import click

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import data_option, instant_option, out_dir_option


@click.group("features")
def features_group() -> None:
    """Capability features: daily point-in-time snapshots, Feast offline and online."""


@features_group.command("build")
@data_option()
@out_dir_option("Where to write capability_features.parquet (default: paths.features).")
@instant_option(
    "--as-of", help="Cut-off (UTC): ignore events at or after it (default: end of the log)."
)
@click.option("--publish", is_flag=True, help="Also apply to Feast and materialize online.")
@pass_state
def build(
    state: CliState, data_dir: Path, out_dir: Path | None, as_of: datetime | None, publish: bool
) -> None:
    """Compute the snapshots, write them atomically, optionally publish; prints JSON."""
    from caprank.data.dataset import load_dataset
    from caprank.features.stage import build_features, last_snapshot, publish_features

    cfg = state.config()
    result = build_features(load_dataset(data_dir), cfg, out_dir or cfg.features_dir(), as_of)
    report: dict = {"build": asdict(result)}
    if publish:
        published = publish_features(cfg, result.offline_path, last_snapshot(result.offline_path))
        report["publish"] = asdict(published)
    click.echo(json.dumps(report, indent=2, default=str))
