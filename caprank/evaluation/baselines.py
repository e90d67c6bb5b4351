"""Reference rankers every trained model is compared with (and logged beside it).

Each returns a (queries x capabilities) score matrix in catalog order, ready for
``caprank.evaluation.metrics``:

* ``bm25_scores``: Okapi BM25 of the intent text against each capability's text
  (rank_bm25's parameters, via the simulator's vectorized implementation);
* ``dense_scores``: cosine between intent and capability text embeddings;
* ``LogisticBaseline``: a supervised multinomial logistic regression from intent
  embeddings to the labeled capability (capabilities never labeled score lowest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from caprank.data.world import bm25_scores as _bm25

UNSEEN = -1e9  # score of a class the supervised baseline never saw


def bm25_scores(capability_texts: Sequence[str], intent_texts: Sequence[str]) -> np.ndarray:
    return np.asarray(_bm25(list(capability_texts), list(intent_texts)), dtype=np.float64)


def dense_scores(intent_vecs: np.ndarray, capability_vecs: np.ndarray) -> np.ndarray:
    """Cosine similarity (rows are normalized here, so any vectors work)."""
    a = np.asarray(intent_vecs, dtype=np.float32)
    b = np.asarray(capability_vecs, dtype=np.float32)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


@dataclass
class LogisticBaseline:
    """Multinomial logistic regression over intent embeddings (scikit-learn, lbfgs)."""

    n_capabilities: int
    c: float = 10.0
    max_iter: int = 300
    seed: int = 0
    _model: object = field(default=None, repr=False)

    def fit(self, intent_vecs: np.ndarray, capability_rows: np.ndarray) -> LogisticBaseline:
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(capability_rows, dtype=np.int64)
        if len(np.unique(y)) < 2:
            raise ValueError("the logistic baseline needs labels of at least two capabilities")
        model = LogisticRegression(C=self.c, max_iter=self.max_iter, random_state=self.seed)
        model.fit(np.asarray(intent_vecs, dtype=np.float32), y)
        self._model = model
        return self

    def scores(self, intent_vecs: np.ndarray) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("fit the logistic baseline first")
        out = np.full((len(intent_vecs), self.n_capabilities), UNSEEN, dtype=np.float64)
        logp = self._model.predict_log_proba(np.asarray(intent_vecs, dtype=np.float32))
        out[:, self._model.classes_] = logp
        return out
