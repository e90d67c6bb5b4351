"""Import the ToolLens benchmark (COLT, CIKM 2024) into the data contract.

ToolLens tools become tools, its scenes (sets of 1-3 tools used together) become
capabilities, its queries intents, and ``query_scene_*.txt`` the labels. The official
split is kept; the cold split holds out a seeded share of whole capabilities.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from caprank.data.dataset import Dataset
from caprank.data.schemas import CAPABILITIES, INTENTS, INTERACTIONS, LABELS, TOOLS
from caprank.errors import DataError

_TOOL_TEXT = re.compile(
    r"category_name:(?P<category>.*?), tool_name:(?P<tool>.*?), api_name:(?P<api>.*?), "
    r"api_description:(?P<desc>.*?), required_params:",
    re.S,
)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(str(path), f"invalid JSON ({exc})", row=lineno) from exc
    return rows


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DataError(str(path), "expected two tab-separated ids", row=lineno)
            pairs.append((parts[0], parts[1]))
    return pairs


def _tools(source: Path) -> pa.Table:
    rows = []
    path = source / "corpus.jsonl"
    for i, rec in enumerate(_read_jsonl(path), start=1):
        m = _TOOL_TEXT.match(rec.get("text", ""))
        if m is None:
            raise DataError(
                str(path), "tool text lacks category/tool/api fields", row=i, field="text"
            )
        name = f"{m['tool'].strip()}: {m['api'].strip()}"
        rows.append(
            {
                "tool_id": str(rec["_id"]),
                "name": name,
                "description": m["desc"].strip() or name,
                "category": m["category"].strip(),
            }
        )
    return pa.Table.from_pylist(rows, schema=TOOLS)


def _capabilities(source: Path, tools: pa.Table) -> pa.Table:
    names = dict(zip(tools["tool_id"].to_pylist(), tools["name"].to_pylist(), strict=True))
    members: dict[str, list[str]] = {}
    path = source / "scene_tool.txt"
    for lineno, (scene, tool) in enumerate(_read_pairs(path), start=1):
        if tool not in names:
            raise DataError(str(path), f"unknown tool id {tool!r}", row=lineno, field="tool_id")
        tools_of = members.setdefault(scene, [])
        if tool not in tools_of:  # the file repeats a few pairs
            tools_of.append(tool)
    rows = [
        {
            "capability_id": scene,
            "description": "Uses " + "; then ".join(names[t] for t in tool_ids),
            "tool_ids": tool_ids,
            "created_at": None,
        }
        for scene, tool_ids in sorted(members.items(), key=lambda kv: int(kv[0]))
    ]
    return pa.Table.from_pylist(rows, schema=CAPABILITIES)


def import_toollens(
    source: str | Path, split: str = "official", cold_fraction: float = 0.2, seed: int = 42
) -> Dataset:
    """Read ToolLens from ``source``; ``split`` is 'official' (warm) or 'cold'."""
    source = Path(source)
    if not (source / "corpus.jsonl").exists():
        raise DataError(str(source / "corpus.jsonl"), "not a ToolLens directory (file missing)")
    if split not in ("official", "cold"):
        raise ValueError(f"split must be 'official' or 'cold', not {split!r}")
    tools = _tools(source)
    caps = _capabilities(source, tools)
    intents = pa.Table.from_pylist(
        [
            {"intent_id": str(r["_id"]), "text": r["text"]}
            for r in _read_jsonl(source / "queries.jsonl")
        ],
        schema=INTENTS,
    )
    official = [(q, s, "train") for q, s in _read_pairs(source / "query_scene_train.txt")]
    official += [(q, s, "test") for q, s in _read_pairs(source / "query_scene_test.txt")]

    if split == "official":
        labels = official
        held_out: list[str] = []
    else:
        cap_ids = sorted(caps["capability_id"].to_pylist(), key=int)
        rng = np.random.default_rng(seed)
        n_out = round(cold_fraction * len(cap_ids))
        held_out = sorted(rng.choice(cap_ids, size=n_out, replace=False).tolist(), key=int)
        out = set(held_out)
        labels = []
        for q, s, sp in official:
            if s in out:
                labels.append((q, s, "test"))
            else:
                labels.append((q, s, "train" if sp == "train" else "valid"))
    label_table = pa.Table.from_pylist(
        [{"intent_id": q, "capability_id": s, "grade": 1, "split": sp} for q, s, sp in labels],
        schema=LABELS,
    )
    manifest = {
        "source": "toollens",
        "source_path": str(source.resolve()),
        "split": split,
        "cold_fraction": cold_fraction if split == "cold" else None,
        "seed": seed,
        "held_out_capabilities": held_out,
    }
    return Dataset(tools, caps, intents, label_table, INTERACTIONS.empty_table(), manifest)
