"""Exploration over the top of a ranking, with the exact propensity of what was shown.

Without exploration the served ranking is a function of the request, every logged
propensity is 1, and the logs cannot evaluate any other ranking policy. With
``serving.explore`` on, the first ``top_n`` ranked results are reordered at random:

- ``epsilon``: with probability epsilon a uniformly random order of the top n, else the
  model's order;
- ``softmax``: a Plackett-Luce draw of the top n (each position in turn takes one of the
  remaining results with probability proportional to exp(score / temperature)).

The propensity logged for a result is the data contract's (docs/data-format.md): the
probability that this policy shows that capability **at that position** for this
request, P(c at rank k | request), not the probability of the whole shown order. For
epsilon it is ``(1 - epsilon) [model ranks c at k] + epsilon / n``; for softmax it is the
exact Plackett-Luce marginal, summed over the 2**n sets of results that can fill the
earlier positions (hence ``top_n`` <= 8). Results below the top n are never moved:
propensity 1.

The draw is seeded by the server-issued request id (and ``serving.explore.seed``), so
a request id always gets the same order: replays and tests are reproducible.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from caprank.config import ExploreConfig

_MIN_LOGIT = -700.0  # exp() of this is still a normal float: no weight is exactly 0


@dataclass(frozen=True)
class Explored:
    """``order[j]``: which ranked result (0-based) is shown at position j;
    ``propensities[j]``: P(that result at position j | request)."""

    order: np.ndarray
    propensities: np.ndarray


def request_rng(request_id: str, seed: int) -> np.random.Generator:
    """The random stream of one request (the same id and seed: the same stream)."""
    digest = hashlib.sha256(f"{seed}:{request_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64) / temperature
    return np.exp(np.maximum(z - z.max(), _MIN_LOGIT))


@functools.cache
def _layers(m: int) -> tuple[np.ndarray, ...]:
    """The subsets of m items (as bit masks), grouped by size 0 .. m - 1."""
    masks = np.arange(1 << m, dtype=np.int64)
    sizes = np.array([int(x).bit_count() for x in masks])
    return tuple(masks[sizes == k] for k in range(m))


def plackett_luce_marginals(weights: np.ndarray) -> np.ndarray:
    """P[i, k]: probability that item i takes position k in a Plackett-Luce draw of all
    items (exact: a dynamic program over the sets of items placed before position k)."""
    w = np.asarray(weights, dtype=np.float64)
    m = len(w)
    bits = (np.arange(1 << m)[:, None] >> np.arange(m)) & 1  # subset x item membership
    left = (1 - bits) @ w  # weight of the items not yet placed
    reach = np.zeros(1 << m)  # P(the first |s| positions hold exactly the set s)
    reach[0] = 1.0
    out = np.zeros((m, m))
    for k, s in enumerate(_layers(m)):
        step = reach[s, None] * (1 - bits[s]) * w / left[s, None]  # next item i after s
        out[:, k] = step.sum(axis=0)
        if k + 1 < m:
            for i in range(m):
                np.add.at(reach, s | 1 << i, step[:, i])  # step is 0 where i is in s
    return out


def placement_probabilities(scores: np.ndarray, cfg: ExploreConfig) -> np.ndarray:
    """P[i, k]: probability that the i-th ranked result (scores in rank order) is shown at
    position k (0-based) under ``cfg``; rows and columns each sum to 1."""
    n = len(scores)
    out = np.eye(n)
    m = min(cfg.top_n, n)
    if cfg.policy == "none" or m < 2:
        return out
    if cfg.policy == "epsilon":
        out[:m, :m] = (1.0 - cfg.epsilon) * np.eye(m) + cfg.epsilon / m
    else:
        out[:m, :m] = plackett_luce_marginals(_weights(scores[:m], cfg.temperature))
    return out


def explore(scores: np.ndarray, cfg: ExploreConfig, request_id: str) -> Explored:
    """The shown order of a ranking (``scores`` in rank order) and each position's propensity."""
    n = len(scores)
    order = np.arange(n, dtype=np.int64)
    m = min(cfg.top_n, n)
    if cfg.policy == "none" or m < 2:
        return Explored(order, np.ones(n))
    rng = request_rng(request_id, cfg.seed)
    if cfg.policy == "epsilon":
        if rng.random() < cfg.epsilon:
            order[:m] = rng.permutation(m)
    else:  # Gumbel-max: sorting log-weights plus Gumbel noise is a Plackett-Luce draw
        logw = np.log(_weights(scores[:m], cfg.temperature))
        order[:m] = np.argsort(-(logw + rng.gumbel(size=m)), kind="stable")
    probs = placement_probabilities(scores, cfg)[order, np.arange(n)]
    # a shown placement has a propensity > 0 (the contract's range) even if it underflowed
    return Explored(order, np.maximum(probs, np.finfo(np.float64).tiny))
