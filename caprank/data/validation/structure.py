"""The structural read of each table, turned into checks instead of tracebacks.

``caprank.data.dataset.read_table`` already refuses missing or empty files, corrupt
Parquet, missing columns and wrong types. Here its ``DataError`` becomes a failed check,
a type failure is traced back to the rows that cannot be cast, and text is checked to be
valid UTF-8 (Parquet lets a writer store any bytes in a string column).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from caprank.data.dataset import CAST_ERRORS, contract_files, read_table, uncastable_rows
from caprank.data.schemas import TABLES
from caprank.data.storage import Location
from caprank.data.validation.report import CheckResult, RowExample, json_value
from caprank.errors import DataError

READABLE = "readable Parquet with the contract's columns and types"
UTF8 = "text is valid UTF-8"


@dataclass
class LoadedTable:
    """A table that passed the structural read, and which file each of its rows came from."""

    name: str
    table: pa.Table
    sources: list[tuple[str, int]]  # (file, rows) in read order; an absent table: (file, 0)

    def __post_init__(self) -> None:
        self._starts: list[int] = []
        total = 0
        for _, n in self.sources:
            self._starts.append(total)
            total += n
        if total != self.table.num_rows:
            raise ValueError(f"{self.name}: files hold {total} rows, table {self.table.num_rows}")

    @property
    def file(self) -> str:
        """The file a check on the whole table names (the first source)."""
        return self.sources[0][0]

    def locate(self, index: int) -> tuple[str, int]:
        """(file, 0-based row in that file) of a row of the concatenated table."""
        i = bisect.bisect_right(self._starts, index) - 1
        return self.sources[i][0], index - self._starts[i]

    def example(self, index: int, value: object) -> RowExample:
        file, row = self.locate(index)
        return RowExample(file, row, json_value(value))


def read_structure(
    root: Location, name: str, max_examples: int
) -> tuple[list[CheckResult], LoadedTable | None]:
    """Read one table; the checks say whether it is usable, the table is None when not."""
    spec = TABLES[name]
    files = contract_files(root, name)

    def check(
        file: str, passed: bool, description: str = READABLE, column: str | None = None, **kw
    ) -> CheckResult:
        return CheckResult(
            table=name,
            file=file,
            column=column,
            check="structure",
            description=description,
            engine="pyarrow",
            passed=passed,
            **kw,
        )

    try:
        table = read_table(root, name)
    except DataError as exc:
        by_name = {str(f): f for f in files}
        file = by_name.get(exc.file)
        examples = _cast_failures(file, spec.schema, exc.field, max_examples) if file else []
        failed = check(
            exc.file,
            False,
            column=exc.field,
            unexpected_count=None,
            examples=examples,
            note=exc.message,
        )
        return [failed], None

    if not files:
        absent = check(str(root / spec.file), True, note="optional table absent; read as empty")
        return [absent], LoadedTable(name, table, [(str(root / spec.file), 0)])
    loaded = LoadedTable(name, table, [(str(f), f.parquet_rows()) for f in files])
    failures = []
    for fld in spec.schema:
        bad = _invalid_utf8(table.column(fld.name)) if _holds_text(fld.type) else []
        if bad:
            examples = [loaded.example(i, v) for i, v in bad[:max_examples]]
            failures.append(
                check(
                    examples[0].file,
                    False,
                    UTF8,
                    column=fld.name,
                    unexpected_count=len(bad),
                    element_count=table.num_rows,
                    examples=examples,
                    note="invalid UTF-8 bytes are shown as \\x escapes",
                )
            )
    if failures:
        return failures, None
    return [check(loaded.file, True, f"{READABLE}; {UTF8}", element_count=table.num_rows)], loaded


def _holds_text(typ: pa.DataType) -> bool:
    if pa.types.is_list(typ):
        typ = typ.value_type
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _invalid_utf8(column: pa.ChunkedArray) -> list[tuple[int, bytes]]:
    """(row, bytes) of every row whose text (or any list item) is not valid UTF-8."""
    bad: list[tuple[int, bytes]] = []
    base = 0
    for chunk in column.chunks:
        try:
            chunk.validate(full=True)
        except pa.ArrowInvalid:
            if pa.types.is_list(chunk.type):
                values = chunk.flatten()
                parents = pc.list_parent_indices(chunk).to_pylist()
            else:
                values, parents = chunk, range(len(chunk))
            raw = values.view(pa.binary()).to_pylist()
            seen = set()
            for parent, item in zip(parents, raw, strict=True):
                if item is None or parent in seen:
                    continue
                try:
                    item.decode("utf-8")
                except UnicodeDecodeError:
                    seen.add(parent)
                    bad.append((base + parent, item))
        base += len(chunk)
    return bad


def _cast_failures(
    file: Location, schema: pa.Schema, column: str | None, limit: int
) -> list[RowExample]:
    """The first rows of ``column`` in ``file`` that cannot be cast to the contract's type."""
    if column is None or column not in schema.names:
        return []
    try:
        with file.open() as handle:
            raw = pq.read_table(handle, columns=[column]).column(column).combine_chunks()
    except (*CAST_ERRORS, OSError, KeyError, DataError):
        return []
    rows = uncastable_rows(raw, schema.field(column).type, limit)
    return [RowExample(str(file), r, json_value(raw[r].as_py())) for r in rows]
