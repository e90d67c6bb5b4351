"""Flags that several `caprank` commands share: declared once, so each means the same
thing (and parses the same way) in every command that takes it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click

Decorator = Callable[[Callable], Callable]
INSTANT_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]


def data_option(
    *, exists: bool = False, help: str = "Dataset directory (catalog and interaction logs)."
) -> Decorator:
    """Required ``--data DIR`` as ``data_dir``. Without ``exists`` a missing folder is left
    to ``load_dataset``, whose error names what is missing."""
    return click.option(
        "--data",
        "data_dir",
        required=True,
        type=click.Path(file_okay=False, exists=exists, path_type=Path),
        help=help,
    )


class DataUri(click.ParamType):
    """A dataset location: an ``s3://bucket/prefix`` URI, kept as a string (credentials and
    endpoint come from the environment, see ``caprank.data.storage``), or a local folder,
    as a ``Path`` (that must exist when ``exists``)."""

    name = "DIR|s3://BUCKET/PREFIX"

    def __init__(self, exists: bool = False):
        self.local = click.Path(file_okay=False, exists=exists, path_type=Path)

    def convert(self, value, param, ctx):
        from caprank.data.storage import is_object_uri

        if is_object_uri(value):
            return value
        return self.local.convert(value, param, ctx)


def out_dir_option(help: str | None = None, *, required: bool = False) -> Decorator:
    """``--out DIR`` as ``out_dir``: the folder a stage writes into."""
    return click.option(
        "--out",
        "out_dir",
        required=required,
        default=None,
        type=click.Path(file_okay=False, path_type=Path),
        help=help,
    )


def out_file_option(*decls: str, help: str) -> Decorator:
    """An optional file to write (a folder is refused)."""
    return click.option(
        *decls, type=click.Path(dir_okay=False, path_type=Path), default=None, help=help
    )


def _as_utc(_ctx: click.Context, _param: click.Parameter, value: datetime | None):
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def instant_option(*decls: str, help: str) -> Decorator:
    """An optional instant: a date, or a date and time with or without an offset; UTC
    when none is given."""
    return click.option(
        *decls, type=click.DateTime(INSTANT_FORMATS), default=None, callback=_as_utc, help=help
    )
