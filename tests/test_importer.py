"""`caprank data import jsonl|csv`: a user's catalog, queries and judgements into the
contract through a column mapping, validated like the pipeline; errors name the file,
the row (line in the file) and the source column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caprank.cli import main
from caprank.data.dataset import load_dataset
from caprank.data.importer import ImportSpec, import_files, parse_mapping
from caprank.errors import DataError

NOW = "2026-12-01"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _csv(path: Path, text: str) -> Path:
    path.write_text(text.lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def jsonl_files(tmp_path) -> dict[str, Path]:
    """A catalog in the user's own column names: api ids, several categories a tool."""
    tools = [
        {
            "api": f"t{i}",
            "title": n,
            "about": f"{n} api",
            "main": "travel",
            "cats": ["travel", "search"],
        }
        for i, n in enumerate(["Flights", "Hotels", "Weather", "Maps"])
    ]
    caps = [
        {"id": "c0", "what": "book a trip", "uses": ["t0", "t1"], "ordered": False},
        {"id": "c1", "what": "forecast", "uses": ["t2"], "ordered": True},
        {"id": "c2", "what": "directions", "uses": "t3"},
    ]
    queries = [{"qid": f"q{i}", "query": t} for i, t in enumerate(["fly to rome", "rain?", "go"])]
    qrels = [
        {"qid": "q0", "cap": "c0", "rel": 2, "part": "train"},
        {"qid": "q1", "cap": "c1", "rel": 1, "part": "valid"},
        {"qid": "q2", "cap": "c2", "rel": 1, "part": "test"},
    ]
    return {
        "tools": _jsonl(tmp_path / "tools.jsonl", tools),
        "capabilities": _jsonl(tmp_path / "caps.jsonl", caps),
        "intents": _jsonl(tmp_path / "queries.jsonl", queries),
        "labels": _jsonl(tmp_path / "qrels.jsonl", qrels),
    }


MAPPING = [
    "tools.tool_id=api",
    "tools.name=title",
    "tools.description=about",
    "tools.category=main",
    "tools.categories=cats",
    "capabilities.capability_id=id",
    "capabilities.description=what",
    "capabilities.tool_ids=uses",
    "capabilities.tool_order_known=ordered",
    "intents.intent_id=qid",
    "intents.text=query",
    "labels.intent_id=qid",
    "labels.capability_id=cap",
    "labels.grade=rel",
    "labels.split=part",
]


def test_jsonl_import_through_the_cli_writes_a_valid_dataset(jsonl_files, tmp_path):
    argv = ["data", "import", "jsonl", "--out", str(tmp_path / "data"), "--now", NOW]
    for table, path in jsonl_files.items():
        argv += [f"--{table}", str(path)]
    for item in MAPPING:
        argv += ["--map", item]
    assert main(argv) == 0
    ds = load_dataset(tmp_path / "data")
    assert ds.tools["tool_id"].to_pylist() == ["t0", "t1", "t2", "t3"]
    assert ds.tools["categories"].to_pylist()[0] == ["travel", "search"]
    assert ds.capabilities["tool_ids"].to_pylist() == [["t0", "t1"], ["t2"], ["t3"]]
    assert ds.capabilities["tool_order_known"].to_pylist() == [False, True, None]
    assert ds.labels["grade"].to_pylist() == [2, 1, 1]
    assert ds.labels["split"].to_pylist() == ["train", "valid", "test"]
    assert ds.manifest["source"] == "import (jsonl)"


def test_csv_import_tools_only_catalog_and_default_grade(tmp_path):
    tools = _csv(
        tmp_path / "tools.csv",
        """
tool_id,name,description,category,categories
a,Search,web search,web,web|news
b,Mail,send mail,messaging,
""",
    )
    intents = _csv(tmp_path / "q.csv", "intent_id,text\nq1,find news\nq2,email bob\n")
    labels = _csv(
        tmp_path / "l.csv",
        "intent_id,capability_id,split\nq1,a,train\nq2,b,test\n",
    )
    spec = ImportSpec({"tools": tools, "intents": intents, "labels": labels}, "csv")
    ds = import_files(spec)
    # no capabilities file: one capability per tool
    assert ds.capabilities["capability_id"].to_pylist() == ["a", "b"]
    assert ds.capabilities["tool_ids"].to_pylist() == [["a"], ["b"]]
    assert ds.tools["categories"].to_pylist() == [["web", "news"], []]
    assert ds.labels["grade"].to_pylist() == [1, 1]  # no grade column: grade 1


