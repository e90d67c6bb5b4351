"""Reading and writing a dataset directory that follows the data contract.

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
from caprank.errors import DataError
from caprank.files import atomic_dir, atomic_write_parquet, content_hash

REQUIRED_TABLES = ("tools", "capabilities")


@dataclass
class Dataset:
    """All tables of one dataset, each conforming to its contract schema."""

    tools: pa.Table
    capabilities: pa.Table
    intents: pa.Table
    labels: pa.Table
    interactions: pa.Table
    manifest: dict = field(default_factory=dict)
    root: Path | None = None

    def table(self, name: str) -> pa.Table:
        return getattr(self, name)

    def tables(self) -> dict[str, pa.Table]:
        return {name: self.table(name) for name in TABLES}


def _read_parquet(path: Path) -> pa.Table:
    if path.stat().st_size == 0:
        raise DataError(str(path), "file is empty (0 bytes); expected a Parquet file")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(str(path), f"not a readable Parquet file ({exc})") from exc


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
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    file,
                    f"wrong type: expected {fld.type}, found {col.type} ({exc})",
                    field=fld.name,
                ) from exc
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=spec.schema.remove_metadata())


def read_table(root: str | Path, name: str) -> pa.Table:
    """Read one contract table from a dataset directory (file and/or parts folder)."""
    root = Path(root)
    spec = TABLES[name]
    path = root / spec.file
    parts: list[pa.Table] = []
    if path.exists():
        parts.append(conform(_read_parquet(path), spec, str(path)))
    if name == "interactions" and (root / INTERACTION_PARTS_DIR).is_dir():
        for part in sorted((root / INTERACTION_PARTS_DIR).glob("*.parquet")):
            parts.append(conform(_read_parquet(part), spec, str(part)))
    if not parts:
        if name in REQUIRED_TABLES:
            raise DataError(str(path), f"required table '{name}' is missing")
        return spec.schema.remove_metadata().empty_table()
    return pa.concat_tables(parts)


def table_files(root: str | Path) -> list[Path]:
    """Every data file of a dataset directory (what its content hash covers)."""
    root = Path(root)
    files = [root / spec.file for spec in TABLES.values() if (root / spec.file).exists()]
    parts = root / INTERACTION_PARTS_DIR
    if parts.is_dir():
        files += sorted(parts.glob("*.parquet"))
    return files


def load_dataset(root: str | Path) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise DataError(str(root), "dataset directory does not exist")
    manifest_path = root / MANIFEST_FILE
    manifest = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(str(manifest_path), f"not valid JSON ({exc})") from exc
    tables = {name: read_table(root, name) for name in TABLES}
    return Dataset(**tables, manifest=manifest, root=root)


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
