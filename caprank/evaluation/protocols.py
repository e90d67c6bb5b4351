"""Evaluation protocols (seed 002 §3.3): holdout, rolling temporal windows, k-fold CV.

Every protocol takes two callables so that any ranker plugs in:
``fit(train: QuerySet) -> model`` and ``score(model, test: QuerySet) -> scores`` with
``scores`` of shape (len(test), test.n_items). Each fold is scored with
``evaluate_scores`` and summarized by its metric means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from caprank.config import EvaluationConfig
from caprank.errors import DataError
from caprank.evaluation.metrics import evaluate_scores
from caprank.evaluation.queries import QuerySet

M = TypeVar("M")
FitFn = Callable[[QuerySet], M]
ScoreFn = Callable[[M, QuerySet], np.ndarray]

_DAY = np.timedelta64(1, "D")


@dataclass
class FoldResult:
    """One train/test split and the test metrics (means over its queries)."""

    fold: int
    n_train: int
    n_test: int
    metrics: dict[str, float]
    window: dict[str, str] = field(default_factory=dict)  # temporal bounds, ISO strings

    def to_dict(self) -> dict[str, Any]:
        return {
            "fold": self.fold,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "metrics": self.metrics,
            **({"window": self.window} if self.window else {}),
        }


@dataclass
class ProtocolResult:
    """Per-fold metrics with their mean and sample standard deviation across folds."""

    protocol: str
    folds: list[FoldResult]

    def mean(self) -> dict[str, float]:
        names = self.folds[0].metrics
        return {n: float(np.mean([f.metrics[n] for f in self.folds])) for n in names}

    def std(self) -> dict[str, float]:
        names = self.folds[0].metrics
        ddof = 1 if len(self.folds) > 1 else 0
        return {n: float(np.std([f.metrics[n] for f in self.folds], ddof=ddof)) for n in names}

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "n_folds": len(self.folds),
            "mean": self.mean(),
            "std": self.std(),
            "folds": [f.to_dict() for f in self.folds],
        }


def _run_fold(
    fold: int,
    queries: QuerySet,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    fit: FitFn,
    score: ScoreFn,
    cfg: EvaluationConfig,
    window: dict[str, str] | None = None,
) -> FoldResult:
    train, test = queries.take(train_rows), queries.take(test_rows)
    model = fit(train)
    scores = np.asarray(score(model, test))
    if scores.shape != (len(test), test.n_items):
        raise DataError(
            "score()",
            f"returned shape {scores.shape}, expected {(len(test), test.n_items)}",
            field=f"fold {fold}",
        )
    metrics = evaluate_scores(scores, test.relevance, cfg).summary()
    return FoldResult(fold, len(train), len(test), metrics, window or {})


def _group_codes(queries: QuerySet) -> tuple[np.ndarray, int]:
    _, codes = np.unique(queries.group_keys().astype(str), return_inverse=True)
    return codes, int(codes.max()) + 1 if codes.size else 0


def holdout(
    queries: QuerySet,
    fit: FitFn,
    score: ScoreFn,
    cfg: EvaluationConfig,
    test_mask: np.ndarray | None = None,
) -> ProtocolResult:
    """Train on the rest, test on ``test_mask`` (e.g. the labels' test split); without a
    mask, a seeded ``cfg.holdout_fraction`` of query groups is held out."""
    if test_mask is None:
        codes, n_groups = _group_codes(queries)
        if n_groups < 2:
            raise DataError("<queries>", f"holdout needs at least 2 query groups, found {n_groups}")
        rng = np.random.default_rng(cfg.seed)
        n_test = min(n_groups - 1, max(1, round(cfg.holdout_fraction * n_groups)))
        test_groups = rng.permutation(n_groups)[:n_test]
        test_mask = np.isin(codes, test_groups)
    test_mask = np.asarray(test_mask, dtype=bool)
    if test_mask.shape != (len(queries),) or test_mask.all() or not test_mask.any():
        raise DataError("<queries>", "holdout mask must select some, but not all, queries")
    fold = _run_fold(
        0, queries, np.flatnonzero(~test_mask), np.flatnonzero(test_mask), fit, score, cfg
    )
    return ProtocolResult("holdout", [fold])


def cross_validate(
    queries: QuerySet, fit: FitFn, score: ScoreFn, cfg: EvaluationConfig
) -> ProtocolResult:
    """``cfg.cv_folds``-fold cross-validation over query groups (seeded by ``cfg.seed``)."""
    codes, n_groups = _group_codes(queries)
    k = cfg.cv_folds
    if n_groups < k:
        raise DataError("<queries>", f"{n_groups} query groups cannot make {k} folds")
    order = np.random.default_rng(cfg.seed).permutation(n_groups)
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    for f, members in enumerate(np.array_split(order, k)):
        fold_of_group[members] = f
    fold_of_row = fold_of_group[codes]
    folds = [
        _run_fold(
            f,
            queries,
            np.flatnonzero(fold_of_row != f),
            np.flatnonzero(fold_of_row == f),
            fit,
            score,
            cfg,
        )
        for f in range(k)
    ]
    return ProtocolResult("cross_validation", folds)


def temporal_windows(
    timestamps: np.ndarray, train_days: int, test_days: int
) -> list[tuple[np.datetime64, np.datetime64, np.datetime64]]:
    """Rolling (train start, test start, test end) triples, half-open, stepping by test_days.

    The first train window starts at midnight (UTC) of the earliest event; training covers
    [test start - train_days, test start) and testing [test start, test start + test_days).
    Windows are produced while the test window starts at or before the latest event.
    """
    ts = np.asarray(timestamps, dtype="datetime64[us]")
    start = ts.min().astype("datetime64[D]").astype("datetime64[us]")
    last = ts.max()
    train, test = train_days * _DAY, test_days * _DAY
    out = []
    test_start = start + train
    while test_start <= last:
        out.append((test_start - train, test_start, test_start + test))
        test_start = test_start + test
    return out


def temporal_validation(
    queries: QuerySet, fit: FitFn, score: ScoreFn, cfg: EvaluationConfig
) -> ProtocolResult:
    """Rolling-window validation: train on ``cfg.temporal_train_days``, test on the next
    ``cfg.temporal_test_days``. No event of a test window, or later, is ever in training."""
    if queries.timestamps is None:
        raise DataError(
            "<queries>", "temporal validation needs event timestamps", field="timestamp"
        )
    ts = np.asarray(queries.timestamps, dtype="datetime64[us]")
    folds = []
    for train_start, test_start, test_end in temporal_windows(
        ts, cfg.temporal_train_days, cfg.temporal_test_days
    ):
        train_rows = np.flatnonzero((ts >= train_start) & (ts < test_start))
        test_rows = np.flatnonzero((ts >= test_start) & (ts < test_end))
        if train_rows.size == 0 or test_rows.size == 0:
            continue
        window = {
            "train_start": str(train_start),
            "test_start": str(test_start),
            "test_end": str(test_end),
        }
        folds.append(_run_fold(len(folds), queries, train_rows, test_rows, fit, score, cfg, window))
    if not folds:
        span = (ts.max() - ts.min()) / _DAY
        raise DataError(
            "<queries>",
            f"events span {span:.1f} days: too short for {cfg.temporal_train_days} train + "
            f"{cfg.temporal_test_days} test days",
            field="timestamp",
        )
    return ProtocolResult("temporal", folds)