def test_importer_errors_name_file_row_and_column(tmp_path):
    tools = _csv(tmp_path / "tools.csv", "id,name,description,category\na,A,x,web\n")
    with pytest.raises(DataError) as err:  # the header lacks the mapped id column
        import_files(ImportSpec({"tools": tools}, "csv", parse_mapping(["tools.tool_id=api"])))
    assert (err.value.file, err.value.row, err.value.field) == (str(tools), 1, "api")

    intents = _csv(tmp_path / "q.csv", "intent_id,text\nq1,hi\n")
    labels = _csv(
        tmp_path / "l.csv",
        "intent_id,capability_id,grade,split\nq1,a,1,train\nq1,a,high,test\n",
    )
    spec = ImportSpec({"tools": tools, "intents": intents, "labels": labels}, "csv")
    spec.mapping = parse_mapping(["tools.tool_id=id"])
    with pytest.raises(DataError) as err:  # a grade that is not a number, line 3
        import_files(spec)
    assert (err.value.file, err.value.row, err.value.field) == (str(labels), 3, "grade")
    assert "labels.grade" in str(err.value) and "row 3" in str(err.value)

    bad_json = tmp_path / "tools.jsonl"
    bad_json.write_text(
        '{"tool_id": "a", "name": "A", "description": "x", "category": "w"}\n{oops\n'
    )
    with pytest.raises(DataError) as err:
        import_files(ImportSpec({"tools": bad_json}, "jsonl"))
    assert (err.value.file, err.value.row) == (str(bad_json), 2)

    logs = _jsonl(
        tmp_path / "logs.jsonl",
        [{"event_id": "e1", "when": "yesterday at noon"}],
    )
    tools_jsonl = _jsonl(
        tmp_path / "t.jsonl", [{"tool_id": "a", "name": "A", "description": "x", "category": "w"}]
    )
    spec = ImportSpec(
        {"tools": tools_jsonl, "interactions": logs},
        "jsonl",
        parse_mapping(["interactions.timestamp=when"]),
    )
    with pytest.raises(DataError) as err:
        import_files(spec)
    assert (err.value.file, err.value.row, err.value.field) == (str(logs), 1, "when")
    assert "ISO 8601" in str(err.value)

    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"tool_id,name,description,category\na,A,x,w\nb,B,caf\xe9,w\n")
    with pytest.raises(DataError, match="not UTF-8") as err:
        import_files(ImportSpec({"tools": latin}, "csv"))
    assert (err.value.file, err.value.row) == (str(latin), 3)

    with pytest.raises(DataError, match="no column"):
        ImportSpec({"tools": tools}, "csv", parse_mapping(["tools.colour=c"]))
    with pytest.raises(DataError, match=r"table\.column=source_column"):
        parse_mapping(["tool_id=api"])


def test_import_runs_the_pipeline_validation(tmp_path):
    """An id that refers to nothing: the validation's error names the file and column,
    and nothing is written."""
    tools = _csv(tmp_path / "tools.csv", "tool_id,name,description,category\na,A,x,web\n")
    caps = _csv(
        tmp_path / "caps.csv", "capability_id,description,tool_ids\nc1,one,a\nc2,two,a|zz\n"
    )
    out = tmp_path / "data"
    argv = ["data", "import", "csv", "--tools", str(tools), "--capabilities", str(caps)]
    assert main([*argv, "--out", str(out), "--now", NOW]) == 2
    assert not out.exists()
    from caprank.config import CaprankConfig
    from caprank.data.importer import import_and_validate

    with pytest.raises(DataError) as err:
        import_and_validate(
            ImportSpec({"tools": tools, "capabilities": caps}, "csv"), out, CaprankConfig()
        )
    assert err.value.field == "tool_ids" and err.value.file.endswith("capabilities.parquet")
    assert err.value.row == 1 and "zz" in str(err.value)


def test_csv_cli_reads_a_mapping_file(tmp_path):
    tools = _csv(tmp_path / "tools.csv", "api,title,about,kind\na,Search,web search,web\n")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "tools: {tool_id: api, name: title, description: about, category: kind}\n",
        encoding="utf-8",
    )
    argv = ["data", "import", "csv", "--tools", str(tools), "--now", NOW]
    assert main([*argv, "--mapping", str(mapping), "--out", str(tmp_path / "d")]) == 0
    assert load_dataset(tmp_path / "d").tools["name"].to_pylist() == ["Search"]
    mapping.write_text("tools: [api]\n", encoding="utf-8")
    assert main([*argv, "--mapping", str(mapping), "--out", str(tmp_path / "e")]) == 2
    assert not (tmp_path / "e").exists()
