"""docs/configuration.md is exactly what caprank.config_doc renders from the config models."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from caprank.cli import cli
from caprank.config import CaprankConfig, _field_info, leaf_keys
from caprank.config_doc import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(?P<key>[a-z0-9_.]+)` \|", re.M)


def test_checked_in_doc_is_the_generated_one():
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is out of date: run `make config-doc`"
    )


def test_every_field_has_a_description_and_one_row():
    keys = leaf_keys(CaprankConfig)
    assert [k for k in keys if not (_field_info(k).description or "").strip()] == []
    rows = [m["key"] for m in ROW.finditer(render())]
    assert sorted(rows) == sorted(keys)  # every field exactly once, nothing else


def test_rows_carry_meaning_bounds_and_default():
    text = render()
    row = next(line for line in text.splitlines() if line.startswith("| `training.per.alpha` |"))
    assert "priority exponent" in row and ">= 0.0, <= 1.0" in row and row.endswith("`0.6` |")
    row = next(line for line in text.splitlines() if line.startswith("| `paths.data` |"))
    assert row.endswith("| empty |")
    assert "### `embedding.node2vec`" in text and "## `canary`" in text


def test_cli_prints_and_writes_the_doc(tmp_path):
    res = CliRunner().invoke(cli, ["config", "doc"], env={})
    assert res.exit_code == 0, res.output
    assert res.output == render()
    out = tmp_path / "configuration.md"
    res = CliRunner().invoke(cli, ["config", "doc", "--out", str(out)], env={})
    assert res.exit_code == 0, res.output
    assert out.read_text(encoding="utf-8") == render()
