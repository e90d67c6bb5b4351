"""Errors users see. Each names where the problem is (file, row, field or config key)."""

from __future__ import annotations


class CaprankError(Exception):
    """Base for errors the CLI reports as a message, without a traceback."""


class ConfigError(CaprankError):
    """A configuration key is unknown or its value has the wrong type or range."""

    def __init__(self, key: str, message: str, allowed: str | None = None, source: str = ""):
        self.key = key
        self.allowed = allowed
        self.source = source
        text = f"config key '{key}': {message}"
        if allowed:
            text += f" (allowed: {allowed})"
        if source:
            text += f" [from {source}]"
        super().__init__(text)


class DataError(CaprankError):
    """Input data breaks the data contract; names the file and, where known, row and field."""

    def __init__(
        self,
        file: str,
        message: str,
        *,
        row: int | None = None,
        field: str | None = None,
        examples: list | None = None,
    ):
        self.file = str(file)
        self.message = message
        self.row = row
        self.field = field
        self.examples = examples or []
        where = self.file
        if field is not None:
            where += f", field '{field}'"
        if row is not None:
            where += f", row {row}"
        text = f"{where}: {message}"
        if self.examples:
            text += f" (examples: {self.examples[:5]})"
        super().__init__(text)
