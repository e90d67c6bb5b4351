"""ToolLens import: counts from its README, official and cold splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from caprank.data.dataset import load_dataset, write_dataset
from caprank.data.toollens import import_toollens

TOOLLENS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "toollens"
pytestmark = pytest.mark.skipif(not TOOLLENS.exists(), reason=f"ToolLens not at {TOOLLENS}")


def test_official_split(tmp_path):
    ds = import_toollens(TOOLLENS)
    assert (ds.tools.num_rows, ds.capabilities.num_rows, ds.intents.num_rows) == (464, 463, 18770)
    assert Counter(ds.labels["split"].to_pylist()) == {"train": 16893, "test": 1877}
    sizes = [len(t) for t in ds.capabilities["tool_ids"].to_pylist()]
    assert min(sizes) >= 1 and max(sizes) <= 3
    out = write_dataset(ds, tmp_path / "tl")
    again = load_dataset(out)
    assert again.labels.equals(ds.labels)
    assert again.manifest["split"] == "official"


def test_cold_split_holds_out_whole_capabilities():
    ds = import_toollens(TOOLLENS, split="cold", cold_fraction=0.2, seed=1)
    held = set(ds.manifest["held_out_capabilities"])
    assert len(held) == round(0.2 * 463)
    by_split: dict[str, set] = {}
    for cap, split in zip(
        ds.labels["capability_id"].to_pylist(), ds.labels["split"].to_pylist(), strict=True
    ):
        by_split.setdefault(split, set()).add(cap)
    assert by_split["test"] == held
    assert not (by_split["train"] | by_split["valid"]) & held
    assert import_toollens(TOOLLENS, split="cold", seed=1).manifest[
        "held_out_capabilities"
    ] == sorted(held, key=int)
