"""Rewards, experiences, the PER sum-tree and TD(lambda) targets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from caprank.config import PERConfig, RewardConfig, TDConfig
from caprank.errors import DataError
from caprank.learning.experiences import LOGS, from_interactions, from_labels
from caprank.learning.per import PrioritizedReplay, SumTree
from caprank.learning.rewards import reward, rewards
from caprank.learning.td import td_lambda_targets


def test_rewards_outcomes_latency_feedback():
    cfg = RewardConfig(latency_penalty_per_s=0.1, feedback_weight=0.2)
    assert reward("success", 0.0, None, cfg) == pytest.approx(1.0)
    assert reward("partial", 2000.0, None, cfg) == pytest.approx(0.5 - 0.2)
    assert reward("failure", 0.0, 5, cfg) == pytest.approx(0.2)
    assert reward("success", 0.0, 3, cfg) == pytest.approx(1.0)
    with pytest.raises(DataError, match="outcome"):
        rewards(["success", "oops"], cfg=cfg)
    with pytest.raises(DataError, match="feedback"):
        rewards(["success"], [0.0], [9], cfg)


def test_sum_tree_sums_and_find():
    tree = SumTree(5)
    tree.set(np.arange(5), np.array([1.0, 2.0, 3.0, 4.0, 0.0]))
    assert tree.total == pytest.approx(10.0)
    assert tree.find(np.array([0.0, 0.99, 1.0, 2.999, 3.0, 6.0, 9.99])).tolist() == [
        0,
        0,
        1,
        1,
        2,
        3,
        3,
    ]
    tree.set(np.array([3]), np.array([0.5]))
    assert tree.total == pytest.approx(6.5)


def test_per_sampling_frequencies_match_priorities_to_the_alpha():
    cfg = PERConfig(alpha=0.6, beta=0.4, beta_increment=0.0, eps=0.01)
    per = PrioritizedReplay(cfg, capacity=8)
    per.add(8)
    td = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 4.0, 0.2, 3.0])
    per.update(np.arange(8), td)
    expected = (np.abs(td) + cfg.eps) ** cfg.alpha
    expected /= expected.sum()
    np.testing.assert_allclose(per.probabilities(), expected, rtol=1e-12)
    rng = np.random.default_rng(0)
    counts = np.zeros(8)
    for _ in range(2000):
        slots, _ = per.sample(32, rng)
        counts += np.bincount(slots, minlength=8)
    freq = counts / counts.sum()
    np.testing.assert_allclose(freq, expected, atol=0.01)


def test_per_importance_weights_and_beta_annealing():
    cfg = PERConfig(alpha=1.0, beta=0.4, beta_increment=0.1, eps=0.01)
    per = PrioritizedReplay(cfg, capacity=4)
    per.add(4)
    per.update(np.arange(4), np.array([0.99, 1.99, 2.99, 3.99]))  # priorities 1, 2, 3, 4
    p = np.array([1.0, 2.0, 3.0, 4.0]) / 10.0
    slots, w = per.sample(4, np.random.default_rng(1))
    expected = (4 * p[slots]) ** -0.4 / (4 * p.min()) ** -0.4
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert w.max() <= 1.0 + 1e-6
    assert per.beta == pytest.approx(0.5)
    for _ in range(10):
        per.sample(4, np.random.default_rng(2))
    assert per.beta == 1.0  # capped
    slots, w = per.sample(4, np.random.default_rng(3))
    np.testing.assert_allclose(w, p.min() / p[slots], rtol=1e-6)  # beta 1: full correction


def test_per_new_items_get_max_priority_and_state_round_trips():
    per = PrioritizedReplay(PERConfig(alpha=1.0), capacity=4)
    per.add(2)
    per.update(np.array([0, 1]), np.array([5.0, 0.0]))
    per.add(1)
    assert per.tree.get(np.array([2]))[0] == pytest.approx(5.01)
    other = PrioritizedReplay(PERConfig(alpha=1.0), capacity=4)
    other.load_state_dict(per.state_dict())
    np.testing.assert_array_equal(other.tree.tree, per.tree.tree)
    assert (other.size, other.next, other.beta) == (per.size, per.next, per.beta)


def test_td_lambda_matches_a_hand_computed_episode():
    # one session of three events, then a one-event session
    r = np.array([0.0, 0.5, 1.0, 0.2])
    v_next = np.array([0.4, 0.8, 123.0, 456.0])  # ignored at session ends
    end = np.array([False, False, True, True])
    g, lam = 0.9, 0.5
    g2 = 1.0
    g1 = 0.5 + g * ((1 - lam) * 0.8 + lam * g2)  # 0.5 + 0.9 * (0.4 + 0.5) = 1.31
    g0 = 0.0 + g * ((1 - lam) * 0.4 + lam * g1)  # 0.9 * (0.2 + 0.655) = 0.7695
    out = td_lambda_targets(r, v_next, end, g, lam)
    np.testing.assert_allclose(out, [g0, g1, g2, 0.2])
    assert g0 == pytest.approx(0.7695)
    # lambda 0: one-step TD; lambda 1: Monte-Carlo return
    np.testing.assert_allclose(td_lambda_targets(r, v_next, end, g, 0.0)[:2], [0.36, 0.5 + 0.72])
    np.testing.assert_allclose(
        td_lambda_targets(r, v_next, end, g, 1.0)[0], 0.9 * (0.5 + 0.9 * 1.0)
    )


def test_experiences_from_labels_and_logs():
    exp = from_labels(
        ["q1", "q2"],
        ["a", "b"],
        {"q1": 0, "q2": 1},
        {"a": 0, "b": 1, "c": 2},
        RewardConfig(),
        negatives=3,
        rng=np.random.default_rng(0),
    )
    pos = exp.positive > 0
    assert pos.sum() == 2 and (exp.reward[pos] == 1.0).all() and (exp.reward[~pos] == 0.0).all()
    assert not any(
        (i, c) in {(0, 0), (1, 1)}
        for i, c in zip(exp.intent[~pos], exp.capability[~pos], strict=True)
    )
    ts = pa.array([3, 1, 2], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    events = pa.table(
        {
            "session_id": ["s1", "s1", "s0"],
            "timestamp": ts,
            "intent_text": ["x", "y", "x"],
            "selected_capability": ["a", "b", "c"],
            "outcome": ["success", "partial", "failure"],
            "execution_time_ms": [1.0, 1.0, 1.0],
            "feedback": pa.array([None, None, None], pa.int8()),
        }
    )
    logs = from_interactions(events, {"x": 0, "y": 1}, {"a": 0, "b": 1, "c": 2}, RewardConfig())
    assert logs.capability.tolist() == [2, 1, 0]  # session s0, then s1 in time order
    assert logs.session_end.tolist() == [True, False, True]
    assert logs.positive.tolist() == [0.0, 0.5, 1.0]
    assert (logs.source == LOGS).all()
    targets = logs.td_targets(np.array([0.0, 0.7, 0.0]), TDConfig(gamma=0.99, lam=0.95))
    assert targets[1] == pytest.approx(0.5 + 0.99 * (0.05 * 0.7 + 0.95 * 1.0))
