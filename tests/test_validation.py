"""Data validation: a hand-built valid dataset passes; each kind of bad input fails clearly.

Every bad case writes real Parquet files and runs the real validator (structural read,
Great Expectations suites, pyarrow integrity checks) on them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from caprank.cli import cli, main
from caprank.config import CaprankConfig
from caprank.data.schemas import INTERACTION_PARTS_DIR, TABLES
from caprank.data.validation import ValidationReport, validate_dataset
from caprank.errors import DataError

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CFG = CaprankConfig()


def _ts(hours_ago: float) -> datetime:
    return NOW - timedelta(hours=hours_ago)


def valid_rows() -> dict[str, list[dict]]:
    """A small dataset that follows the contract: 4 tools, 3 capabilities, 5 events."""
    tools = [
        {"tool_id": f"t{i}", "name": n, "description": f"{n} api", "category": c}
        for i, (n, c) in enumerate(
            [("recipes", "food"), ("grocery", "food"), ("maps", "travel"), ("weather", "travel")]
        )
    ]
    capabilities = [
        {"capability_id": "c0", "description": "plan a dinner and order the groceries",
         "tool_ids": ["t0", "t1"], "created_at": _ts(24 * 30)},
        {"capability_id": "c1", "description": "route to a place with a weather check",
         "tool_ids": ["t2", "t3"], "created_at": None},
        {"capability_id": "c2", "description": "today's forecast", "tool_ids": ["t3"],
         "created_at": _ts(24 * 3)},
    ]  # fmt: skip
    intents = [
        {"intent_id": "q0", "text": "what can I cook tonight"},
        {"intent_id": "q1", "text": "how do I get to the museum"},
        {"intent_id": "q2", "text": "will it rain"},
    ]
    labels = [
        {"intent_id": "q0", "capability_id": "c0", "grade": 2, "split": "train"},
        {"intent_id": "q1", "capability_id": "c1", "grade": 1, "split": "train"},
        {"intent_id": "q2", "capability_id": "c2", "grade": 1, "split": "valid"},
        {"intent_id": "q2", "capability_id": "c1", "grade": 1, "split": "test"},
    ]
    events = []
    for i, (intent, chosen, outcome) in enumerate(
        [("q0", "c0", "success"), ("q1", "c1", "partial"), ("q2", "c2", "success"),
         ("q2", "c1", "failure"), (None, "c0", "success")]
    ):  # fmt: skip
        candidates = [chosen] + [c for c in ("c0", "c1", "c2") if c != chosen]
        events.append(
            {
                "event_id": f"e{i}",
                "timestamp": _ts(10 - i),
                "session_id": f"s{i // 2}",
                "user_id": None if i == 4 else f"u{i % 2}",
                "intent_id": intent,
                "intent_text": "free text request é",
                "context_tools": ["t0"] if i % 2 else [],
                "candidate_ids": candidates,
                "selected_capability": chosen,
                "rank": 1,
                "outcome": outcome,
                "execution_time_ms": 120.5 + i,
                "feedback": None if i % 2 else 4,
                "propensity": 0.8,
                "model_version": "bm25",
            }
        )
    return {
        "tools": tools,
        "capabilities": capabilities,
        "intents": intents,
        "labels": labels,
        "interactions": events,
    }


def write_rows(root: Path, data: dict[str, list[dict]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in data.items():
        write_table(root, name, pa.Table.from_pylist(rows, schema=loose_schema(name)))
    return root


def loose_schema(name: str) -> pa.Schema:
    """The contract's types with every column nullable, as an outside writer would declare."""
    return pa.schema([f.with_nullable(True) for f in TABLES[name].schema])


def write_table(root: Path, name: str, table: pa.Table) -> None:
    pq.write_table(table, root / TABLES[name].file)


def failure(report: ValidationReport, table: str, column: str | None, check: str):
    found = [c for c in report.failures if (c.table, c.column, c.check) == (table, column, check)]
    assert found, f"no failed {table}.{column} {check}; failures: {report.failures}"
    return found[0]


@pytest.fixture
def valid_dir(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "ds", valid_rows())


