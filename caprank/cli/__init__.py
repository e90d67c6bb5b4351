"""The `caprank` command: a thin adapter over the library's stage functions."""

from __future__ import annotations

import sys

import click

from caprank import __version__
from caprank.cli.benchmark_cmd import benchmark_cmd
from caprank.cli.config_cmd import config_group
from caprank.cli.context import CliState
from caprank.cli.data_cmd import data_group
from caprank.cli.deploy_cmd import deploy_cmd
from caprank.cli.embed_cmd import embed_cmd
from caprank.cli.experiment_cmd import experiment_group
from caprank.cli.features_cmd import features_group
from caprank.cli.label_cmd import label_group
from caprank.cli.monitor_cmd import monitor_cmd
from caprank.cli.pipeline_cmd import pipeline_group
from caprank.cli.privacy_cmd import privacy_group
from caprank.cli.rollback_cmd import rollback_cmd
from caprank.cli.serve_cmd import serve_cmd
from caprank.cli.train_cmd import train_cmd
from caprank.cli.tune_cmd import tune_cmd
from caprank.cli.update_cmd import update_cmd
from caprank.errors import CaprankError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML config file (also CAPRANK_CONFIG).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one setting, e.g. --set training.lr=0.0005 (repeatable).",
)
@click.version_option(__version__, prog_name="caprank")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, overrides: tuple[str, ...]) -> None:
    """caprank: learn to rank capabilities for an intent, and keep the ranker fresh."""
    ctx.obj = CliState(config_file=config_file, overrides=list(overrides))


cli.add_command(config_group)
cli.add_command(pipeline_group)
cli.add_command(data_group)
cli.add_command(features_group)
cli.add_command(embed_cmd)
cli.add_command(serve_cmd)
cli.add_command(train_cmd)
cli.add_command(tune_cmd)
cli.add_command(update_cmd)
cli.add_command(monitor_cmd)
cli.add_command(privacy_group)
cli.add_command(experiment_group)
cli.add_command(benchmark_cmd)
cli.add_command(rollback_cmd)
cli.add_command(deploy_cmd)
cli.add_command(label_group)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: library errors become one readable line and exit code 2."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except CaprankError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
