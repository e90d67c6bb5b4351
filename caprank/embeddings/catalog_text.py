"""The text that stands for a tool or a capability when it is embedded.

One builder per kind, used by the embed stage, the dense baselines and anything else that
embeds catalog items, so a capability reads the same wherever it is encoded (and the
embedding cache, keyed by the text, is shared between them).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from caprank.errors import DataError


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


def tool_text(name: str, description: str) -> str:
    """'name: description', or the name alone when the description adds nothing."""
    name, description = _clean(name), _clean(description)
    if not description or description == name:
        return name
    return f"{name}: {description}"


def capability_text(description: str, tools: Sequence[tuple[str, str]]) -> str:
    """The capability's description, then its tools in order, each as its ``tool_text``.

    The description comes first: encoders truncate long inputs (256 word pieces for
    MiniLM), and the tail is where the least specific text (the last tool's details) sits.
    """
    parts = [_clean(description)]
    tool_parts = [tool_text(name, desc) for name, desc in tools]
    if tool_parts:
        parts.append("Tools: " + "; ".join(tool_parts) + ".")
    return " ".join(p for p in parts if p)


def tool_texts(tools: pa.Table) -> list[str]:
    """``tool_text`` of every row of a contract ``tools`` table, in row order."""
    return [
        tool_text(n, d)
        for n, d in zip(tools["name"].to_pylist(), tools["description"].to_pylist(), strict=True)
    ]


def capability_texts(
    capabilities: pa.Table, tools: pa.Table, source: str = "capabilities.parquet"
) -> list[str]:
    """``capability_text`` of every capability row; an unknown tool id is a DataError."""
    by_id = {
        t: (n, d)
        for t, n, d in zip(
            tools["tool_id"].to_pylist(),
            tools["name"].to_pylist(),
            tools["description"].to_pylist(),
            strict=True,
        )
    }
    texts = []
    rows = zip(
        capabilities["description"].to_pylist(), capabilities["tool_ids"].to_pylist(), strict=True
    )
    for row, (description, tool_ids) in enumerate(rows):
        missing = [t for t in tool_ids or [] if t not in by_id]
        if missing:
            raise DataError(
                source,
                f"capability refers to tool ids not in the tools table: {missing[:5]}",
                row=row,
                field="tool_ids",
            )
        texts.append(capability_text(description, [by_id[t] for t in tool_ids or []]))
    return texts
