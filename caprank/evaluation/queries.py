"""The queries an evaluation scores: ids, texts, graded relevance over the catalog, times.

Built from a dataset's labels (intent -> relevant capabilities) or from its interaction
log (each successful or partial event is a query whose selected capability is relevant).
Score matrices are aligned with ``QuerySet.item_ids``, the catalog's capability order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from caprank.config import EvaluationConfig
from caprank.data.dataset import Dataset
from caprank.data.schemas import OUTCOMES, TABLES
from caprank.errors import DataError


@dataclass(frozen=True)
class QuerySet:
    """Rows are queries; ``relevance`` is (queries x items) with grades > 0 where relevant."""

    query_ids: np.ndarray
    texts: np.ndarray
    relevance: sp.csr_matrix
    item_ids: tuple[str, ...]
    timestamps: np.ndarray | None = None  # datetime64[us], UTC
    groups: np.ndarray | None = None  # fold key: rows sharing it never straddle folds

    def __post_init__(self) -> None:
        n = len(self.query_ids)
        if len(self.texts) != n or self.relevance.shape != (n, len(self.item_ids)):
            raise ValueError("QuerySet columns disagree on the number of queries or items")
        for name in ("timestamps", "groups"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise ValueError(f"QuerySet.{name} has {len(col)} rows for {n} queries")

    def __len__(self) -> int:
        return len(self.query_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def group_keys(self) -> np.ndarray:
        return self.groups if self.groups is not None else self.query_ids

    def take(self, rows: np.ndarray) -> QuerySet:
        """The queries at ``rows`` (indices or a boolean mask), in that order."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return replace(
            self,
            query_ids=self.query_ids[rows],
            texts=self.texts[rows],
            relevance=self.relevance[rows],
            timestamps=None if self.timestamps is None else self.timestamps[rows],
            groups=None if self.groups is None else self.groups[rows],
        )

    def relevant_items(self) -> list[dict[int, float]]:
        """One ``{item index: grade}`` per query."""
        rel = self.relevance
        return [
            dict(zip(rel.indices[a:b].tolist(), rel.data[a:b].tolist(), strict=True))
            for a, b in zip(rel.indptr[:-1], rel.indptr[1:], strict=True)
        ]

    def segments(self, item_labels: Mapping[str, str]) -> np.ndarray:
        """Label of each query's most relevant item (highest grade, then lowest index).

        ``item_labels`` maps item id to a segment (e.g. capability size or category);
        items without a label fall in segment ``"unknown"``.
        """
        rel = self.relevance
        out = []
        for a, b in zip(rel.indptr[:-1], rel.indptr[1:], strict=True):
            if a == b:
                out.append("none")
                continue
            best = rel.indices[a + int(np.argmax(rel.data[a:b]))]
            out.append(str(item_labels.get(self.item_ids[best], "unknown")))
        return np.asarray(out, dtype=object)


def _where(ds: Dataset, table: str) -> str:
    file = TABLES[table].file
    return str(Path(ds.root) / file) if ds.root is not None else file


def queries_from_labels(ds: Dataset, split: str | None = "test") -> QuerySet:
    """One query per labelled intent of ``split`` (all splits when None)."""
    item_ids = tuple(ds.capabilities["capability_id"].to_pylist())
    item_index = {c: i for i, c in enumerate(item_ids)}
    texts = dict(
        zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
    )
    labels = ds.labels
    where = _where(ds, "labels")
    query_row: dict[str, int] = {}
    rows, cols, grades = [], [], []
    for i, (intent, cap, grade, sp_) in enumerate(
        zip(
            labels["intent_id"].to_pylist(),
            labels["capability_id"].to_pylist(),
            labels["grade"].to_pylist(),
            labels["split"].to_pylist(),
            strict=True,
        )
    ):
        if split is not None and sp_ != split:
            continue
        if cap not in item_index:
            raise DataError(where, f"unknown capability {cap!r}", row=i, field="capability_id")
        if intent not in texts:
            raise DataError(where, f"unknown intent {intent!r}", row=i, field="intent_id")
        if grade is None or grade < 1:
            raise DataError(where, f"grade must be >= 1, found {grade}", row=i, field="grade")
        rows.append(query_row.setdefault(intent, len(query_row)))
        cols.append(item_index[cap])
        grades.append(float(grade))
    if not query_row:
        raise DataError(where, f"no labels in split {split!r}", field="split")
    ids = np.asarray(list(query_row), dtype=object)
    rel = sp.csr_matrix((grades, (rows, cols)), shape=(len(ids), len(item_ids)))
    rel.sum_duplicates()
    return QuerySet(
        query_ids=ids,
        texts=np.asarray([texts[q] for q in ids], dtype=object),
        relevance=rel,
        item_ids=item_ids,
    )


def queries_from_interactions(
    interactions: pa.Table,
    item_ids: Sequence[str],
    cfg: EvaluationConfig,
    source: str = TABLES["interactions"].file,
) -> QuerySet:
    """One query per logged event whose outcome earns a grade (``cfg.grade_success`` /
    ``cfg.grade_partial``; failures never do). Groups are intent ids (or texts)."""
    grade_of = {"success": cfg.grade_success, "partial": cfg.grade_partial, "failure": 0}
    item_index = {c: i for i, c in enumerate(item_ids)}
    cols = {
        name: interactions[name].to_pylist()
        for name in ("event_id", "intent_id", "intent_text", "selected_capability", "outcome")
    }
    times = interactions["timestamp"].to_numpy(zero_copy_only=False)
    keep, items, grades = [], [], []
    for i, (outcome, cap) in enumerate(
        zip(cols["outcome"], cols["selected_capability"], strict=True)
    ):
        if outcome not in OUTCOMES:
            raise DataError(source, f"unknown outcome {outcome!r}", row=i, field="outcome")
        if cap not in item_index:
            raise DataError(
                source, f"unknown capability {cap!r}", row=i, field="selected_capability"
            )
        if grade_of[outcome] > 0:
            keep.append(i)
            items.append(item_index[cap])
            grades.append(float(grade_of[outcome]))
    keep_a = np.asarray(keep, dtype=np.int64)
    rel = sp.csr_matrix((grades, (np.arange(len(keep)), items)), shape=(len(keep), len(item_ids)))
    event_ids = np.asarray(cols["event_id"], dtype=object)[keep_a]
    texts = np.asarray(cols["intent_text"], dtype=object)[keep_a]
    groups = np.asarray(
        [
            q if q is not None else t
            for q, t in zip(cols["intent_id"], cols["intent_text"], strict=True)
        ],
        dtype=object,
    )[keep_a]
    stamps = np.asarray(times, dtype="datetime64[us]")[keep_a]
    return QuerySet(event_ids, texts, rel, tuple(item_ids), stamps, groups)
