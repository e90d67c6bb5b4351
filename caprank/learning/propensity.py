"""Clipped inverse-propensity weights for learning from logs (docs/training.md).

A logged positive says "this capability worked", but whether it could work at all was
decided by the logging policy (did it show the capability, and where) and by the user
(did they look that far down). Learning from raw counts therefore learns the logging
policy and the position bias as if they were relevance. Each logged event is weighted
by 1 / max(p * e_k, clip):

* p: the logged ``propensity``, P(the logging policy put this capability at rank k);
* e_k: how likely rank k is examined relative to rank 1, estimated from the logs as the
  share of events executed from rank k over the share from rank 1 (under the user model
  of ``caprank.data.world`` a request executes one shown capability, chosen by position
  whatever it is, so the executed-rank histogram is the examination curve);
* clip: the floor that bounds the weight at 1 / clip (variance against bias).

``caprank.learning.experiences.from_interactions`` multiplies each positive's ranking
weight by this and rescales to mean 1 over the positives, so logs and labels keep their
relative size in the loss. numpy only.
"""

from __future__ import annotations

import numpy as np

from caprank.errors import DataError


def examination_by_rank(ranks: np.ndarray) -> np.ndarray:
    """e[k] for k = 0..max rank: executed-from-rank-k share over the rank-1 share.

    Index 0 is unused (ranks are 1-based) and set to 1; ranks never executed from get the
    smallest observed value, so they are not treated as never examined."""
    r = np.asarray(ranks, dtype=np.int64)
    if r.size == 0:
        return np.ones(1)
    counts = np.bincount(np.clip(r, 1, None), minlength=2).astype(np.float64)
    top = counts[1] if counts[1] > 0 else counts[1:].max()
    e = counts / top
    seen = e[1:][e[1:] > 0]
    e[1:][e[1:] == 0] = seen.min()
    e[0] = 1.0
    return np.minimum(e, 1.0)


def ips_weights(propensity: np.ndarray, ranks: np.ndarray, clip: float) -> np.ndarray:
    """1 / max(propensity * e_rank, clip) per event (rows of ``propensity`` are named
    in errors as rows of interactions.parquet)."""
    p = np.asarray(propensity, dtype=np.float64)
    r = np.asarray(ranks, dtype=np.int64)
    if p.shape != r.shape:
        raise ValueError(f"{p.size} propensities for {r.size} ranks")
    if not 0 < clip <= 1:
        raise ValueError(f"clip must be in (0, 1], got {clip}")
    bad = np.flatnonzero(~((p > 0) & (p <= 1)))
    if bad.size:
        raise DataError(
            "interactions.parquet",
            f"propensity {p[bad[0]]} is not in (0, 1]",
            row=int(bad[0]),
            field="propensity",
        )
    if p.size == 0:
        return p
    e = examination_by_rank(r)[np.clip(r, 1, None)]
    return 1.0 / np.maximum(p * e, clip)
