"""Protocols with a real (popularity) ranker: holdout, k-fold by query group, rolling
temporal windows that never train on the test window or later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from caprank.config import EvaluationConfig
from caprank.data.schemas import INTERACTIONS
from caprank.data.toollens import import_toollens
from caprank.errors import DataError
from caprank.evaluation.protocols import (
    cross_validate,
    holdout,
    temporal_validation,
    temporal_windows,
)
from caprank.evaluation.queries import QuerySet, queries_from_interactions, queries_from_labels

TOOLLENS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "toollens"


def fit_nearest_intents(train: QuerySet):
    """TF-IDF over training intents; a capability scores its best-matching training intent."""
    vectorizer = TfidfVectorizer().fit(train.texts)
    items = np.array([max(r, key=r.get) for r in train.relevant_items()])
    return vectorizer, vectorizer.transform(train.texts), items


def score_nearest_intents(model, test: QuerySet) -> np.ndarray:
    vectorizer, train_matrix, items = model
    sims = (vectorizer.transform(test.texts) @ train_matrix.T).toarray()
    scores = np.zeros((len(test), test.n_items))
    for item in np.unique(items):
        scores[:, item] = sims[:, items == item].max(axis=1)
    return scores


def fit_popularity(train: QuerySet) -> np.ndarray:
    """How often each item is relevant in training (a real, if simple, ranker)."""
    return np.asarray((train.relevance > 0).sum(axis=0)).ravel().astype(float)


def score_popularity(counts: np.ndarray, test: QuerySet) -> np.ndarray:
    return np.broadcast_to(counts, (len(test), test.n_items)).copy()


@pytest.fixture(scope="module")
def toollens_queries() -> QuerySet:
    if not TOOLLENS.exists():
        pytest.skip(f"ToolLens not at {TOOLLENS}")
    ds = import_toollens(TOOLLENS)
    queries = queries_from_labels(ds, split=None)
    rows = np.sort(np.random.default_rng(5).choice(len(queries), 3000, replace=False))
    return queries.take(rows)


def test_holdout_with_a_mask_and_seeded_fraction(toollens_queries):
    cfg = EvaluationConfig()
    q = toollens_queries
    mask = np.zeros(len(q), dtype=bool)
    mask[::5] = True
    res = holdout(q, fit_nearest_intents, score_nearest_intents, cfg, test_mask=mask)
    (fold,) = res.folds
    assert (fold.n_train, fold.n_test) == (len(q) - mask.sum(), mask.sum())
    assert fold.metrics["mrr"] > 0.5  # nearest training intents work on ToolLens (warm split)
    seeded = holdout(q, fit_nearest_intents, score_nearest_intents, cfg)
    assert seeded.folds[0].n_test == round(cfg.holdout_fraction * len(q))
    again = holdout(q, fit_nearest_intents, score_nearest_intents, cfg)
    assert again.to_dict() == seeded.to_dict()


def test_cross_validation_folds_by_group(toollens_queries):
    cfg = EvaluationConfig(cv_folds=4)
    q = toollens_queries
    warm = cross_validate(q, fit_nearest_intents, score_nearest_intents, cfg)
    assert len(warm.folds) == 4 and sum(f.n_test for f in warm.folds) == len(q)
    values = [f.metrics["mrr"] for f in warm.folds]
    assert warm.mean()["mrr"] == pytest.approx(np.mean(values))
    assert warm.std()["mrr"] == pytest.approx(np.std(values, ddof=1))
    assert (
        warm.to_dict()
        == cross_validate(q, fit_nearest_intents, score_nearest_intents, cfg).to_dict()
    )
    other = cross_validate(
        q, fit_nearest_intents, score_nearest_intents, cfg.model_copy(update={"seed": 99})
    )
    assert [f.metrics["mrr"] for f in other.folds] != values

    # Grouped by relevant capability, no capability straddles folds: every test query's
    # capability is unseen in training, so nearest-intent ranking collapses (cold start).
    groups = np.array([str(next(iter(r))) for r in q.relevant_items()], dtype=object)
    grouped = QuerySet(q.query_ids, q.texts, q.relevance, q.item_ids, groups=groups)
    splits: list[tuple[set, set]] = []

    def fit(train: QuerySet):
        splits.append((set(train.groups), set()))
        return fit_nearest_intents(train)

    def score(model, test: QuerySet) -> np.ndarray:
        splits[-1][1].update(test.groups)
        return score_nearest_intents(model, test)

    cold = cross_validate(grouped, fit, score, cfg)
    assert all(train.isdisjoint(test) and test for train, test in splits)
    assert set().union(*(test for _, test in splits)) == set(groups)
    assert cold.mean()["mrr"] < 0.1 < 0.5 < warm.mean()["mrr"]


def _event_log(days: int = 60, per_day: int = 30, seed: int = 0) -> tuple[pa.Table, list[str]]:
    """Events whose popular capability changes every 10 days (so recency matters)."""
    rng = np.random.default_rng(seed)
    caps = [f"cap{i}" for i in range(8)]
    start = datetime(2026, 10, 1, 6, tzinfo=UTC)
    rows = []
    for day in range(days):
        hot = caps[(day // 10) % len(caps)]
        for j in range(per_day):
            chosen = hot if rng.random() < 0.7 else caps[int(rng.integers(len(caps)))]
            rows.append(
                {
                    "event_id": f"e{day}-{j}",
                    "timestamp": start + timedelta(days=day, minutes=int(rng.integers(0, 1000))),
                    "session_id": f"s{day}-{j // 3}",
                    "user_id": None,
                    "intent_id": f"i{j % 5}",
                    "intent_text": f"request {j % 5}",
                    "context_tools": [],
                    "candidate_ids": caps,
                    "selected_capability": chosen,
                    "rank": caps.index(chosen) + 1,
                    "outcome": ["success", "partial", "failure"][int(rng.integers(3))],
                    "execution_time_ms": 10.0,
                    "feedback": None,
                    "propensity": 0.5,
                    "model_version": "logger",
                }
            )
    return pa.Table.from_pylist(rows, schema=INTERACTIONS), caps


def test_temporal_windows_never_train_on_the_test_window_or_later():
    cfg = EvaluationConfig(temporal_train_days=21, temporal_test_days=7)
    log, caps = _event_log()
    queries = queries_from_interactions(log, caps, cfg)
    outcomes = log["outcome"].to_pylist()
    assert len(queries) == sum(o != "failure" for o in outcomes)  # failures are not queries
    spans: list[tuple[np.datetime64, np.datetime64, np.datetime64, np.datetime64]] = []

    def fit(train: QuerySet) -> np.ndarray:
        spans.append((train.timestamps.min(), train.timestamps.max(), None, None))
        return fit_popularity(train)

    def score(model: np.ndarray, test: QuerySet) -> np.ndarray:
        lo, hi, _, _ = spans[-1]
        spans[-1] = (lo, hi, test.timestamps.min(), test.timestamps.max())
        return score_popularity(model, test)

    res = temporal_validation(queries, fit, score, cfg)
    # Day 0 starts at midnight; test windows start on days 21, 28, 35, 42, 49, 56.
    assert len(res.folds) == 6
    for fold, (train_lo, train_hi, test_lo, test_hi) in zip(res.folds, spans, strict=True):
        test_start = np.datetime64(fold.window["test_start"])
        test_end = np.datetime64(fold.window["test_end"])
        assert train_hi < test_start <= test_lo and test_hi < test_end
        assert train_lo >= test_start - np.timedelta64(21, "D")
        assert fold.n_test > 0 and fold.n_train > 0
    # Popularity drifts, so shuffled folds (training on the test period) look better than
    # the honest time-ordered estimate.
    shuffled = cross_validate(queries, fit_popularity, score_popularity, cfg)
    assert shuffled.mean()["mrr"] > res.mean()["mrr"] + 0.03


def test_temporal_window_arithmetic():
    ts = np.array(["2026-10-01T05:00", "2026-10-10T00:00", "2026-10-15T23:00"], "datetime64[us]")
    windows = temporal_windows(ts, train_days=7, test_days=3)
    assert [str(w[1])[:10] for w in windows] == ["2026-10-08", "2026-10-11", "2026-10-14"]
    assert all(w[1] - w[0] == np.timedelta64(7, "D") for w in windows)


def test_protocol_errors_are_clear(toollens_queries):
    cfg = EvaluationConfig()
    with pytest.raises(DataError, match="timestamps"):
        temporal_validation(toollens_queries, fit_popularity, score_popularity, cfg)
    tiny = toollens_queries.take(np.arange(3))
    with pytest.raises(DataError, match="3 query groups cannot make 5 folds"):
        cross_validate(tiny, fit_popularity, score_popularity, cfg)
    with pytest.raises(DataError, match="returned shape"):
        holdout(toollens_queries, fit_popularity, lambda m, t: m[None, :], cfg)
    log, caps = _event_log(days=10)
    short = queries_from_interactions(log, caps, cfg)
    with pytest.raises(DataError, match="too short"):
        temporal_validation(short, fit_popularity, score_popularity, cfg)
    with pytest.raises(DataError, match="selected_capability") as err:
        queries_from_interactions(log, caps[:-1], cfg)
    assert err.value.row is not None
