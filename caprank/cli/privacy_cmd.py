"""`caprank privacy`: act on a user's data (thin adapter over caprank.erasure)."""

from __future__ import annotations

import click

from caprank.cli.context import CliState, pass_state
from caprank.erasure import delete_user


@click.group("privacy")
def privacy_group() -> None:
    """Delete a user's data from the feedback log and every later dataset."""


@privacy_group.command("delete-user")
@click.argument("user_id")
@pass_state
def delete_user_cmd(state: CliState, user_id: str) -> None:
    """Remove USER_ID's events (raw or hashed id) from the feedback log's parts and
    write-ahead segments, and record the deletion so ingest drops them from the next
    dataset. Run it while the server is stopped (docs/security.md)."""
    report = delete_user(state.config(), user_id)
    click.echo(
        f"deleted user {report.user}: {report.events_removed} events removed from "
        f"{len(report.files_rewritten)} files; ingest drops the user from now on"
    )