def test_valid_dataset_passes(valid_dir: Path):
    report = validate_dataset(valid_dir, CFG, now=NOW)
    assert report.ok, report.to_markdown()
    report.raise_for_errors()
    assert report.rows == {"tools": 4, "capabilities": 3, "intents": 3, "labels": 4,
                           "interactions": 5}  # fmt: skip
    engines = {c.engine for c in report.checks}
    assert engines == {"great_expectations", "pyarrow"}
    checked = {(c.table, c.column, c.check) for c in report.checks}
    for expected in [
        ("interactions", "event_id", "unique"),
        ("interactions", "timestamp", "freshness"),
        ("interactions", "candidate_ids", "references"),
        ("capabilities", "tool_ids", "min_items"),
        ("labels", "intent_id, capability_id", "unique"),
    ]:
        assert expected in checked
    # Same inputs, same report.
    assert validate_dataset(valid_dir, CFG, now=NOW).to_dict() == report.to_dict()


def _set(table: str, row: int, column: str, value) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data[table][row][column] = value

    return change


# (id, change to the valid rows, table, column, check, expected example rows)
CONTENT_CASES = [
    ("nan", _set("interactions", 2, "execution_time_ms", float("nan")),
     "interactions", "execution_time_ms", "not_null_or_nan", [2]),
    ("negative_time", _set("interactions", 1, "execution_time_ms", -3.0),
     "interactions", "execution_time_ms", "range", [1]),
    ("label_unknown_capability", _set("labels", 3, "capability_id", "c404"),
     "labels", "capability_id", "references", [3]),
    ("label_unknown_intent", _set("labels", 0, "intent_id", "q404"),
     "labels", "intent_id", "references", [0]),
    ("selected_unknown", _set("interactions", 4, "selected_capability", "c404"),
     "interactions", "selected_capability", "references", [4]),
    ("candidate_unknown", _set("interactions", 3, "candidate_ids", ["c1", "c404"]),
     "interactions", "candidate_ids", "references", [3]),
    ("capability_unknown_tool", _set("capabilities", 1, "tool_ids", ["t2", "t99"]),
     "capabilities", "tool_ids", "references", [1]),
    ("capability_without_tools", _set("capabilities", 2, "tool_ids", []),
     "capabilities", "tool_ids", "min_items", [2]),
    ("duplicate_event", _set("interactions", 3, "event_id", "e1"),
     "interactions", "event_id", "unique", [1, 3]),
    ("duplicate_tool", lambda d: d["tools"].append(dict(d["tools"][0], name="again")),
     "tools", "tool_id", "unique", [0, 4]),
    ("future_timestamp", _set("interactions", 0, "timestamp", NOW + timedelta(hours=2)),
     "interactions", "timestamp", "not_in_future", [0]),
    ("future_capability", _set("capabilities", 2, "created_at", NOW + timedelta(days=1)),
     "capabilities", "created_at", "not_in_future", [2]),
    ("feedback_high", _set("interactions", 2, "feedback", 6),
     "interactions", "feedback", "range", [2]),
    ("feedback_zero", _set("interactions", 0, "feedback", 0),
     "interactions", "feedback", "range", [0]),
    ("bad_outcome", _set("interactions", 1, "outcome", "crashed"),
     "interactions", "outcome", "allowed_values", [1]),
    ("propensity_zero", _set("interactions", 1, "propensity", 0.0),
     "interactions", "propensity", "range", [1]),
    ("propensity_above_one", _set("interactions", 3, "propensity", 1.5),
     "interactions", "propensity", "range", [3]),
    ("rank_zero", _set("interactions", 2, "rank", 0), "interactions", "rank", "range", [2]),
    ("grade_zero", _set("labels", 1, "grade", 0), "labels", "grade", "range", [1]),
    ("bad_split", _set("labels", 2, "split", "holdout"),
     "labels", "split", "allowed_values", [2]),
    ("null_required", _set("intents", 1, "text", None), "intents", "text", "not_null", [1]),
    ("null_list", _set("capabilities", 0, "tool_ids", None),
     "capabilities", "tool_ids", "not_null", [0]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "table", "column", "check", "rows"),
    [case[1:] for case in CONTENT_CASES],
    ids=[case[0] for case in CONTENT_CASES],
)
def test_bad_content_fails_naming_file_column_row(
    tmp_path: Path, change, table: str, column: str, check: str, rows: list[int]
):
    data = copy.deepcopy(valid_rows())
    change(data)
    root = write_rows(tmp_path / "ds", data)
    report = validate_dataset(root, CFG, now=NOW)
    assert not report.ok
    found = failure(report, table, column, check)
    file = str(root / TABLES[table].file)
    assert found.file == file
    assert [e.row for e in found.examples] == rows
    assert all(e.file == file for e in found.examples)
    assert found.unexpected_count == len(rows)
    assert report.failures == [found]  # the bad value trips exactly its own check
    with pytest.raises(DataError) as err:
        report.raise_for_errors()
    assert str(err.value).startswith(f"{file}, field '{column}', row {rows[0]}: {check}")
    assert (err.value.file, err.value.field, err.value.row) == (file, column, rows[0])


