"""Real logs (issue 14, item 4): data without labels trains and evaluates on a temporal
split of its interactions; the replay buffer keeps the newest experiences by time; the
checkpoint fingerprint covers the feature values, not their row count."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
import torch

from caprank.config import RewardConfig
from caprank.data.dataset import load_dataset, write_dataset
from caprank.data.schemas import INTERACTIONS, LABELS
from caprank.errors import DataError
from caprank.evaluation.heldout import held_out
from caprank.evaluation.temporal import log_splits, temporal_split
from caprank.learning.experiences import from_interactions
from caprank.training.stage import table_fingerprint
from caprank.training.trainer import Trainer
from tests.train_fixtures import tiny_model, tiny_prepared, tiny_training_cfg

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def logs_dir(tiny_dataset, tmp_path_factory):
    """The tiny dataset with its labels dropped: a catalog and a log, nothing more."""
    ds = load_dataset(tiny_dataset.root)
    ds.labels = LABELS.empty_table()
    ds.intents = ds.intents.slice(0, 0)
    return write_dataset(ds, tmp_path_factory.mktemp("logs-only") / "data")


def test_temporal_split_cuts_by_time_and_keeps_ties_together():
    base = np.datetime64("2026-01-01T00:00:00", "us")
    ts = base + np.array([5, 0, 9, 1, 7, 6, 3, 2, 8, 4], dtype="timedelta64[h]")
    split = temporal_split(ts, 0.2, 0.3)
    part = split.assign(ts)
    assert (part == "test").sum() == 3 and (part == "valid").sum() == 2
    # every train event precedes every valid one, every valid one every test one
    assert ts[part == "train"].max() < ts[part == "valid"].min()
    assert ts[part == "valid"].max() < ts[part == "test"].min()
    tied = temporal_split(np.array([base] * 8 + [base + 1, base + 2]), 0.1, 0.1)
    assert (tied.assign(np.array([base] * 8)) == "train").all()
    with pytest.raises(DataError, match="cannot be cut") as err:
        temporal_split(np.array([base] * 5), 0.1, 0.2, source="logs.parquet")
    assert err.value.file == "logs.parquet" and err.value.field == "timestamp"


def test_logs_only_trains_on_the_past_and_validates_on_the_next_period(tiny_cfg, logs_dir):
    ds = load_dataset(logs_dir)
    cfg = tiny_training_cfg(tiny_cfg, max_steps=12, eval_every=4)
    _, part = log_splits(ds, cfg.evaluation)
    prep = tiny_prepared(ds, cfg)
    assert prep.sources == ["interactions"]
    # experiences: the train period only (the test period is never read by training)
    assert len(prep.data.experiences) == int((part == "train").sum())
    newest_train = ds.interactions.filter(pa.array(part == "train"))["timestamp"]
    assert prep.data.experiences.time.max() == newest_train.cast(pa.int64()).to_numpy().max()
    assert prep.n_valid > 0  # the valid period's graded events, by intent text
    fit = Trainer(tiny_model(prep, cfg), prep.data, cfg.training).fit()
    assert 0.0 < fit.best_valid_mrr <= 1.0  # was 0.0: no validation intents at all

    test = held_out(ds, cfg)
    assert test.source == "temporal split of the interactions"
    assert test.counts["test"] == int((part == "test").sum()) and len(test.queries) > 0
    assert np.asarray(test.queries.timestamps).min() >= test.split.test_start


def test_logs_only_evaluate_reports_the_split_and_ips(tiny_cfg, logs_dir, tmp_path):
    from caprank.evaluation.stage import evaluate
    from caprank.online.models import save_dense_model
    from tests.test_registry import new_run

    cfg = tiny_cfg.model_copy(deep=True)
    cfg.paths.home = tmp_path / "home"
    cfg.services.mlflow_artifact_root = str(tmp_path / "artifacts")
    cfg.embedding.cache_dir = tiny_cfg.embedding_cache_dir()
    cfg.evaluation.bootstrap_samples = 50
    model_dir = save_dense_model(tmp_path / "model", "all-MiniLM-L6-v2")
    result = evaluate(cfg, logs_dir, model_dir, new_run(cfg), tmp_path / "eval")
    assert 0.0 < result.metrics["mrr"] <= 1.0 and result.n_queries > 0
    assert result.test_source.startswith("temporal split of the interactions")
    assert "logreg" not in result.baselines  # nothing labeled to fit it on
    c = result.counterfactual
    assert c is not None and c.n_events > 0
    assert c.snips.low <= c.snips.estimate <= c.snips.high
    assert 0.0 <= c.logged_value <= RewardConfig().success
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["counterfactual"]["n_events"] == c.n_events
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "Counterfactual value" in html and "temporal split" in html


def _events(rows: list[tuple[str, int]]) -> pa.Table:
    """Events (session, hour offset) selecting capability c<i> for the i-th row."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return pa.Table.from_pylist(
        [
            {
                "event_id": f"e{i}",
                "timestamp": t0 + timedelta(hours=h),
                "session_id": s,
                "intent_text": f"q{i}",
                "context_tools": [],
                "candidate_ids": [f"c{i}"],
                "selected_capability": f"c{i}",
                "rank": 1,
                "outcome": "success",
                "execution_time_ms": 1.0,
                "propensity": 1.0,
            }
            for i, (s, h) in enumerate(rows)
        ],
        schema=INTERACTIONS,
    )


