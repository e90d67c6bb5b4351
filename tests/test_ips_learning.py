"""Learning from logs with clipped inverse-propensity weights (caprank.learning.propensity).

A simulated log with a known, biased logging policy: it shows the least relevant
capabilities first, users execute by position whatever is shown, and the outcome depends
on true relevance only. Raw positives then reward what the policy showed high; the
propensity- and position-weighted ones reward relevance.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
import torch

from caprank.config import RewardConfig
from caprank.errors import DataError
from caprank.learning.experiences import from_interactions
from caprank.learning.propensity import examination_by_rank, ips_weights
from caprank.training.trainer import weighted_infonce

torch.set_num_threads(1)  # the shared 2-core machine: no thread contention

TRUE_RELEVANCE = np.linspace(0.8, 0.5, 6)  # capability 0 is the most relevant
EPSILON, POSITION_BIAS, N_EVENTS = 0.5, 0.7, 30_000


def _biased_log(seed: int = 3) -> pa.Table:
    """Greedy slate = worst capability first (prob 1 - eps), else a random order."""
    rng = np.random.default_rng(seed)
    n = len(TRUE_RELEVANCE)
    greedy = np.arange(n)[::-1]
    w = POSITION_BIAS ** np.arange(n)
    w /= w.sum()
    explore = rng.random(N_EVENTS) < EPSILON
    shuffled = rng.permuted(np.tile(greedy, (N_EVENTS, 1)), axis=1)
    slates = np.where(explore[:, None], shuffled, greedy)
    k = rng.choice(n, size=N_EVENTS, p=w)
    chosen = slates[np.arange(N_EVENTS), k]
    propensity = EPSILON / n + (1 - EPSILON) * (greedy[k] == chosen)
    success = rng.random(N_EVENTS) < TRUE_RELEVANCE[chosen]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return pa.table(
        {
            "session_id": [f"s{i}" for i in range(N_EVENTS)],
            "timestamp": pa.array([t0 + timedelta(seconds=i) for i in range(N_EVENTS)]),
            "intent_text": ["the one intent"] * N_EVENTS,
            "selected_capability": [f"c{c}" for c in chosen],
            "rank": pa.array(k + 1, pa.int32()),
            "outcome": ["success" if s else "failure" for s in success],
            "execution_time_ms": np.full(N_EVENTS, 100.0),
            "feedback": pa.array([None] * N_EVENTS, pa.int8()),
            "propensity": propensity,
        }
    )


def _learned_order(log: pa.Table, ips_clip: float | None) -> np.ndarray:
    """Fit one free score per capability with the trainer's weighted InfoNCE."""
    n = len(TRUE_RELEVANCE)
    caps = {f"c{i}": i for i in range(n)}
    exp = from_interactions(log, {"the one intent": 0}, caps, RewardConfig(), ips_clip=ips_clip)
    # one intent: every row has the same logits, so rows of a capability add up exactly
    total = np.bincount(exp.capability, weights=exp.positive, minlength=n)
    target = torch.arange(n)
    weight = torch.as_tensor(total, dtype=torch.float32)
    blocked = torch.zeros(n, n, dtype=torch.bool)
    torch.manual_seed(0)
    scores = torch.zeros(n, requires_grad=True)
    opt = torch.optim.Adam([scores], lr=0.05)
    for _ in range(400):
        loss = weighted_infonce(scores.expand(len(target), n), target, weight, blocked)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return np.argsort(-scores.detach().numpy(), kind="stable")


def test_ips_recovers_the_true_ordering_where_raw_counts_do_not():
    log = _biased_log()
    truth = np.argsort(-TRUE_RELEVANCE, kind="stable")
    weighted = _learned_order(log, ips_clip=0.01)
    raw = _learned_order(log, ips_clip=None)
    np.testing.assert_array_equal(weighted, truth)
    assert not np.array_equal(raw, truth)
    assert raw[0] != truth[0]  # raw counts put a capability the policy favoured first


def test_examination_is_estimated_from_the_executed_ranks():
    log = _biased_log()
    e = examination_by_rank(log["rank"].to_numpy())
    want = POSITION_BIAS ** np.arange(len(TRUE_RELEVANCE))
    np.testing.assert_allclose(e[1:], want, rtol=0.08)
    assert e[1] == 1.0


def test_ips_weights_are_clipped_and_reject_bad_propensities():
    w = ips_weights(np.array([1.0, 0.5, 1e-6]), np.array([1, 1, 1]), clip=0.1)
    np.testing.assert_allclose(w, [1.0, 2.0, 10.0])
    with pytest.raises(DataError, match="propensity") as err:
        ips_weights(np.array([0.5, 0.0]), np.array([1, 2]), clip=0.1)
    assert err.value.row == 1
