"""`caprank monitor`: drift between the log's reference and current windows."""

from __future__ import annotations

import json

import click

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import data_option, out_dir_option


@click.command("monitor")
@data_option()
@click.option(
    "--features",
    "features_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Feature tables (capability_features.parquet) for the staleness check.",
)
@click.option(
    "--policy",
    type=click.Choice(["always", "on_drift", "on_degradation", "never"]),
    default=None,
    help="Retrain policy (default: monitoring.retrain_policy).",
)
@out_dir_option("Write monitor.json (and drift_report.html) here.")
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
        atomic_write_json(out_dir / "monitor.json", result.to_dict())
        if result.drift is not None and result.drift.html is not None:
            result.drift.write_html(out_dir / "drift_report.html")
    click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))