def test_first_failure_and_count_in_error(tmp_path: Path):
    data = valid_rows()
    data["interactions"][1]["execution_time_ms"] = -1.0
    data["interactions"][3]["outcome"] = "exploded"
    root = write_rows(tmp_path / "ds", data)
    report = validate_dataset(root, CFG, now=NOW)
    with pytest.raises(DataError) as err:
        report.raise_for_errors()
    text = str(err.value)
    assert text.startswith(f"{root / 'interactions.parquet'}, field 'outcome', row 3:")
    assert "'exploded'" in text and "2 of" in text and "checks failed" in text
    assert err.value.field == "outcome" and err.value.row == 3


def test_stale_data_names_newest_event(valid_dir: Path):
    later = NOW + timedelta(days=CFG.data.max_age_days + 1)
    report = validate_dataset(valid_dir, CFG, now=later)
    found = failure(report, "interactions", "timestamp", "freshness")
    assert [e.row for e in found.examples] == [4]  # the newest event
    assert "newest" in found.note
    assert [c.check for c in report.failures] == ["freshness"]
    with pytest.raises(DataError, match=r"interactions.parquet, field 'timestamp', row 4"):
        report.raise_for_errors()


def test_no_interactions_skips_freshness(tmp_path: Path):
    data = valid_rows()
    del data["interactions"]
    root = write_rows(tmp_path / "ds", data)
    report = validate_dataset(root, CFG, now=NOW + timedelta(days=10_000))
    assert report.ok, report.to_markdown()
    fresh = [c for c in report.checks if c.check == "freshness"]
    assert len(fresh) == 1 and fresh[0].skipped and "no interactions" in fresh[0].note
    assert report.rows["interactions"] == 0


# ------------------------------------------------------------------ structural failures


def _with_table(name: str, table_of: Callable[[dict], pa.Table]):
    """A dataset whose table ``name`` is replaced by ``table_of(valid rows)``."""

    def build(root: Path) -> Path:
        data = valid_rows()
        write_rows(root, data)
        write_table(root, name, table_of(data))
        return root

    return build


def _invalid_text(values: list[bytes]) -> pa.Array:
    """A Parquet string column holding raw bytes (pyarrow does not check UTF-8 on write)."""
    return pa.array(values, pa.binary()).view(pa.string())


def _interactions_with(column: str, array: pa.Array) -> Callable[[dict], pa.Table]:
    def table_of(data: dict) -> pa.Table:
        table = pa.Table.from_pylist(data["interactions"], schema=loose_schema("interactions"))
        i = table.column_names.index(column)
        return table.set_column(i, column, array)

    return table_of


def _without(name: str, column: str) -> Callable[[dict], pa.Table]:
    def table_of(data: dict) -> pa.Table:
        return pa.Table.from_pylist(data[name], schema=loose_schema(name)).drop_columns(column)

    return table_of


def _bytes_file(name: str, content: Callable[[bytes], bytes]):
    def build(root: Path) -> Path:
        write_rows(root, valid_rows())
        path = root / TABLES[name].file
        path.write_bytes(content(path.read_bytes()))
        return root

    return build


texts = [f"request {i}".encode() for i in range(5)]
bad_texts = [*texts[:3], b"caf\xe9 latin-1", *texts[4:]]
# candidate lists; row 1 holds an item that is not UTF-8
bad_lists = pa.ListArray.from_arrays(
    pa.array([0, 1, 3, 4, 5, 6], pa.int32()),
    pa.array([b"c0", b"c1", b"\xff\xfe", b"c2", b"c1", b"c0"], pa.binary()).view(pa.string()),
)

