"""`caprank update`: warm-start the production (or a given) bundle on what was logged since."""

from __future__ import annotations

import json

import click

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import data_option, instant_option, out_dir_option


class UpdateRejected(click.ClickException):
    """The forgetting guard rejected the update: exit code 3 (not a usage error)."""

    exit_code = 3


@click.command("update")
@data_option(exists=True)
@click.option(
    "--base",
    default="production",
    show_default=True,
    help="Bundle directory, or a registered version number or alias to download.",
)
@out_dir_option("Where the updated bundle and update.json go.", required=True)
@click.option(
    "--features",
    default=None,
    type=click.Path(exists=True),
    help="capability_features.parquet (or its folder) from the features stage.",
)
@instant_option("--since", help="Data cut-off (default: the one recorded in the base bundle).")
@click.option(
    "--track",
    is_flag=True,
    help="Log the update as an MLflow run whose model the evaluate stage can register.",
)
@pass_state
def update_cmd(state: CliState, data_dir, base, out_dir, features, since, track) -> None:
    """Incremental update; exits 3 when the forgetting guard rejects it (no bundle written)."""
    from caprank.data.dataset import load_dataset
    from caprank.training.update import update

    cfg = state.config()
    report = update(load_dataset(data_dir), cfg, base, out_dir, features, since=since, track=track)
    click.echo(report.to_markdown())
    summary = {"accepted": report.accepted, "out": str(out_dir), "drop": report.drop}
    if report.run_id:
        summary["mlflow_run_id"] = report.run_id
    click.echo(json.dumps(summary))
    if not report.accepted:
        raise UpdateRejected(f"update rejected by the forgetting guard; see {out_dir}/update.json")
