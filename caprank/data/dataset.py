"""Reading and writing a dataset directory that follows the data contract.

Reads take a local directory or an ``s3://bucket/prefix`` URI (``caprank.data.storage``:
one reader for both); writes are local (the run's own artifacts).

Structure only: columns present and of the contract's types. The content checks
(nulls, ranges, referential integrity, duplicates, freshness) live in
``caprank.data.validation``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from caprank.data.schemas import INTERACTION_PARTS_DIR, MANIFEST_FILE, TABLES, TableSpec
from caprank.data.storage import Location, locate
from caprank.errors import DataError
from caprank.files import atomic_dir, atomic_write_parquet, content_hash

REQUIRED_TABLES = ("tools", "capabilities")
CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


@dataclass
class Dataset:
    """All tables of one dataset, each conforming to its contract schema."""

    tools: pa.Table
    capabilities: pa.Table
    intents: pa.Table
    labels: pa.Table
    interactions: pa.Table
    manifest: dict = field(default_factory=dict)
    root: Path | None = None  # the local directory read; None: built in memory or from S3

    def table(self, name: str) -> pa.Table:
        return getattr(self, name)

    def tables(self) -> dict[str, pa.Table]:
        return {name: self.table(name) for name in TABLES}


def _read_parquet(file: str | Path | Location) -> pa.Table:
    """One Parquet file, local or on S3; empty, unreadable or unreachable files name it."""
    file = locate(file)
    if file.info().size == 0:
        raise DataError(str(file), "file is empty (0 bytes); expected a Parquet file")
    with file.open() as handle:
        try:
            return pq.read_table(handle)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(str(file), f"not a readable Parquet file ({exc})") from exc


def uncastable_rows(values: pa.Array, target: pa.DataType, limit: int) -> list[int]:
    """The first rows (0-based, at most ``limit``) of ``values`` that cannot be cast to
    ``target``, found by bisection: casting a slice fails iff it holds a bad row."""
    rows: list[int] = []

    def visit(lo: int, hi: int) -> None:
        if len(rows) >= limit or lo >= hi:
            return
        try:
            values.slice(lo, hi - lo).cast(target, safe=True)
            return
        except CAST_ERRORS:
            pass
        if hi - lo == 1:
            rows.append(lo)
            return
        mid = (lo + hi) // 2
        visit(lo, mid)
        visit(mid, hi)

    visit(0, len(values))
    return rows


def conform(table: pa.Table, spec: TableSpec, file: str) -> pa.Table:
    """Select the contract's columns in order and cast them to its types, or fail clearly."""
    columns = []
    for fld in spec.schema:
        if fld.name not in table.column_names:
            if fld.nullable:
                columns.append(pa.nulls(table.num_rows, type=fld.type))
                continue
            raise DataError(
                file,
                f"missing column (table '{spec.name}' needs {spec.columns})",
                field=fld.name,
            )
        col = table.column(fld.name)
        if not col.type.equals(fld.type):
            try:
                col = col.cast(fld.type, safe=True)
            except CAST_ERRORS as exc:
                bad = uncastable_rows(col.combine_chunks(), fld.type, 1)
                raise DataError(
                    file,
                    f"wrong type: expected {fld.type}, found {col.type} ({exc})",
                    field=fld.name,
                    row=bad[0] if bad else None,
                ) from exc
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=spec.schema.remove_metadata())


def contract_files(root: str | Path | Location, name: str) -> list[Location]:
    """The files table ``name`` is read from, in order: its file, then (interactions) every
    ``*.parquet`` part under ``interactions/`` by name. Local folder or object storage."""
    root = locate(root)
    main = root / TABLES[name].file
    files = [main] if main.exists() else []
    parts = root / INTERACTION_PARTS_DIR
    if name == "interactions" and parts.is_dir():
        files += parts.files(".parquet")
    return files


def read_table(root: str | Path | Location, name: str) -> pa.Table:
    """Read one contract table from a dataset folder (file and/or parts folder)."""
    root = locate(root)
    spec = TABLES[name]
    files = contract_files(root, name)
    if not files:
        if name in REQUIRED_TABLES:
            raise DataError(str(root / spec.file), f"required table '{name}' is missing")
        return spec.schema.remove_metadata().empty_table()
    return pa.concat_tables([conform(_read_parquet(f), spec, str(f)) for f in files])


def table_files(root: str | Path) -> list[Path]:
    """Every data file of a local dataset directory (what its content hash covers)."""
    return [f.local_path() for name in TABLES for f in contract_files(Path(root), name)]


def load_dataset(root: str | Path) -> Dataset:
    """Read a dataset from a local directory or an ``s3://bucket/prefix`` URI."""
    where = locate(root)
    if not where.is_dir():
        raise DataError(str(where), where.missing_reason())
    manifest_file = where / MANIFEST_FILE
    manifest = {}
    if manifest_file.exists():
        try:
            manifest = json.loads(manifest_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(str(manifest_file), f"not valid JSON ({exc})") from exc
    tables = {name: read_table(where, name) for name in TABLES}
    local = None if where.remote else where.local_path()
    return Dataset(**tables, manifest=manifest, root=local)


def dataset_hash(root: str | Path) -> str:
    root = Path(root)
    return content_hash(table_files(root), root=root)


def write_dataset(ds: Dataset, out: str | Path, **manifest_extra) -> Path:
    """Write every table and a manifest (with content hash) atomically into ``out``."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        for name, spec in TABLES.items():
            table = conform(ds.table(name), spec, f"<{name}>")
            atomic_write_parquet(table, tmp / spec.file)
        manifest = dict(ds.manifest)
        manifest.update(manifest_extra)
        manifest["rows"] = {name: ds.table(name).num_rows for name in TABLES}
        manifest["content_hash"] = dataset_hash(tmp)
        manifest.setdefault("written_at", datetime.now(UTC).isoformat())
        (tmp / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
        )
    return out
