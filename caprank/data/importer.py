"""Import a user's catalog, queries and relevance judgements from JSONL or CSV files.

Each contract table comes from one file; a column mapping names, per table, the source
column of each contract column (unmapped columns are looked up under their own name).
Every value is converted to the contract's type here, and a value that cannot be is a
``DataError`` naming the file, the row (its line in the file) and the source column.
What comes out is a ``Dataset``; ``caprank data import`` writes it and runs the same
validation as the pipeline (``caprank.data.validation``) on it.

Conveniences, all documented in docs/data-format.md: without a capabilities file each
tool is a one-tool capability; labels without a grade column get grade 1; list columns
given as text are split on ``list_sep``; timestamps are ISO 8601 (naive: UTC) or Unix
seconds.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from caprank.data.dataset import Dataset
from caprank.data.schemas import TABLES
from caprank.errors import DataError

FORMATS = ("jsonl", "csv")
DEFAULT_GRADE = 1


@dataclass
class ImportSpec:
    """Which file holds each table, in which format, and how its columns are named."""

    files: dict[str, Path]  # contract table -> source file (tools is required)
    fmt: str  # "jsonl" or "csv"
    mapping: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> {ours: theirs}
    list_sep: str = "|"

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {self.fmt!r}")
        for table in [*self.files, *self.mapping]:
            if table not in TABLES:
                raise DataError("<mapping>", f"unknown table {table!r} (tables: {list(TABLES)})")
        for table, cols in self.mapping.items():
            unknown = sorted(set(cols) - set(TABLES[table].columns))
            if unknown:
                raise DataError(
                    "<mapping>",
                    f"table '{table}' has no column(s) {unknown}; it has {TABLES[table].columns}",
                    field=unknown[0],
                )
        if "tools" not in self.files:
            raise DataError("<import>", "a tools file is required")
        if "labels" in self.files and "intents" not in self.files:
            raise DataError("<import>", "labels need an intents file (the query texts)")


def parse_mapping(items: list[str]) -> dict[str, dict[str, str]]:
    """``table.column=source_column`` items -> {table: {column: source_column}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, source = item.partition("=")
        table, dot, column = key.strip().partition(".")
        if not sep or not dot or not column or not source.strip():
            raise DataError("<mapping>", f"{item!r} is not table.column=source_column", field=item)
        out.setdefault(table, {})[column] = source.strip()
    return out


def read_records(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any], list[str] | None]]:
    """(line in the file, record, CSV header or None) for each record."""
    if not path.is_file():
        raise DataError(str(path), "file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # -sig: a leading byte-order mark is dropped
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(str(path), "not UTF-8 text", row=line) from exc
    with io.StringIO(text, newline="") as fh:
        if fmt == "csv":
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if header is None:
                raise DataError(str(path), "empty CSV file (no header row)", row=1)
            for rec in reader:
                if None in rec:
                    raise DataError(
                        str(path), "more values than header columns", row=reader.line_num
                    )
                yield reader.line_num, rec, list(header)
            return
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(str(path), f"invalid JSON ({exc.msg})", row=lineno) from exc
            if not isinstance(rec, dict):
                raise DataError(str(path), "each line must be a JSON object", row=lineno)
            yield lineno, rec, None


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def convert(value: Any, typ: pa.DataType, list_sep: str) -> Any:
    """One source value as the contract type wants it; ValueError says why it cannot."""
    if pa.types.is_list(typ):
        if isinstance(value, str):
            return [v.strip() for v in value.split(list_sep) if v.strip()]
        if isinstance(value, list):
            return [str(convert(v, pa.string(), list_sep)) for v in value]
        raise ValueError(f"expected a list or {list_sep!r}-separated text, found {value!r}")
    if pa.types.is_string(typ):
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected text, found {type(value).__name__}")
        return str(value)
    if pa.types.is_boolean(typ):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true or false, found {value!r}")
    if pa.types.is_integer(typ):
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, found {value!r}")
        number = float(value) if not isinstance(value, int) else value
        if number != int(number):
            raise ValueError(f"expected an integer, found {value!r}")
        number = int(number)
        info = {8: 127, 16: 32767, 32: 2**31 - 1, 64: 2**63 - 1}[typ.bit_width]
        if not -info - 1 <= number <= info:
            raise ValueError(f"{number} is out of range for {typ}")
        return number
    if pa.types.is_floating(typ):
        if isinstance(value, bool):
            raise ValueError(f"expected a number, found {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, found {value!r}")
        return number
    if pa.types.is_timestamp(typ):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), UTC)
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(f"expected ISO 8601 or Unix seconds, found {value!r}") from None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    raise ValueError(f"unsupported type {typ}")


