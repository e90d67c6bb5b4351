"""IPS / SNIPS coverage on the project's own simulator, where ``World`` knows the truth.

What the logged propensity means. ``simulate_logs`` records P(the logging policy shows
the executed capability c at its logged rank k | intent, day). The probability of the
logged event itself is ``w_k * propensity``, with ``w_k = world.position_weights(n)[k-1]``
the user's chance of executing position k. The user model is the same whatever slate
policy is deployed, so ``w_k`` cancels in the importance weight: for a target slate
policy the right numerator is its own probability of showing c at rank k
(``World.action_propensity``), and ``pi / propensity`` is unbiased because the reward
depends only on (intent, capability, day). (``softmax_target_probabilities`` over the
shown candidates gives P(pick c | slate), a different event; it does not pair with this
propensity.)

Logging: the bm25 slate policy with epsilon 0.5, so every (capability, rank) is logged
with probability at least epsilon / n_available and weights stay below about
n_available + 1. (At the default epsilon 0.2 with 3,000 events the weights reach 150,
the effective sample size is about 50 and the percentile intervals cover in only 17 of
20 seeds: too few effective events, not a biased estimator.) Target: greedy over the
world's true relevance, also with epsilon 0.5. Its exact value for the logged contexts
(intent, day of each event) comes from ``World.expected_reward_matrix``, cross-checked
against ``World.expected_reward``.
"""

from __future__ import annotations

import numpy as np
import pytest

from caprank.config import CaprankConfig, EvaluationConfig
from caprank.data.dataset import Dataset
from caprank.data.simulate import simulate_logs
from caprank.data.synth import synthesize
from caprank.data.world import SlatePolicy, World, build_world
from caprank.evaluation.counterfactual import CounterfactualEstimate, estimate_policy_value

SEEDS = range(20)
EPSILON = 0.5
EVENTS_PER_DAY = 1000


@pytest.fixture(scope="module")
def catalog(tiny_cfg: CaprankConfig) -> Dataset:
    return synthesize(tiny_cfg)


def _config(tiny_cfg: CaprankConfig, seed: int) -> CaprankConfig:
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.data.seed = 1000 + seed  # a fresh world (reliability, popularity, ties) and fresh logs
    cfg.data.simulate.epsilon = EPSILON
    cfg.data.simulate.events_per_day = EVENTS_PER_DAY
    return cfg


def _true_value(world: World, target: SlatePolicy, events: dict[str, np.ndarray]) -> float:
    """Mean over logged events of the target's exact expected reward for that (intent, day)."""
    per_event = np.empty(len(events["intent"]))
    for day in np.unique(events["day"]):
        d = int(day)
        rewards = world.expected_reward_matrix(d)
        slates = world.greedy_slates(target, d)
        greedy = np.take_along_axis(rewards, slates, axis=1) @ world.position_weights(
            slates.shape[1]
        )
        value = target.epsilon * rewards[:, world.available(d)].mean(axis=1)
        value += (1 - target.epsilon) * greedy
        # the same per-intent values, weighted by traffic, are the world's own figure
        assert world.intent_distribution(d) @ value == pytest.approx(
            world.expected_reward(target, d), abs=1e-12
        )
        on_day = events["day"] == day
        per_event[on_day] = value[events["intent"][on_day]]
    return float(per_event.mean())


def _run(catalog: Dataset, cfg: CaprankConfig, seed: int) -> tuple[CounterfactualEstimate, float]:
    world = build_world(catalog, cfg)
    logging = world.policy("bm25", EPSILON)
    logs = simulate_logs(world, logging, cfg.data.simulate)
    ev = world.event_indices(logs)
    propensity = logs["propensity"].to_numpy()
    args = (ev["intent"], ev["capability"], ev["rank"], ev["day"])
    # the logged propensity is the logging policy's P(show c at rank k), recomputed
    np.testing.assert_allclose(world.action_propensity(logging, *args), propensity)
    target = SlatePolicy("relevance", world.relevance, EPSILON)
    pi = world.action_propensity(target, *args)
    reward = world.rewards(logs["outcome"], logs["execution_time_ms"].to_numpy())
    est = estimate_policy_value(reward, propensity, pi, EvaluationConfig(seed=seed))
    return est, _true_value(world, target, ev)


def test_ips_intervals_cover_the_true_value_on_simulated_logs(tiny_cfg, catalog):
    covered = {"ips": 0, "snips": 0}
    naive_close = 0
    for seed in SEEDS:
        est, truth = _run(catalog, _config(tiny_cfg, seed), seed)
        assert est.n_events == 10 * EVENTS_PER_DAY
        covered["ips"] += est.ips.contains(truth)
        covered["snips"] += est.snips.contains(truth)
        # teeth: the logging policy's own mean reward is not within the interval's
        # half-width of the target's true value
        naive_close += abs(est.logged_value - truth) <= (est.ips.high - est.ips.low) / 2
    assert covered["ips"] >= 18 and covered["snips"] >= 18, covered
    assert naive_close == 0


def test_ignoring_position_semantics_is_caught(tiny_cfg, catalog):
    """Using the probability of the logged event (position weight times propensity) as the
    denominator, while the target's probability leaves the position weight out, inflates
    the weights and the estimate misses the truth: the weights' semantics matter."""
    cfg = _config(tiny_cfg, 0)
    world = build_world(catalog, cfg)
    logs = simulate_logs(world, world.policy("bm25", EPSILON), cfg.data.simulate)
    ev = world.event_indices(logs)
    args = (ev["intent"], ev["capability"], ev["rank"], ev["day"])
    target = SlatePolicy("relevance", world.relevance, EPSILON)
    pi = world.action_propensity(target, *args)
    w_k = np.array(
        [
            world.position_weights(world.slate_length(int(d)))[k - 1]
            for d, k in zip(ev["day"], ev["rank"], strict=True)
        ]
    )
    wrong = w_k * logs["propensity"].to_numpy()
    reward = world.rewards(logs["outcome"], logs["execution_time_ms"].to_numpy())
    est = estimate_policy_value(reward, wrong, pi, EvaluationConfig(bootstrap_samples=200))
    assert not est.ips.contains(_true_value(world, target, ev))
