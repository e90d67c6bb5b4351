"""`caprank data validate DIR`: check a dataset directory (or s3:// URI) and write its
report."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import DataUri, instant_option, out_file_option
from caprank.data.validation import validate_dataset
from caprank.files import atomic_write_text


@click.command("validate")
@click.argument("directory", type=DataUri())
@out_file_option(
    "--report",
    "report_md",
    help="Write the report as Markdown here (written whether or not checks pass).",
)
@out_file_option(
    "--html", "report_html", help="Write the report as a self-contained HTML page here."
)
@instant_option("--now", help="Validate as of this instant (UTC unless an offset is given).")
@pass_state
def validate(
    state: CliState,
    directory: str | Path,
    report_md: Path | None,
    report_html: Path | None,
    now: datetime | None,
) -> None:
    """Validate the dataset in DIRECTORY (or s3://bucket/prefix); exit 2 with the first
    failure when checks fail."""
    report = validate_dataset(directory, state.config(), now=now)
    if report_md is not None:
        atomic_write_text(report_md, report.to_markdown())
    if report_html is not None:
        atomic_write_text(report_html, report.to_html())
    click.echo(f"{directory}: {report.headline()}")
    report.raise_for_errors()
