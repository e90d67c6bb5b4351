"""`caprank monitor`: drift between the log's reference and current windows."""

from __future__ import annotations

import json
from pathlib import Path

import click

from caprank.cli.context import CliState, pass_state


@click.command("monitor")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False))
@click.option(
    "--features",
    "features_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Feature tables (capability_features.parquet) for the staleness check.",
)
@click.option(
    "--policy",
    type=click.Choice(["always", "on_drift", "never"]),
    default=None,
    help="Retrain policy (default: monitoring.retrain_policy).",
)
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False))
@pass_state
def monitor_cmd(state: CliState, data_dir, features_dir, policy, out_dir) -> None:
    """Judge drift on --data's interaction log and print whether to retrain (JSON)."""
    from caprank.data.dataset import load_dataset
    from caprank.files import atomic_write_json
    from caprank.monitoring import monitor

    cfg = state.config()
    result = monitor(
        load_dataset(data_dir),
        cfg,
        features_dir=features_dir,
        policy=policy,
        html=out_dir is not None,
    )
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "monitor.json", result.to_dict())
        if result.drift is not None and result.drift.html is not None:
            result.drift.write_html(Path(out_dir) / "drift_report.html")
    click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))