# (id, dataset builder, file, column, expected example rows, words in the message)
STRUCTURE_CASES = [
    ("missing_column", _with_table("interactions", _without("interactions", "outcome")),
     "interactions.parquet", "outcome", [], "missing column"),
    ("wrong_type", _with_table("interactions", _interactions_with(
        "execution_time_ms", pa.array(["12.5", "fast", "3", "4", "slow"]))),
     "interactions.parquet", "execution_time_ms", [1, 4], "wrong type"),
    ("invalid_utf8_text", _with_table("interactions", _interactions_with(
        "intent_text", _invalid_text(bad_texts))),
     "interactions.parquet", "intent_text", [3], "invalid UTF-8"),
    ("invalid_utf8_binary_column", _with_table("interactions", _interactions_with(
        "intent_text", pa.array(bad_texts, pa.binary()))),
     "interactions.parquet", "intent_text", [3], "wrong type"),
    ("invalid_utf8_in_list", _with_table("interactions", _interactions_with(
        "candidate_ids", bad_lists)),
     "interactions.parquet", "candidate_ids", [1], "invalid UTF-8"),
    ("empty_file", _bytes_file("tools", lambda b: b""), "tools.parquet", None, [], "empty"),
    ("truncated_parquet", _bytes_file("labels", lambda b: b[: len(b) // 2]),
     "labels.parquet", None, [], "not a readable Parquet file"),
    ("not_parquet", _bytes_file("intents", lambda b: b"intent_id,text\nq0,hello\n"),
     "intents.parquet", None, [], "not a readable Parquet file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "file", "column", "rows", "words"),
    [case[1:] for case in STRUCTURE_CASES],
    ids=[case[0] for case in STRUCTURE_CASES],
)
def test_bad_structure_fails_naming_file_column_row(
    tmp_path: Path, build, file: str, column: str | None, rows: list[int], words: str
):
    root = build(tmp_path / "ds")
    report = validate_dataset(root, CFG, now=NOW)
    assert not report.ok
    found = report.failures[0]
    assert found.check == "structure"
    assert found.file == str(root / file)
    assert found.column == column
    assert [e.row for e in found.examples] == rows
    with pytest.raises(DataError) as err:
        report.raise_for_errors()
    text = str(err.value)
    assert text.startswith(str(root / file)) and words in text
    if column:
        assert f"field '{column}'" in text
    if rows:
        assert f"row {rows[0]}" in text
    # No content checks ran on the broken table; the other tables were still checked.
    table = next(n for n, s in TABLES.items() if s.file == file)
    assert {c.check for c in report.checks if c.table == table} == {"structure"}
    assert any(c.table != table and c.engine == "great_expectations" for c in report.checks)


def test_missing_required_table_and_skipped_references(tmp_path: Path):
    data = valid_rows()
    del data["tools"]
    root = write_rows(tmp_path / "ds", data)
    report = validate_dataset(root, CFG, now=NOW)
    first = report.failures[0]
    assert (first.table, first.check) == ("tools", "structure")
    assert first.file == str(root / "tools.parquet")
    assert "required table 'tools' is missing" in first.note
    ref = next(c for c in report.checks if c.check == "references" and c.column == "tool_ids")
    assert ref.skipped and "tools" in ref.note


def test_labels_without_intents_table_fail_references(tmp_path: Path):
    data = valid_rows()
    del data["intents"]
    root = write_rows(tmp_path / "ds", data)
    report = validate_dataset(root, CFG, now=NOW)
    found = failure(report, "labels", "intent_id", "references")
    assert found.unexpected_count == 4


def test_missing_directory(tmp_path: Path):
    report = validate_dataset(tmp_path / "nowhere", CFG, now=NOW)
    assert not report.ok
    with pytest.raises(DataError, match=r"nowhere.*does not exist"):
        report.raise_for_errors()


def test_rows_are_located_in_interaction_parts(tmp_path: Path):
    """A row in an appended part file is reported by that file and its own 0-based row."""
    data = valid_rows()
    root = write_rows(tmp_path / "ds", data)
    part = [dict(r, event_id=f"p{i}") for i, r in enumerate(data["interactions"][:3])]
    part[2]["execution_time_ms"] = -1.0
    part[1]["event_id"] = "e4"  # duplicates row 4 of interactions.parquet
    (root / INTERACTION_PARTS_DIR).mkdir()
    part_file = root / INTERACTION_PARTS_DIR / "day-2.parquet"
    pq.write_table(pa.Table.from_pylist(part, schema=loose_schema("interactions")), part_file)
    report = validate_dataset(root, CFG, now=NOW)
    assert report.rows["interactions"] == 8
    assert report.files["interactions"] == [str(root / "interactions.parquet"), str(part_file)]
    negative = failure(report, "interactions", "execution_time_ms", "range")
    assert [(e.file, e.row) for e in negative.examples] == [(str(part_file), 2)]
    assert negative.file == str(part_file)
    dup = failure(report, "interactions", "event_id", "unique")
    assert [(e.file, e.row) for e in dup.examples] == [
        (str(root / "interactions.parquet"), 4),
        (str(part_file), 1),
    ]


# ------------------------------------------------------------------ report and CLI


def _broken_dataset(root: Path) -> Path:
    data = valid_rows()
    data["interactions"][2]["execution_time_ms"] = -7.25
    data["labels"][1]["capability_id"] = "c<404>"
    return write_rows(root, data)


def test_markdown_and_html_render_failures_first(tmp_path: Path):
    report = validate_dataset(_broken_dataset(tmp_path / "ds"), CFG, now=NOW)
    assert len(report.failures) == 2
    md = report.to_markdown()
    assert "**FAILED: 2 of" in md and "0-based" in md
    failures_part = md.split("## Failures")[1].split("## All checks")[0]
    assert "### interactions.execution_time_ms: range (great_expectations)" in failures_part
    assert "### labels.capability_id: references (pyarrow)" in failures_part
    assert "| `" + str(tmp_path / "ds" / "interactions.parquet") + "` | 2 | -7.25 |" in md
    all_rows = md.split("## All checks")[1].strip().splitlines()[2:]
    assert [r.split(" | ")[0] for r in all_rows[:2]] == ["| failed", "| failed"]
    assert all(r.startswith("| passed") for r in all_rows[2:])

    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<script" not in page
    assert page.count("<tr class=failed>") == 2
    assert page.index("<tr class=failed>") < page.index("<tr class=passed>")
    assert "row 1: &#x27;c&lt;404&gt;&#x27;" in page  # values are escaped
    assert "row 2: -7.25" in page

    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["ok"] is False and as_json["failed"] == 2
    failed = [c for c in as_json["checks"] if c["status"] == "failed"]
    assert {(c["table"], c["column"], c["examples"][0]["row"]) for c in failed} == {
        ("interactions", "execution_time_ms", 2),
        ("labels", "capability_id", 1),
    }


def test_cli_exits_2_and_writes_reports(tmp_path: Path, capsys):
    root = _broken_dataset(tmp_path / "ds")
    md, page = tmp_path / "out" / "report.md", tmp_path / "out" / "report.html"
    code = main(["data", "validate", str(root), "--report", str(md), "--html", str(page),
                 "--now", "2026-11-01T12:00:00"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: {root / 'labels.parquet'}, field 'capability_id', row 1:")
    assert "## Failures" in md.read_text(encoding="utf-8")
    assert "<tr class=failed>" in page.read_text(encoding="utf-8")
    assert not list(md.parent.glob(".*tmp"))  # atomic writes leave no temp files


def test_cli_now_anchors_the_time_checks(valid_dir: Path, tmp_path: Path, capsys):
    md = tmp_path / "ok.md"
    # Midnight is before the events of that day (up to 12:00): they lie in the future.
    assert main(["data", "validate", str(valid_dir), "--now", "2026-11-01"]) == 2
    assert "not_in_future" in capsys.readouterr().err
    res = CliRunner().invoke(
        cli,
        ["data", "validate", str(valid_dir), "--report", str(md), "--now", "2026-11-01T12:00:00"],
    )
    assert res.exit_code == 0, res.output
    assert "PASSED" in res.output and "PASSED" in md.read_text(encoding="utf-8")


def test_reference_examples_show_the_unknown_ids(tmp_path: Path):
    data = valid_rows()
    data["interactions"][1]["candidate_ids"] = ["c9", "c1", "c8"]
    data["interactions"][3]["candidate_ids"] = ["c1", None]
    root = write_rows(tmp_path / "ds", data)
    found = failure(
        validate_dataset(root, CFG, now=NOW), "interactions", "candidate_ids", "references"
    )
    assert [(e.row, e.value) for e in found.examples] == [(1, ["c9", "c8"]), (3, [None])]
    assert found.unexpected_count == 2
