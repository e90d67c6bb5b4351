"""What the evaluate stage (and ``caprank benchmark``) tests on, from labels or from logs.

A dataset with labels is tested on its ``test`` labels. A dataset with only an
interaction log (``caprank.evaluation.temporal.logs_only``) is tested on the latest
period of its ``temporal_split``: each graded event of that period is a query whose
selected capability is relevant, and the model's own ranking policy gets an IPS/SNIPS
value from the logged propensities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.evaluation.counterfactual import (
    CounterfactualEstimate,
    estimate_policy_value,
    outcome_rewards,
)
from caprank.evaluation.protocols import FoldResult, ProtocolResult
from caprank.evaluation.queries import QuerySet, queries_from_interactions, queries_from_labels
from caprank.evaluation.temporal import TemporalSplit, log_splits, logs_only


@dataclass
class HeldOut:
    """The test queries, where they came from, and (logs only) the test-period events."""

    queries: QuerySet
    source: str  # "labels" or "temporal split of the interactions"
    trained: set[str]  # capabilities with training positives (the warm/cold segment)
    split: TemporalSplit | None = None
    events: pa.Table | None = None  # logs only: every event of the test period
    counts: dict[str, int] = field(default_factory=dict)  # logs only: events per period

    def protocol(self, metrics: dict[str, float]) -> ProtocolResult | None:
        """The temporal split as a one-fold protocol (for the report), logs only."""
        if self.split is None or self.events is None:
            return None
        ts = self.events["timestamp"].to_numpy(zero_copy_only=False)
        window = self.split.bounds(np.asarray(ts, dtype="datetime64[us]").max())
        fold = FoldResult(0, self.counts["train"], len(self.queries), metrics, window)
        return ProtocolResult("temporal split (train | valid | test)", [fold])

    def describe(self) -> str:
        if self.split is None:
            return "test labels"
        c = self.counts
        return (
            f"temporal split of the interactions: {c['train']:,} train, {c['valid']:,} valid, "
            f"{c['test']:,} test events (test from {self.split.test_start})"
        )


def held_out(ds: Dataset, cfg: CaprankConfig) -> HeldOut:
    """The test labels, or for a dataset without labels the test period of its log."""
    item_ids = ds.capabilities["capability_id"].to_pylist()
    if not logs_only(ds):
        labels = ds.labels
        trained = {
            c
            for c, s in zip(
                labels["capability_id"].to_pylist(), labels["split"].to_pylist(), strict=True
            )
            if s != "test"
        }
        return HeldOut(queries_from_labels(ds, "test"), "labels", trained)
    split, part = log_splits(ds, cfg.evaluation)
    events = ds.interactions.filter(pa.array(part == "test"))
    train = ds.interactions.filter(pa.array(part == "train"))
    queries = queries_from_interactions(events, item_ids, cfg.evaluation)
    trained = set(
        queries_from_interactions(train, item_ids, cfg.evaluation).relevance.tocoo().col.tolist()
    )
    counts = {p: int((part == p).sum()) for p in ("train", "valid", "test")}
    return HeldOut(
        queries,
        "temporal split of the interactions",
        {item_ids[i] for i in trained},
        split,
        events,
        counts,
    )


def policy_value(
    ranker, catalog_ids: tuple[str, ...], events: pa.Table, cfg: CaprankConfig, encode
) -> CounterfactualEstimate | None:
    """IPS/SNIPS value of ``ranker``'s deterministic policy on the logged ``events``.

    The logged propensity is P(logging policy shows capability c at rank k), so the
    target's probability of the same action is 1 when ``ranker``, ranking the whole
    catalog for the event's intent text, puts c at rank k (ties: catalog order), else 0
    (docs/data-format.md, the propensity). Events whose capability is not in the
    catalog are left out; None when none is left. ``encode(texts)`` gives the ranker's
    intent vectors."""
    col = {c: i for i, c in enumerate(catalog_ids)}
    texts = events["intent_text"].to_pylist()
    selected = events["selected_capability"].to_pylist()
    keep = np.asarray([i for i, c in enumerate(selected) if c in col], dtype=np.int64)
    if keep.size == 0:
        return None
    uniq = list(dict.fromkeys(texts[i] for i in keep))
    row_of = {t: i for i, t in enumerate(uniq)}
    rank_of = np.empty((len(uniq), len(catalog_ids)), dtype=np.int64)
    for r, (vec, text) in enumerate(zip(encode(uniq), uniq, strict=True)):
        order = np.argsort(-ranker.score(ranker.query(vec, text), None), kind="stable")
        rank_of[r, order] = np.arange(1, len(order) + 1)
    logged_rank = events["rank"].to_numpy(zero_copy_only=False)[keep]
    target = np.array([rank_of[row_of[texts[i]], col[selected[i]]] for i in keep], dtype=np.int64)
    outcomes = [events["outcome"][int(i)].as_py() for i in keep]
    return estimate_policy_value(
        outcome_rewards(outcomes, cfg.training.reward),
        events["propensity"].to_numpy(zero_copy_only=False)[keep],
        (target == logged_rank).astype(np.float64),
        cfg.evaluation,
    )
