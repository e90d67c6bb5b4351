"""Offline metrics of a ranker from its score matrix (seed 002 §3.1).

Ranking rule, used by every metric here: in each row of ``scores`` the items are ordered
by score, highest first, and items with equal scores by column index, lowest first (a
stable sort of ``-scores``). Relevance is graded: any grade > 0 is relevant, and the grade
is the gain in NDCG. Queries are rows; every query needs at least one relevant item.

Only the ranks of the relevant items are computed (one comparison pass per relevant
entry), never a full sort, so 20,000 queries x 1,000 items cost well under a second.

scipy is imported only where a relevance matrix is built: the trainer's early stopping
(``mean_reciprocal_rank``) runs in the slim training image, which has numpy but no scipy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from caprank.config import EvaluationConfig
from caprank.errors import DataError

# Upper bound on score cells copied at once when ranking relevant entries.
_CHUNK_CELLS = 4_000_000

# a sparse or dense (queries x items) grade matrix, or one {item index: grade} per query
if TYPE_CHECKING:
    import scipy.sparse as sp

    Relevance = sp.spmatrix | sp.sparray | np.ndarray | Sequence[Mapping[int, float]]
else:
    Relevance = Any


# --------------------------------------------------------------------------- inputs


def check_scores(scores: np.ndarray, source: str = "scores") -> np.ndarray:
    """A 2-D float array with no NaN (ties and infinities are allowed)."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise DataError(source, f"expected a 2-D (queries x items) array, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(
        scores.dtype, np.complexfloating
    ):
        raise DataError(source, f"expected real numbers, got dtype {scores.dtype}")
    if np.issubdtype(scores.dtype, np.floating):
        bad = np.isnan(scores)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(source, "score is NaN", row=int(row), field=f"item {int(col)}")
    return scores


def relevance_matrix(
    relevance: Relevance, n_queries: int, n_items: int, source: str = "relevance"
) -> sp.csr_matrix:
    """Graded relevance as a CSR matrix holding only grades > 0, one row per query.

    Accepts a sparse or dense (queries x items) array, or one ``{item index: grade}``
    mapping per query. Every query must have at least one relevant item.
    """
    import scipy.sparse as sp

    if isinstance(relevance, sp.spmatrix | sp.sparray | np.ndarray):
        mat = sp.csr_matrix(relevance, dtype=np.float64, copy=True)
        if mat.shape != (n_queries, n_items):
            raise DataError(
                source, f"shape {mat.shape} does not match scores {(n_queries, n_items)}"
            )
        mat.sum_duplicates()
    else:
        if len(relevance) != n_queries:
            raise DataError(source, f"{len(relevance)} queries but scores have {n_queries} rows")
        rows, cols, vals = [], [], []
        for q, grades in enumerate(relevance):
            for item, grade in grades.items():
                if not 0 <= int(item) < n_items:
                    raise DataError(
                        source, f"item index {item} outside 0..{n_items - 1}", row=q, field="item"
                    )
                rows.append(q)
                cols.append(int(item))
                vals.append(float(grade))
        mat = sp.csr_matrix((vals, (rows, cols)), shape=(n_queries, n_items), dtype=np.float64)
    if not np.isfinite(mat.data).all():
        q = int(np.searchsorted(mat.indptr, np.flatnonzero(~np.isfinite(mat.data))[0], "right")) - 1
        raise DataError(source, "grade is not finite", row=q, field="grade")
    mat.data[mat.data < 0] = 0.0
    mat.eliminate_zeros()
    mat.sort_indices()
    empty = np.flatnonzero(np.diff(mat.indptr) == 0)
    if empty.size:
        raise DataError(
            source,
            f"{empty.size} queries have no relevant item (grade > 0)",
            row=int(empty[0]),
            examples=empty[:5].tolist(),
        )
    return mat


# --------------------------------------------------------------------------- ranking