def test_replay_buffer_keeps_the_most_recent_experiences_by_time(tiny_cfg, tiny_dataset):
    # session "a" is the newest but sorts first: its events are the list's first rows
    events = _events([("b", 0), ("b", 1), ("a", 10), ("a", 11), ("c", 5)])
    index = {f"q{i}": i for i in range(5)}
    caps = {f"c{i}": i for i in range(5)}
    exp = from_interactions(events, index, caps, RewardConfig())
    assert exp.capability.tolist() == [2, 3, 0, 1, 4]  # grouped by session, time order
    newest = exp.most_recent(3)
    assert exp.capability[newest].tolist() == [4, 2, 3]  # hours 5, 10, 11: oldest first
    assert exp.most_recent(10).tolist() == [0, 1, 2, 3, 4]  # all fit: row order

    cfg = tiny_training_cfg(tiny_cfg)
    prep = tiny_prepared(tiny_dataset, cfg)  # labels (no time) and logs
    exp = prep.data.experiences
    cfg.training.per.capacity = 100
    trainer = Trainer(tiny_model(prep, cfg), prep.data, cfg.training)
    kept = trainer.slot_exp
    assert len(kept) == 100
    dropped = np.setdiff1d(np.arange(len(exp)), kept)
    assert exp.time[kept].min() >= exp.time[dropped].max()  # nothing newer is left out
    assert (exp.source[kept] == 1).all()  # labels, without a time, go first


def test_fingerprint_follows_feature_values_not_row_count():
    a = pa.table({"capability_id": ["c1", "c2"], "success_rate": [0.5, 0.9]})
    b = pa.table({"capability_id": ["c1", "c2"], "success_rate": [0.5, 0.8]})
    assert table_fingerprint(a) != table_fingerprint(b)
    assert table_fingerprint(a) == table_fingerprint(pa.concat_tables([a.slice(0, 1), a.slice(1)]))
    assert table_fingerprint(None) == ""


def test_checkpoints_restart_when_a_feature_value_changes(tiny_dataset, tiny_cfg, tmp_path):
    from caprank.training.stage import _checkpoints, _fingerprint

    emb = tmp_path / "emb"
    emb.mkdir()
    feats = pa.table({"capability_id": ["c1"], "usage_count_total": [3]})
    changed = pa.table({"capability_id": ["c1"], "usage_count_total": [4]})
    first = _fingerprint(tiny_dataset, tiny_cfg, emb, table_fingerprint(feats))
    ck = _checkpoints(tmp_path, first, resume=True)
    (ck / "checkpoint.pt").write_bytes(b"trained on feats")
    same = _checkpoints(tmp_path, first, resume=True)
    assert (same / "checkpoint.pt").is_file()  # same inputs: resume
    second = _fingerprint(tiny_dataset, tiny_cfg, emb, table_fingerprint(changed))
    assert second != first
    assert not (_checkpoints(tmp_path, second, resume=True) / "checkpoint.pt").exists()
