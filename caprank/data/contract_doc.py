"""The data contract's tables as Markdown, rendered from ``caprank.data.schemas``.

``docs/data-format.md`` embeds this output; a test fails when the two disagree.
Print it with ``python -m caprank.data.contract_doc``.
"""

from __future__ import annotations

import pyarrow as pa

from caprank.data.schemas import TABLES, TableSpec


def type_name(typ: pa.DataType) -> str:
    """Readable Arrow type: string, int8, float64, list<string>, timestamp[us, UTC]."""
    if pa.types.is_list(typ):
        return f"list<{type_name(typ.value_type)}>"
    if pa.types.is_timestamp(typ):
        return f"timestamp[{typ.unit}, {typ.tz or 'naive'}]"
    if pa.types.is_float64(typ):
        return "float64"
    return str(typ)


def table_markdown(spec: TableSpec) -> str:
    """One table's heading, file, key and a row per column (type, nullable, meaning)."""
    lines = [
        f"### `{spec.name}`",
        "",
        f"File `{spec.file}`; key: {', '.join(f'`{k}`' for k in spec.key)}.",
        "",
        "| column | type | nullable | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for fld in spec.schema:
        doc = (fld.metadata or {}).get(b"doc", b"").decode().replace("|", "\\|")
        null = "yes" if fld.nullable else "no"
        lines.append(f"| `{fld.name}` | `{type_name(fld.type)}` | {null} | {doc} |")
    return "\n".join(lines) + "\n"


def contract_markdown() -> str:
    return "\n".join(table_markdown(spec) for spec in TABLES.values())


if __name__ == "__main__":
    print(contract_markdown(), end="")
