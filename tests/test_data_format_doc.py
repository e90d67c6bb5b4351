"""docs/data-format.md and the schemas in caprank.data.schemas say the same thing."""

from __future__ import annotations

import re
from pathlib import Path

from caprank.data.contract_doc import table_markdown
from caprank.data.schemas import TABLES

DOC = Path(__file__).resolve().parents[1] / "docs" / "data-format.md"
ROW = re.compile(r"^\| `(?P<column>[a-z_]+)` \| `(?P<type>[^`]+)` \| (?P<null>yes|no) \|", re.M)


def _sections(text: str) -> dict[str, str]:
    """Body under each '### `table`' heading of the Tables section."""
    parts = re.split(r"^### `([a-z_]+)`\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


def test_every_table_and_column_is_documented_exactly():
    text = DOC.read_text(encoding="utf-8")
    sections = _sections(text)
    assert set(sections) == set(TABLES)
    for name, spec in TABLES.items():
        documented = [m["column"] for m in ROW.finditer(sections[name])]
        assert documented == spec.columns, name  # every column, no extra, same order
        assert table_markdown(spec) in text, f"table '{name}' differs from the schema"


def test_doc_covers_layout_propensity_import_and_simulator():
    text = DOC.read_text(encoding="utf-8")
    for phrase in (
        "interactions/",
        "manifest.json",
        "## The propensity",
        "caprank data import toollens",
        "drift_tool_reliability_day",
        "drift_new_capabilities_day",
        "drift_intent_mix_day",
        "position_bias",
    ):
        assert phrase in text, phrase
