"""The validation report: one record per check, and its Markdown, HTML and JSON forms.

Every check, whether Great Expectations or pyarrow computed it, is recorded the same way,
so the pipeline, the CLI and a person reading the HTML page see one list of results.
Row numbers are 0-based positions in the file the check names.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from caprank.errors import DataError

Engine = Literal["great_expectations", "pyarrow"]
ROW_NOTE = "Row numbers are 0-based positions in the named file."
_MAX_TEXT = 120
_MAX_ITEMS = 10


def json_value(value: Any) -> Any:
    """A JSON-able, short stand-in for a cell value (bytes escaped, long text cut)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return json_value(value.decode("utf-8", errors="backslashreplace"))
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[: _MAX_TEXT - 1] + "…"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "isoformat"):  # pandas Timestamp and friends
        return value.isoformat()
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy scalar
        return json_value(value.item())
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list | tuple):
        items = [json_value(v) for v in list(value)[:_MAX_ITEMS]]
        return [*items, "…"] if len(value) > _MAX_ITEMS else items
    return json_value(str(value))


@dataclass(frozen=True)
class RowExample:
    """One offending row: the file it is in, its 0-based position there, and its value."""

    file: str
    row: int
    value: Any

    def label(self) -> str:
        return f"row {self.row}: {_show(self.value)}"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one table (and column, when it is about one)."""

    table: str
    file: str
    column: str | None
    check: str
    description: str
    engine: Engine
    passed: bool
    unexpected_count: int | None = 0
    element_count: int | None = None
    examples: list[RowExample] = field(default_factory=list)
    expectation: str | None = None
    skipped: bool = False
    note: str = ""

    @property
    def status(self) -> str:
        if self.skipped:
            return "skipped"
        return "passed" if self.passed else "failed"

    def where(self) -> str:
        return f"{self.table}.{self.column}" if self.column else self.table

    def summary(self) -> str:
        """One line: what was expected and how many rows broke it."""
        text = f"{self.check}: {self.description}"
        if not self.passed and self.unexpected_count is not None:
            of = f" of {self.element_count}" if self.element_count is not None else ""
            text += f" ({self.unexpected_count}{of} rows unexpected)"
        if self.note:
            text += f"; {self.note}"
        return text


@dataclass
class ValidationReport:
    """All check results for one dataset directory, checked at one instant."""

    root: str
    checked_at: str
    checks: list[CheckResult]
    rows: dict[str, int | None] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def ordered(self) -> list[CheckResult]:
        """Failures first, then the rest, each group in the order the checks ran."""
        return self.failures + [c for c in self.checks if c.passed]

    def headline(self) -> str:
        failed = len(self.failures)
        skipped = sum(c.skipped for c in self.checks)
        if self.ok:
            text = f"PASSED: all {len(self.checks)} checks passed"
        else:
            text = f"FAILED: {failed} of {len(self.checks)} checks failed"
        return text + (f" ({skipped} skipped)" if skipped else "")

    def to_dict(self) -> dict[str, Any]:
        checks = []
        for c in self.checks:
            item = asdict(c)
            item["status"] = c.status
            checks.append(item)
        return {
            "root": self.root,
            "checked_at": self.checked_at,
            "ok": self.ok,
            "failed": len(self.failures),
            "total": len(self.checks),
            "row_numbers": "0-based positions in the named file",
            "rows": dict(self.rows),
            "files": {k: list(v) for k, v in self.files.items()},
            "checks": checks,
        }

    def raise_for_errors(self) -> None:
        """Raise a ``DataError`` naming the first failure's file, column and rows."""
        if self.ok:
            return
        first = self.failures[0]
        shown = "; ".join(e.label() for e in first.examples)
        message = (
            f"{first.summary()}{'; examples: ' + shown if shown else ''} "
            f"[{len(self.failures)} of {len(self.checks)} checks failed; "
            f"row numbers are 0-based]"
        )
        error = DataError(
            first.file,
            message,
            row=first.examples[0].row if first.examples else None,
            field=first.column,
        )
        error.examples = [asdict(e) for e in first.examples]
        raise error

    # ---------------------------------------------------------------- renderers

    def to_markdown(self, all_checks: bool = True) -> str:
        """The report; ``all_checks=False`` keeps the headline, tables and failures only."""
        lines = [
            "# Data validation report",
            "",
            f"- dataset: `{self.root}`",
            f"- checked at: {self.checked_at}",
            f"- result: **{self.headline()}**",
            f"- {ROW_NOTE}",
            "",
            "| table | rows | files |",
            "| --- | ---: | --- |",
        ]
        for table, n in self.rows.items():
            files = ", ".join(f"`{f}`" for f in self.files.get(table, [])) or "(absent)"
            lines.append(f"| {table} | {'' if n is None else n} | {_md(files)} |")
        if self.failures:
            lines += ["", "## Failures", ""]
            for c in self.failures:
                lines += [
                    f"### {c.where()}: {c.check} ({c.engine})",
                    "",
                    f"- file: `{c.file}`",
                    f"- {_md(c.summary())}",
                ]
                if c.expectation:
                    lines.append(f"- expectation: `{c.expectation}`")
                if c.examples:
                    lines += ["", "| file | row | value |", "| --- | ---: | --- |"]
                    lines += [
                        f"| `{e.file}` | {e.row} | {_md(_show(e.value))} |" for e in c.examples
                    ]
                lines.append("")
        if not all_checks:
            return "\n".join(lines) + "\n"
        lines += [
            "",
            "## All checks",
            "",
            "| status | table | column | check | engine | unexpected | description |",
            "| --- | --- | --- | --- | --- | ---: | --- |",
        ]
        for c in self.ordered():
            count = "" if c.unexpected_count is None else str(c.unexpected_count)
            desc = c.description + (f" ({c.note})" if c.note else "")
            lines.append(
                f"| {c.status} | {c.table} | {c.column or ''} | {c.check} | {c.engine} "
                f"| {count} | {_md(desc)} |"
            )
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        e = html.escape
        state = "ok" if self.ok else "bad"
        table_rows = "".join(
            f"<tr><td>{e(t)}</td><td class=num>{'' if n is None else n}</td>"
            f"<td>{e(', '.join(self.files.get(t, [])) or '(absent)')}</td></tr>"
            for t, n in self.rows.items()
        )
        check_rows = []
        for c in self.ordered():
            examples = "".join(
                f"<li>{'<code>' + e(x.file) + '</code> ' if x.file != c.file else ''}"
                f"{e(x.label())}</li>"
                for x in c.examples
            )
            count = "" if c.unexpected_count is None else str(c.unexpected_count)
            total = "" if c.element_count is None else f" / {c.element_count}"
            check_rows.append(
                f"<tr class={c.status}><td>{c.status}</td><td>{e(c.table)}</td>"
                f"<td>{e(c.column or '')}</td><td>{e(c.check)}</td><td>{e(c.engine)}</td>"
                f"<td class=num>{count}{total}</td>"
                f"<td>{e(c.description)}{'<br><em>' + e(c.note) + '</em>' if c.note else ''}"
                f"<div class=file>{e(c.file)}</div>"
                f"{'<ul>' + examples + '</ul>' if examples else ''}</td></tr>"
            )
        return _HTML.format(
            root=e(self.root),
            checked_at=e(self.checked_at),
            state=state,
            headline=e(self.headline()),
            note=e(ROW_NOTE),
            table_rows=table_rows,
            check_rows="\n".join(check_rows),
        )


def _show(value: Any) -> str:
    """A value on one line: text quoted, line breaks escaped (bytes already are)."""
    if isinstance(value, str):
        return "'" + value.replace("\n", "\\n").replace("\r", "\\r") + "'"
    return str(value)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>caprank data validation: {headline}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
td.num {{ text-align: right; }}
.ok {{ color: #17692b; }} .bad {{ color: #a4161a; }}
tr.failed td {{ background: #fde8e8; }} tr.skipped td {{ color: #777; }}
.file {{ color: #666; font-size: 0.85em; }}
ul {{ margin: 0.3em 0; padding-left: 1.2em; }}
</style></head><body>
<h1>Data validation report</h1>
<p>Dataset <code>{root}</code>, checked at {checked_at}.</p>
<p class={state}><strong>{headline}</strong></p>
<p>{note}</p>
<table><tr><th>table</th><th>rows</th><th>files</th></tr>
{table_rows}
</table>
<h2>Checks (failures first)</h2>
<table><tr><th>status</th><th>table</th><th>column</th><th>check</th><th>engine</th>
<th>unexpected / rows</th><th>what is expected, file and example rows</th></tr>
{check_rows}
</table>
</body></html>
"""
