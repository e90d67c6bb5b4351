"""Reference rankers every trained model is compared with: the one place they are defined.

The train stage (on validation intents), the evaluate stage (on test intents, shown in
the report beside the candidate and production), the log simulator's BM25 logging
policy and the benchmarks all call these functions. Each returns a
(queries x capabilities) score matrix in catalog order, ready for
``caprank.evaluation.metrics``:

* ``bm25_scores(capability_texts, intent_texts)``: Okapi BM25 of the intent text against
  each capability's text (rank_bm25's idf and parameters, as one sparse product);
* ``dense_scores(intent_vecs, capability_vecs)``: cosine between intent and capability
  text embeddings;
* ``logistic_scores(train_vecs, train_rows, intent_vecs, n_capabilities)``: a supervised
  multinomial logistic regression from intent embeddings to the labeled capability
  (capabilities never labeled score lowest).

This module imports nothing from the rest of caprank, so ``caprank.data`` (the
simulator) may import it without a cycle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

NAMES = ("bm25", "dense", "logreg")  # the baselines ``training.baselines`` may list
UNSEEN = -1e9  # score of a class the supervised baseline never saw
BM25_DECIMALS = 9  # bm25 scores are rounded so rankings reproduce across implementations
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lowercase alphanumeric tokens: what BM25 matches on."""
    return _TOKEN.findall(text.lower())


def bm25_scores(capability_texts: Sequence[str], intent_texts: Sequence[str]) -> np.ndarray:
    """Okapi BM25 (rank_bm25's idf and parameters) of every intent against every capability.

    Same values as ``BM25Okapi.get_scores`` per intent, computed as one sparse product.
    """
    import scipy.sparse as sp
    from rank_bm25 import BM25Okapi

    docs = list(capability_texts)
    model = BM25Okapi([tokenize(d) or [""] for d in docs])
    vocab = {w: j for j, w in enumerate(model.idf)}
    weights = np.zeros((len(docs), len(vocab)))
    for d, freqs in enumerate(model.doc_freqs):
        norm = model.k1 * (1 - model.b + model.b * model.doc_len[d] / model.avgdl)
        for w, f in freqs.items():
            weights[d, vocab[w]] = model.idf[w] * f * (model.k1 + 1) / (f + norm)
    rows, cols = [], []
    for q, text in enumerate(intent_texts):
        for tok in tokenize(text):
            j = vocab.get(tok)
            if j is not None:
                rows.append(q)
                cols.append(j)
    counts = sp.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(intent_texts), len(vocab))
    )  # duplicates add up, as repeated query tokens do in rank_bm25
    return np.round(np.asarray(counts @ weights.T, dtype=np.float64), BM25_DECIMALS)


def dense_scores(intent_vecs: np.ndarray, capability_vecs: np.ndarray) -> np.ndarray:
    """Cosine similarity (rows are normalized here, so any vectors work)."""
    a = np.asarray(intent_vecs, dtype=np.float32)
    b = np.asarray(capability_vecs, dtype=np.float32)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def logistic_scores(
    train_vecs: np.ndarray,
    train_rows: np.ndarray,
    intent_vecs: np.ndarray,
    n_capabilities: int,
    *,
    seed: int = 0,
    c: float = 10.0,
    max_iter: int = 300,
) -> np.ndarray:
    """Log-probabilities of a multinomial logistic regression (scikit-learn, lbfgs) fit on
    ``train_vecs`` -> capability row ``train_rows``; capabilities never labeled get
    ``UNSEEN``. Raises ValueError with fewer than two labeled capabilities."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(train_rows, dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise ValueError("the logistic baseline needs labels of at least two capabilities")
    model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    model.fit(np.asarray(train_vecs, dtype=np.float32), y)
    out = np.full((len(intent_vecs), n_capabilities), UNSEEN, dtype=np.float64)
    out[:, model.classes_] = model.predict_log_proba(np.asarray(intent_vecs, dtype=np.float32))
    return out
