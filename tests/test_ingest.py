"""Ingest: embedded default, a source directory, feedback events and the privacy policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from caprank.data.dataset import load_dataset
from caprank.data.ingest import ingest
from caprank.data.schemas import INTERACTIONS
from caprank.files import atomic_write_parquet


def _cfg(tiny_cfg, tmp_path):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.paths.home = tmp_path / "home"
    return cfg


def test_embedded_default_is_synthesized_and_simulated(tiny_cfg, tiny_dataset, tmp_path):
    result = ingest(_cfg(tiny_cfg, tmp_path), None, tmp_path / "out")
    ds = load_dataset(result.out)
    assert ds.tools.equals(tiny_dataset.tools)
    assert ds.interactions.num_rows == tiny_dataset.interactions.num_rows
    assert result.dropped_by_privacy == 0
    assert "embedded default" in result.to_markdown()


def test_source_with_feedback_parts_and_privacy(tiny_cfg, tiny_dataset_dir, tmp_path):
    cfg = _cfg(tiny_cfg, tmp_path)
    cfg.privacy.opt_out_users = ["ghost"]
    now = datetime.now(UTC)
    logs = load_dataset(tiny_dataset_dir).interactions
    first = logs.slice(0, 1).to_pylist()[0]
    feedback_rows = [
        {
            **first,
            "event_id": "fb-1",
            "timestamp": now - timedelta(hours=1),
            "intent_text": "mail me at a@b.com",
            "user_id": "u-1",
        },
        {**first, "event_id": "fb-2", "timestamp": now - timedelta(hours=1), "user_id": "ghost"},
        {**first},  # an event the source already has: not duplicated
    ]
    part = cfg.feedback_dir() / "interactions" / "part-0.parquet"
    atomic_write_parquet(pa.Table.from_pylist(feedback_rows, schema=INTERACTIONS), part)

    result = ingest(cfg, tiny_dataset_dir, tmp_path / "out", now=now)
    got = load_dataset(result.out).interactions
    ids = got["event_id"].to_pylist()
    assert ids.count("fb-1") == 1 and "fb-2" not in ids
    assert len(ids) == len(set(ids)) == logs.num_rows + 1
    assert result.dropped_by_privacy == 1
    text = got.filter(pa.compute.equal(got["event_id"], "fb-1"))["intent_text"][0].as_py()
    assert text == "mail me at [EMAIL]"
    assert "feedback events" in result.source
