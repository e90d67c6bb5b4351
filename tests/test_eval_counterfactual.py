"""Off-policy estimates on a simulated contextual bandit whose target value is known exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from caprank.config import EvaluationConfig, RewardConfig
from caprank.errors import DataError
from caprank.evaluation.counterfactual import (
    estimate_policy_value,
    greedy_target_probabilities,
    outcome_rewards,
    softmax_target_probabilities,
)

N_CONTEXTS, N_ACTIONS, N_EVENTS = 4, 5, 3000


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def bandit():
    """Success rates per (context, action), an exploring logging policy and a different,
    stochastic target policy; the target's true value follows from them exactly."""
    rng = np.random.default_rng(1234)
    success = rng.uniform(0.1, 0.9, size=(N_CONTEXTS, N_ACTIONS))
    logging = 0.8 * _softmax(1.5 * rng.normal(size=(N_CONTEXTS, N_ACTIONS))) + 0.2 / N_ACTIONS
    target = _softmax(2.0 * rng.normal(size=(N_CONTEXTS, N_ACTIONS)))
    true_value = float(np.mean((target * success).sum(axis=1)))  # contexts are uniform
    return success, logging, target, true_value


def _logs(bandit, seed: int):
    success, logging, _, _ = bandit
    rng = np.random.default_rng(seed)
    ctx = rng.integers(0, N_CONTEXTS, N_EVENTS)
    action = (rng.random(N_EVENTS)[:, None] > np.cumsum(logging[ctx], axis=1)).sum(axis=1)
    reward = (rng.random(N_EVENTS) < success[ctx, action]).astype(float)
    return ctx, action, reward


def test_intervals_cover_the_true_value(bandit):
    _, logging, target, true_value = bandit
    covered = {"ips": 0, "snips": 0}
    naive_covered = 0
    for seed in range(20):
        ctx, action, reward = _logs(bandit, seed)
        cfg = EvaluationConfig(seed=seed)
        est = estimate_policy_value(reward, logging[ctx, action], target[ctx, action], cfg)
        covered["ips"] += est.ips.contains(true_value)
        covered["snips"] += est.snips.contains(true_value)
        naive_covered += abs(est.logged_value - true_value) < 0.02
        assert est.ips.low < est.ips.estimate < est.ips.high
    assert covered["ips"] >= 18 and covered["snips"] >= 18, covered
    # The logging policy's own mean reward is far from the target's value: the test has teeth.
    assert naive_covered == 0


def test_wrong_propensities_are_caught(bandit):
    """Pretending the logs were uniform (ignoring the real propensities) biases IPS enough
    that its interval misses the true value."""
    _, _, target, true_value = bandit
    ctx, action, reward = _logs(bandit, 0)
    wrong = np.full(N_EVENTS, 1 / N_ACTIONS)
    est = estimate_policy_value(reward, wrong, target[ctx, action], EvaluationConfig())
    assert not est.ips.contains(true_value)


def test_estimates_are_deterministic_and_json(bandit):
    _, logging, target, _ = bandit
    ctx, action, reward = _logs(bandit, 3)
    cfg = EvaluationConfig(bootstrap_samples=200)
    a = estimate_policy_value(reward, logging[ctx, action], target[ctx, action], cfg)
    b = estimate_policy_value(reward, logging[ctx, action], target[ctx, action], cfg)
    assert a.to_dict() == b.to_dict()
    assert json.loads(json.dumps(a.to_dict()))["n_events"] == N_EVENTS
    # On-policy evaluation: target == logging gives weights of 1 and the plain mean.
    same = estimate_policy_value(reward, logging[ctx, action], logging[ctx, action], cfg)
    assert same.ips.estimate == pytest.approx(reward.mean())
    assert same.effective_sample_size == pytest.approx(N_EVENTS)


def test_weight_clipping():
    cfg = EvaluationConfig(ips_max_weight=2.0, bootstrap_samples=50)
    est = estimate_policy_value(
        np.array([1.0, 0.0, 1.0, 1.0]),
        np.array([0.1, 0.5, 0.5, 1.0]),
        np.array([1.0, 0.5, 0.5, 1.0]),
        cfg,
    )
    # Weights 10, 1, 1, 1 -> clipped to 2, 1, 1, 1.
    assert est.max_weight == 2.0 and est.clipped_share == 0.25
    assert est.ips.estimate == pytest.approx((2 + 0 + 1 + 1) / 4)
    assert est.snips.estimate == pytest.approx(4 / 5)


def test_target_policies_and_rewards():
    scores = [np.array([2.0, 1.0, 0.0]), np.array([0.5, 0.5])]
    soft = softmax_target_probabilities(scores, np.array([0, 1]), temperature=1.0)
    e = np.exp([2.0, 1.0, 0.0])
    assert soft == pytest.approx([e[0] / e.sum(), 0.5])
    assert greedy_target_probabilities(scores, np.array([0, 1])).tolist() == [1.0, 0.0]
    reward = RewardConfig()
    assert outcome_rewards(["success", "partial", "failure"], reward).tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(DataError, match="outside"):
        softmax_target_probabilities(scores, np.array([0, 2]), 1.0)
    with pytest.raises(DataError, match="unknown outcome") as err:
        outcome_rewards(["success", "great"], reward)
    assert err.value.row == 1


def test_bad_logs_name_row_and_field():
    cfg = EvaluationConfig(bootstrap_samples=20)
    with pytest.raises(DataError, match=r"propensity.*row 2") as err:
        estimate_policy_value(np.ones(3), np.array([0.5, 0.2, 0.0]), np.ones(3), cfg)
    assert err.value.field == "propensity"
    with pytest.raises(DataError, match="target_probability"):
        estimate_policy_value(np.ones(2), np.ones(2), np.array([0.5, 1.5]), cfg)
    with pytest.raises(DataError, match="2 values for 3 events"):
        estimate_policy_value(np.ones(3), np.ones(2), np.ones(3), cfg)
