"""`caprank data ...` end to end: synth, simulate (replace, copy, append), import."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from caprank.cli import cli, main
from caprank.data.dataset import dataset_hash, load_dataset
from tests.conftest import TINY

TOOLLENS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "toollens"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    fixed = {**TINY, "data": {**TINY["data"], "synth": {**TINY["data"]["synth"]}}}
    fixed["data"]["synth"]["start_date"] = "2026-10-01"  # the appends below use fixed dates
    path.write_text(yaml.safe_dump(fixed), encoding="utf-8")
    return path


def _run(config_file: Path, *args: str):
    result = CliRunner().invoke(cli, ["--config", str(config_file), *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_synth_writes_catalog_and_logs(config_file, tmp_path, tiny_dataset):
    out = tmp_path / "syn"
    res = _run(config_file, "data", "synth", "--out", str(out))
    assert "3000 interactions" in res.output
    ds = load_dataset(out)
    assert ds.tools.equals(tiny_dataset.tools)
    assert ds.interactions.num_rows == 3000
    assert ds.manifest["simulation"]["policy"] == "bm25"
    assert ds.manifest["content_hash"] == dataset_hash(out)
    _run(config_file, "data", "synth", "--out", str(tmp_path / "bare"), "--no-logs")
    assert load_dataset(tmp_path / "bare").interactions.num_rows == 0


def test_simulate_copy_replace_and_append(config_file, tmp_path):
    data = tmp_path / "d"
    _run(config_file, "data", "synth", "--out", str(data), "--no-logs")
    copy = tmp_path / "copy"
    _run(
        config_file,
        "data",
        "simulate",
        "--data",
        str(data),
        "--out",
        str(copy),
        "--policy",
        "random",
        "--days",
        "3",
    )
    logs = load_dataset(copy).interactions
    assert logs.num_rows == 900 and set(logs["model_version"].to_pylist()) == {"random"}
    assert load_dataset(data).interactions.num_rows == 0  # the source is untouched

    _run(
        config_file,
        "--set",
        "data.simulate.drift_tool_reliability_day=2",
        "data",
        "simulate",
        "--data",
        str(data),
        "--days",
        "4",
    )
    ds = load_dataset(data)
    assert ds.interactions.num_rows == 1200
    assert ds.manifest["simulation"]["drift"]["tool_reliability"]["day"] == 2

    append_oct_5 = [
        "--set",
        "data.synth.start_date=2026-10-05",
        "data",
        "simulate",
        "--data",
        str(data),
        "--days",
        "1",
        "--append",
    ]
    _run(config_file, *append_oct_5)
    ds = load_dataset(data)
    assert ds.interactions.num_rows == 1500
    assert len(list((data / "interactions").glob("sim-*.parquet"))) == 1
    assert max(ds.interactions["timestamp"].to_pylist()).date().isoformat() == "2026-10-05"
    assert ds.manifest["content_hash"] == dataset_hash(data)
    assert len(set(ds.interactions["event_id"].to_pylist())) == 1500

    # the same run appended twice would duplicate events: refused, nothing written
    assert main(["--config", str(config_file), *append_oct_5]) == 2
    assert load_dataset(data).interactions.num_rows == 1500


def test_simulate_on_a_missing_dataset_names_the_file(config_file, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["--config", str(config_file), "data", "simulate", "--data", str(empty)]
    assert main(argv) == 2
    assert "tools.parquet" in capsys.readouterr().err


def test_help_has_one_line_per_command():
    out = CliRunner().invoke(cli, ["data", "--help"]).output
    for name in ("synth", "simulate", "import"):
        line = next(line for line in out.splitlines() if line.strip().startswith(name))
        assert not line.rstrip().endswith("...")


@pytest.mark.skipif(not TOOLLENS.exists(), reason=f"ToolLens not at {TOOLLENS}")
def test_import_toollens_cold(config_file, tmp_path):
    out = tmp_path / "tl"
    res = _run(
        config_file,
        "data",
        "import",
        "toollens",
        "--source",
        str(TOOLLENS),
        "--out",
        str(out),
        "--split",
        "cold",
        "--cold-fraction",
        "0.1",
        "--seed",
        "3",
    )
    assert "463 capabilities" in res.output
    ds = load_dataset(out)
    assert ds.manifest["split"] == "cold" and ds.manifest["seed"] == 3
    assert len(ds.manifest["held_out_capabilities"]) == round(0.1 * 463)
