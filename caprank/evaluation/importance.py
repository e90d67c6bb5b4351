"""Which inputs the candidate's ranking rests on: permutation importance of the capability
features and ablation of the score channels, on the evaluate stage's test queries.

A feature's importance is the drop in a per-query metric (MRR by default) when that one
feature column of the online snapshot is shuffled across capabilities (seeded,
``evaluation.importance_repeats`` shuffles, averaged per query) and the ranker is rebuilt
through the serving path (``LoadedModel.with_features``). A channel's importance is the
drop when its term is removed from every score (``without_channel``: zeroed key columns,
so the other channels score unchanged); only rankers that expose channels have them.
Each drop carries a percentile-bootstrap interval over queries. The test queries are used
because the importance decides nothing (no gate, no selection reads it) and so reads
against the metrics beside it; above ``importance_max_queries`` a seeded sample scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from caprank.config import EvaluationConfig
from caprank.evaluation.bootstrap import Interval, mean_interval
from caprank.evaluation.metrics import ranking_metrics
from caprank.evaluation.queries import QuerySet
from caprank.model.features import feature_columns
from caprank.online.features import FeatureSnapshot
from caprank.online.models import LoadedModel
from caprank.online.ranker import Ranker

Kind = Literal["feature", "channel"]


@runtime_checkable
class ChannelRanker(Protocol):
    """A ranker whose score is a sum of named channels (``caprank.model.serving``)."""

    def channels(self) -> tuple[str, ...]: ...

    def without_channel(self, name: str) -> Any: ...


@dataclass(frozen=True)
class Importance:
    """One input's importance: metric(intact) - metric(perturbed), mean over queries."""

    name: str
    kind: Kind
    drop: Interval
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "repeats": self.repeats,
            **self.drop.to_dict(),
        }


@dataclass
class ImportanceReport:
    metric: str
    baseline: float  # the metric on the scored queries, nothing perturbed
    n_queries: int
    items: list[Importance] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why a kind is missing

    def of(self, kind: Kind) -> list[Importance]:
        return sorted(
            (i for i in self.items if i.kind == kind), key=lambda i: (-i.drop.estimate, i.name)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "n_queries": self.n_queries,
            "items": [i.to_dict() for i in self.items],
            "notes": list(self.notes),
        }


def ranker_scores(ranker: Ranker, vecs: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """(queries, catalog) scores through the ranker's own ``query`` and ``score``."""
    return np.vstack(
        [ranker.score(ranker.query(v, t), None) for v, t in zip(vecs, texts, strict=True)]
    )


def permuted_snapshot(
    snapshot: FeatureSnapshot, column: str, rng: np.random.Generator
) -> FeatureSnapshot:
    """The snapshot with ``column``'s values shuffled across capabilities (all else kept)."""
    table = snapshot.table
    assert table is not None
    i = table.column_names.index(column)
    shuffled = table[column].take(pa.array(rng.permutation(table.num_rows)))
    return replace(snapshot, table=table.set_column(i, column, shuffled))


class _Scorer:
    """Per-query metric of a ranker on the (sampled) queries."""

    def __init__(self, queries: QuerySet, vecs: np.ndarray, metric: str, ks: Sequence[int]):
        self.queries, self.vecs, self.metric, self.ks = queries, vecs, metric, ks
        self.texts = [str(t) for t in queries.texts]

    def __call__(self, ranker: Ranker) -> np.ndarray:
        scores = ranker_scores(ranker, self.vecs, self.texts)
        return ranking_metrics(scores, self.queries.relevance, self.ks).per_query[self.metric]


def _drop(
    name: str, kind: Kind, base: np.ndarray, perturbed: list[np.ndarray], cfg: EvaluationConfig
) -> Importance:
    drops = base - np.mean(perturbed, axis=0)
    return Importance(
        name,
        kind,
        mean_interval(drops, cfg.bootstrap_samples, cfg.confidence, cfg.seed),
        len(perturbed),
    )


def feature_importance(
    model: LoadedModel,
    score: Callable[[Ranker], np.ndarray],
    base: np.ndarray,
    cfg: EvaluationConfig,
) -> list[Importance]:
    """Each capability feature of the snapshot, shuffled ``importance_repeats`` times."""
    snap = model.features
    assert snap is not None and snap.table is not None
    rng = np.random.default_rng(cfg.seed)
    out = []
    for column in feature_columns(snap.table):
        runs = [
            score(model.with_features(permuted_snapshot(snap, column, rng)).ranker)
            for _ in range(cfg.importance_repeats)
        ]
        out.append(_drop(column, "feature", base, runs, cfg))
    return out


def channel_importance(
    ranker: ChannelRanker, score: Callable[[Ranker], np.ndarray], base: np.ndarray, cfg
) -> list[Importance]:
    """Each score channel removed once (deterministic: nothing to repeat)."""
    return [
        _drop(name, "channel", base, [score(ranker.without_channel(name))], cfg)
        for name in ranker.channels()
    ]


def importance(
    model: LoadedModel,
    queries: QuerySet,
    vecs: np.ndarray,
    cfg: EvaluationConfig,
    metric: str = "mrr",
) -> ImportanceReport:
    """Feature and channel importance of ``model`` on ``queries`` (``vecs``: their intent
    embeddings, in order); the caller skips it when ``importance_repeats`` is 0."""
    if len(queries) > cfg.importance_max_queries:
        rows = np.sort(
            np.random.default_rng(cfg.seed).choice(
                len(queries), cfg.importance_max_queries, replace=False
            )
        )
        queries, vecs = queries.take(rows), vecs[rows]
    score = _Scorer(queries, vecs, metric, cfg.cutoffs)
    base = score(model.ranker)
    report = ImportanceReport(metric, float(base.mean()), len(queries))
    snap = model.features
    if not model.builder.uses_features:
        report.notes.append(f"features: the {model.builder.kind} model reads no features")
    elif snap is None or snap.table is None:
        report.notes.append("features: the online store gave no feature snapshot")
    else:
        report.items += feature_importance(model, score, base, cfg)
    if isinstance(model.ranker, ChannelRanker):
        report.items += channel_importance(model.ranker, score, base, cfg)
    else:
        report.notes.append(f"channels: the {model.builder.kind} ranker has no score channels")
    return report