def ranks_of(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """1-based rank of item ``cols[i]`` in query ``rows[i]`` under the module's tie rule."""
    n_items = scores.shape[1]
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    out = np.empty(rows.size, dtype=np.int64)
    position = np.arange(n_items)
    step = max(1, _CHUNK_CELLS // max(1, n_items))
    for start in range(0, rows.size, step):
        r, c = rows[start : start + step], cols[start : start + step]
        block = scores[r]
        own = block[np.arange(r.size), c][:, None]
        higher = np.count_nonzero(block > own, axis=1)
        tied_before = np.count_nonzero((block == own) & (position < c[:, None]), axis=1)
        out[start : start + step] = 1 + higher + tied_before
    return out


def top_k_items(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best items of each query, best first, under the module's tie rule."""
    scores = check_scores(scores)
    n_queries, n_items = scores.shape
    k = min(int(k), n_items)
    out = np.empty((n_queries, k), dtype=np.int64)
    step = max(1, _CHUNK_CELLS // max(1, n_items))
    for start in range(0, n_queries, step):
        block = scores[start : start + step]
        if k == n_items:
            order = np.argsort(-block, axis=1, kind="stable")
        else:
            part = np.argpartition(-block, k - 1, axis=1)[:, :k]
            kth = np.take_along_axis(block, part, axis=1).min(axis=1)[:, None]
            above = block > kth
            tied = block == kth
            room = k - np.count_nonzero(above, axis=1)
            chosen = above | (tied & (np.cumsum(tied, axis=1) <= room[:, None]))
            cols = np.nonzero(chosen)[1].reshape(block.shape[0], k)  # ascending index
            chosen_scores = np.take_along_axis(block, cols, axis=1)
            order = np.take_along_axis(cols, np.argsort(-chosen_scores, axis=1, kind="stable"), 1)
        out[start : start + block.shape[0]] = order[:, :k]
    return out


def first_relevant_ranks(scores: np.ndarray, relevant: Sequence[Sequence[int]]) -> np.ndarray:
    """Per query, the 1-based rank of its best-ranked relevant item (``inf`` when it lists
    none); ``relevant`` holds item indices per query (numpy only, no grades)."""
    scores = check_scores(scores)
    if len(relevant) != scores.shape[0]:
        raise DataError("relevant", f"{len(relevant)} queries but scores have {scores.shape[0]}")
    lengths = np.array([len(r) for r in relevant], dtype=np.int64)
    rows = np.repeat(np.arange(scores.shape[0]), lengths)
    cols = np.concatenate([np.asarray(r, dtype=np.int64) for r in relevant] or [np.zeros(0)])
    first = np.full(scores.shape[0], np.inf)
    np.minimum.at(first, rows, ranks_of(scores, rows, cols.astype(np.int64)))
    return first


def mean_reciprocal_rank(scores: np.ndarray, relevant: Sequence[Sequence[int]]) -> float:
    """MRR under the module's tie rule from relevant item indices per query (a query with
    none counts 0); 0.0 for no queries. The trainer's early stopping criterion."""
    if len(relevant) == 0:
        return 0.0
    return float(np.mean(1.0 / first_relevant_ranks(scores, relevant)))


@dataclass
class RankingMetrics:
    """Per-query arrays of every ranking metric, aligned with the score matrix's rows."""

    per_query: dict[str, np.ndarray]
    first_relevant_rank: np.ndarray
    n_items: int

    @property
    def n_queries(self) -> int:
        return int(self.first_relevant_rank.size)

    def means(self) -> dict[str, float]:
        return {name: float(values.mean()) for name, values in self.per_query.items()}

    def by_segment(self, segments: Sequence[Any]) -> dict[str, dict[str, float]]:
        return segment_means(self.per_query, segments)

    def to_dict(self, include_per_query: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_queries": self.n_queries,
            "n_items": self.n_items,
            "means": self.means(),
        }
        if include_per_query:
            out["per_query"] = {k: v.tolist() for k, v in self.per_query.items()}
            out["first_relevant_rank"] = self.first_relevant_rank.tolist()
        return out


def metric_names(ks: Sequence[int]) -> list[str]:
    """Names ``ranking_metrics`` produces, in display order."""
    ks = sorted(set(int(k) for k in ks))
    names = ["mrr", *(f"hit@{k}" for k in ks), "ndcg", *(f"ndcg@{k}" for k in ks), "map"]
    return names + [f"map@{k}" for k in ks]


def ranking_metrics(scores: np.ndarray, relevance: Relevance, ks: Sequence[int]) -> RankingMetrics:
    """MRR, Hit@k, NDCG (full and @k, linear gain), MAP and MAP@k for every query.

    Definitions (r_i: rank of relevant item i, g_i: its grade, R: number of relevant items):
    RR = 1 / min r_i; Hit@k = [min r_i <= k]; DCG@k = sum over r_i <= k of g_i / log2(r_i + 1),
    NDCG@k = DCG@k / ideal DCG@k (grades sorted descending); AP@k = (1/R) * sum over
    r_i <= k of (relevant items ranked at or above r_i) / r_i; full NDCG and AP use k = n_items.
    """
    scores = check_scores(scores)
    n_queries, n_items = scores.shape
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    rel = relevance_matrix(relevance, n_queries, n_items)
    rows = np.repeat(np.arange(n_queries), np.diff(rel.indptr))
    ranks = ranks_of(scores, rows, rel.indices)
    grades = rel.data

    # Order each query's relevant entries by rank: j-th relevant item found at rank r_j.
    by_rank = np.lexsort((ranks, rows))
    r_sorted = ranks[by_rank].astype(np.float64)
    g_by_rank = grades[by_rank]
    n_rel = np.diff(rel.indptr)
    j = np.arange(rows.size) - np.repeat(rel.indptr[:-1], n_rel) + 1
    first = ranks[by_rank][rel.indptr[:-1]]

    # Ideal order: grades sorted descending within each query.
    ideal = grades[np.lexsort((-grades, rows))]
    ideal_disc = ideal / np.log2(j + 1.0)
    gain_disc = g_by_rank / np.log2(r_sorted + 1.0)
    precision_at_hit = j / r_sorted

    def per_query_sum(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        weights = values if mask is None else np.where(mask, values, 0.0)
        return np.bincount(rows, weights=weights, minlength=n_queries)

    out: dict[str, np.ndarray] = {"mrr": 1.0 / first}
    for k in ks:
        out[f"hit@{k}"] = (first <= k).astype(np.float64)
    out["ndcg"] = per_query_sum(gain_disc) / per_query_sum(ideal_disc)
    for k in ks:
        out[f"ndcg@{k}"] = per_query_sum(gain_disc, r_sorted <= k) / per_query_sum(
            ideal_disc, j <= k
        )
    out["map"] = per_query_sum(precision_at_hit) / n_rel
    for k in ks:
        out[f"map@{k}"] = per_query_sum(precision_at_hit, r_sorted <= k) / n_rel
    ordered = {name: out[name] for name in metric_names(ks)}
    return RankingMetrics(ordered, first, n_items)


def segment_means(
    per_query: Mapping[str, np.ndarray], segments: Sequence[Any]
) -> dict[str, dict[str, float]]:
    """Mean of each metric within each segment label (plus its query count), labels sorted."""
    labels = np.asarray([str(s) for s in segments])
    n = len(next(iter(per_query.values())))
    if labels.size != n:
        raise DataError("segments", f"{labels.size} labels for {n} queries")
    out: dict[str, dict[str, float]] = {}
    for label in sorted(set(labels.tolist())):
        mask = labels == label
        row = {"n_queries": float(mask.sum())}
        row.update({name: float(v[mask].mean()) for name, v in per_query.items()})
        out[label] = row
    return out


# --------------------------------------------------------------------------- diversity


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when equal, (n-1)/n when one item has all."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    if x.size == 0 or x.sum() == 0:
        return 0.0
    if (x < 0).any():
        raise ValueError("Gini needs non-negative counts")
    n = x.size
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * x.sum()))


@dataclass
class DiversityMetrics:
    """How widely the top-K lists spread over the catalog."""

    k: int
    coverage: float
    gini: float
    counts: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, float]:
        return {f"coverage@{self.k}": self.coverage, f"gini@{self.k}": self.gini}


def diversity_metrics(scores: np.ndarray, k: int) -> DiversityMetrics:
    """Coverage (share of items in at least one top-k list) and Gini of top-k counts."""
    top = top_k_items(scores, k)
    n_items = scores.shape[1]
    counts = np.bincount(top.ravel(), minlength=n_items)
    return DiversityMetrics(int(k), float(np.count_nonzero(counts) / n_items), gini(counts), counts)


# --------------------------------------------------------------------------- calibration


@dataclass
class CalibrationMetrics:
    """ECE, Brier score and the reliability table behind them."""

    ece: float
    brier: float
    n: int
    bin_edges: np.ndarray
    bin_counts: np.ndarray
    bin_mean_predicted: np.ndarray
    bin_mean_observed: np.ndarray

    def to_dict(self, include_bins: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"ece": self.ece, "brier": self.brier, "n": self.n}
        if include_bins:
            out["bins"] = [
                {
                    "low": float(self.bin_edges[b]),
                    "high": float(self.bin_edges[b + 1]),
                    "count": int(self.bin_counts[b]),
                    "mean_predicted": float(self.bin_mean_predicted[b]),
                    "mean_observed": float(self.bin_mean_observed[b]),
                }
                for b in range(self.bin_counts.size)
                if self.bin_counts[b] > 0
            ]
        return out


def calibration_metrics(
    probabilities: np.ndarray, outcomes: np.ndarray, n_bins: int
) -> CalibrationMetrics:
    """ECE over ``n_bins`` equal-width bins, and the Brier score.

    Bin b holds b/B <= p < (b+1)/B (the last bin also takes p = 1). ECE is the
    count-weighted mean of |mean predicted - observed success rate| over non-empty bins.
    """
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    if p.size != y.size:
        raise DataError("outcomes", f"{y.size} outcomes for {p.size} probabilities")
    if p.size == 0:
        raise DataError("probabilities", "no predictions to calibrate")
    bad = np.flatnonzero(~((p >= 0) & (p <= 1)))
    if bad.size:
        raise DataError("probabilities", f"{p[bad[0]]} is not in [0, 1]", row=int(bad[0]))
    bad = np.flatnonzero((y != 0) & (y != 1))
    if bad.size:
        raise DataError("outcomes", f"{y[bad[0]]} is not 0 or 1", row=int(bad[0]))
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / counts, np.nan)
        mean_y = np.where(counts > 0, sum_y / counts, np.nan)
    ece = float(np.abs(sum_p - sum_y).sum() / p.size)
    brier = float(np.mean((p - y) ** 2))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return CalibrationMetrics(ece, brier, int(p.size), edges, counts, mean_p, mean_y)


# --------------------------------------------------------------------------- everything


@dataclass
class OfflineMetrics:
    """Everything seed 002 §3.1 lists for one ranker on one query set."""

    ranking: RankingMetrics
    diversity: DiversityMetrics
    calibration: CalibrationMetrics | None = None
    segments: dict[str, dict[str, float]] | None = None

    def summary(self) -> dict[str, float]:
        """One flat name -> value mapping (what gets logged and gated on)."""
        out = self.ranking.means()
        out.update(self.diversity.to_dict())
        if self.calibration is not None:
            out["ece"] = self.calibration.ece
            out["brier"] = self.calibration.brier
        return out

    def to_dict(self, include_per_query: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "summary": self.summary(),
            "ranking": self.ranking.to_dict(include_per_query),
            "diversity": self.diversity.to_dict(),
        }
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict(include_bins=True)
        if self.segments is not None:
            out["segments"] = self.segments
        return out


def evaluate_scores(
    scores: np.ndarray,
    relevance: Relevance,
    cfg: EvaluationConfig,
    *,
    probabilities: np.ndarray | None = None,
    outcomes: np.ndarray | None = None,
    segments: Sequence[Any] | None = None,
) -> OfflineMetrics:
    """Ranking metrics at ``cfg.cutoffs``, diversity at ``cfg.coverage_k`` and, when predicted
    success probabilities and observed 0/1 outcomes are given, calibration."""
    ranking = ranking_metrics(scores, relevance, cfg.cutoffs)
    diversity = diversity_metrics(scores, cfg.coverage_k)
    calibration = None
    if probabilities is not None or outcomes is not None:
        if probabilities is None or outcomes is None:
            raise ValueError("calibration needs both probabilities and outcomes")
        calibration = calibration_metrics(probabilities, outcomes, cfg.calibration_bins)
    seg = ranking.by_segment(segments) if segments is not None else None
    return OfflineMetrics(ranking, diversity, calibration, seg)