def import_table(name: str, spec: ImportSpec) -> pa.Table:
    """Read one table's file and convert every value (errors name file, row, column)."""
    path = Path(spec.files[name])
    schema = TABLES[name].schema
    mapping = spec.mapping.get(name, {})
    source_of = {f.name: mapping.get(f.name, f.name) for f in schema}
    defaults = {}
    if name == "labels" and "grade" not in mapping:
        defaults["grade"] = DEFAULT_GRADE  # used only where the file has no grade column
    rows = []
    for line, rec, header in read_records(path, spec.fmt):
        if header is not None and not rows:
            _check_header(path, header, schema, source_of, defaults)
        row = {}
        for fld in schema:
            src = source_of[fld.name]
            if src not in rec and fld.name in defaults:
                row[fld.name] = defaults[fld.name]
                continue
            value = rec.get(src)
            if _empty(value) and not pa.types.is_list(fld.type):
                if fld.nullable:
                    row[fld.name] = None
                    continue
                what = "missing column" if src not in rec else "empty value"
                raise DataError(
                    str(path), f"{what} (needed for {name}.{fld.name})", row=line, field=src
                )
            if value is None and pa.types.is_list(fld.type):
                if fld.nullable:
                    row[fld.name] = None
                    continue
                raise DataError(
                    str(path), f"missing column (needed for {name}.{fld.name})", row=line, field=src
                )
            try:
                row[fld.name] = convert(value, fld.type, spec.list_sep)
            except (ValueError, TypeError, OverflowError) as exc:
                raise DataError(
                    str(path), f"{exc} (for {name}.{fld.name})", row=line, field=src
                ) from None
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def _check_header(
    path: Path,
    header: list[str],
    schema: pa.Schema,
    source_of: Mapping[str, str],
    defaults: Mapping[str, Any],
) -> None:
    """A CSV header lacking a required column fails at once, on row 1."""
    for fld in schema:
        src = source_of[fld.name]
        if not fld.nullable and src not in header and fld.name not in defaults:
            raise DataError(
                str(path),
                f"missing column (needed for {fld.name}; header has {header})",
                row=1,
                field=src,
            )


def tools_as_capabilities(tools: pa.Table) -> pa.Table:
    """One capability per tool, for a catalog that has tools only."""
    ids = tools["tool_id"].to_pylist()
    return pa.Table.from_pylist(
        [
            {"capability_id": t, "description": d, "tool_ids": [t], "tool_order_known": True}
            for t, d in zip(ids, tools["description"].to_pylist(), strict=True)
        ],
        schema=TABLES["capabilities"].schema,
    )


def import_files(spec: ImportSpec) -> Dataset:
    """The ``Dataset`` the spec's files hold; tables without a file are empty."""
    tables = {
        name: import_table(name, spec) if name in spec.files else TABLES[name].schema.empty_table()
        for name in TABLES
    }
    if "capabilities" not in spec.files:
        tables["capabilities"] = tools_as_capabilities(tables["tools"])
    manifest = {
        "source": f"import ({spec.fmt})",
        "source_files": {name: str(Path(p).resolve()) for name, p in spec.files.items()},
        "column_mapping": spec.mapping,
        "list_sep": spec.list_sep,
    }
    return Dataset(**tables, manifest=manifest)


def import_and_validate(spec: ImportSpec, out: Path, cfg, now: datetime | None = None):
    """Import the files, check the result with the pipeline's validation, and write it to
    ``out`` only when every check passes (else a ``DataError`` naming the first failure's
    file, column and row). Returns (dataset, validation report)."""
    import tempfile

    from caprank.data.dataset import write_dataset
    from caprank.data.validation import validate_dataset

    ds = import_files(spec)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-import-") as tmp:
        report = validate_dataset(write_dataset(ds, Path(tmp) / "data"), cfg, now=now)
        report.raise_for_errors()
    write_dataset(ds, out)
    return ds, report
