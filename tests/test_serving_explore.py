"""Exploration at serving time: the draw, its exact propensities, the served record and
feedback events that carry them, and IPS on a log from the exploring policy."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np
import pytest

from caprank.config import EvaluationConfig, ExploreConfig, PrivacyConfig
from caprank.data.ingest import read_feedback
from caprank.errors import DataError
from caprank.evaluation.counterfactual import (
    estimate_policy_value,
    placement_target_probabilities,
)
from caprank.online.explore import explore, placement_probabilities, plackett_luce_marginals
from caprank.online.feedback import FeedbackPost, build_event, event_id
from caprank.online.served import RequestStore, ServedRanking
from tests.serving_fixtures import Served, start_served

SCORES = np.array([2.0, 1.6, 1.5, 0.9, 0.4, 0.1])
EPSILON = ExploreConfig(policy="epsilon", epsilon=0.3, top_n=4)
SOFTMAX = ExploreConfig(policy="softmax", temperature=0.5, top_n=5)


def test_off_by_default_keeps_the_model_order():
    cfg = ExploreConfig()
    assert cfg.policy == "none"
    for rid in ("a", "b", "c"):
        shown = explore(SCORES, cfg, rid)
        assert shown.order.tolist() == list(range(len(SCORES)))
        assert shown.propensities.tolist() == [1.0] * len(SCORES)
    assert np.array_equal(placement_probabilities(SCORES, cfg), np.eye(len(SCORES)))


def test_the_draw_is_seeded_by_the_request_id():
    always = ExploreConfig(policy="epsilon", epsilon=1.0, top_n=6)
    first = [explore(SCORES, always, f"r{i}").order.tolist() for i in range(20)]
    again = [explore(SCORES, always, f"r{i}").order.tolist() for i in range(20)]
    assert first == again
    assert len({tuple(o) for o in first}) > 5  # different ids: different orders
    reseeded = always.model_copy(update={"seed": 1})
    assert [explore(SCORES, reseeded, f"r{i}").order.tolist() for i in range(20)] != first


def test_epsilon_propensities_are_exact_and_match_frequencies():
    p = placement_probabilities(SCORES, EPSILON)
    np.testing.assert_allclose(p.sum(axis=0), 1.0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, 0] == pytest.approx(0.7 + 0.3 / 4) and p[1, 0] == pytest.approx(0.3 / 4)
    assert p[4, 4] == 1.0 and p[4, 0] == 0.0  # below top_n nothing moves
    _check_frequencies(EPSILON, p)


def test_softmax_marginals_equal_the_plackett_luce_enumeration():
    w = np.exp(SCORES[:5] / SOFTMAX.temperature)
    brute = np.zeros((5, 5))
    for perm in itertools.permutations(range(5)):
        prob, left = 1.0, w.sum()
        for i in perm:
            prob *= w[i] / left
            left -= w[i]
        brute[list(perm), range(5)] += prob
    np.testing.assert_allclose(plackett_luce_marginals(w), brute, rtol=1e-12, atol=1e-15)
    p = placement_probabilities(SCORES, SOFTMAX)
    np.testing.assert_allclose(p[:5, :5], brute, rtol=1e-12, atol=1e-15)
    _check_frequencies(SOFTMAX, p)


def _check_frequencies(cfg: ExploreConfig, p: np.ndarray, n: int = 4000) -> None:
    """Each request's logged propensities are its placements' probabilities, and the
    placements' frequencies over many seeded requests match them (within 4 sigma)."""
    counts = np.zeros_like(p)
    cols = np.arange(len(SCORES))
    for i in range(n):
        shown = explore(SCORES, cfg, f"freq-{i}")
        assert sorted(shown.order.tolist()) == cols.tolist()
        np.testing.assert_allclose(shown.propensities, p[shown.order, cols])
        counts[shown.order, cols] += 1
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(counts / n - p) <= 4 * sigma + 1e-12)


def test_extreme_scores_keep_propensities_in_the_contract_range():
    cfg = ExploreConfig(policy="softmax", temperature=0.001, top_n=4)
    for i in range(50):
        shown = explore(np.array([10.0, 1.0, -5.0, -9.0]), cfg, f"x{i}")
        assert np.all((shown.propensities > 0) & (shown.propensities <= 1))


def test_feedback_event_carries_the_logged_propensity_and_position():
    served = ServedRanking(
        "req-1", "send mail", ("t",), ("a", "b", "c"), "v1", datetime.now(UTC),
        "s", "u", propensities=(0.7, 0.1, 1.0),
    )  # fmt: skip
    # the durable / Redis stores keep it through their records
    assert ServedRanking.from_record(served.to_record(0.0)) == served
    store = RequestStore(10, 60.0)
    store.put(served)
    held = store.get("req-1")
    post = FeedbackPost("req-1", "b", "success", 12.0)
    row = build_event(post, held, PrivacyConfig(), datetime.now(UTC))
    assert row["rank"] == 2 and row["propensity"] == 0.1 and row["candidate_ids"] == ["a", "b", "c"]
    plain = ServedRanking("req-2", "x", (), ("a", "b"), "v1", datetime.now(UTC))
    assert ServedRanking.from_record(plain.to_record(0.0)).propensities is None
    assert build_event(FeedbackPost("req-2", "b", "failure", 1.0), plain, PrivacyConfig(),
                       datetime.now(UTC))["propensity"] == 1.0  # fmt: skip


def _simulate_log(cfg: ExploreConfig, n: int, seed: int):
    """Events from the exploring policy: the user acts at rank k with a position-biased
    probability, whatever is there; the outcome is a success with the item's quality."""
    rng = np.random.default_rng(seed)
    quality = np.array([0.2, 0.9, 0.5, 0.7, 0.3, 0.6])
    bias = 0.6 ** np.arange(len(SCORES))
    bias /= bias.sum()
    items, ranks, props, rewards = [], [], [], []
    for i in range(n):
        shown = explore(SCORES, cfg, f"log-{seed}-{i}")
        k = int(rng.choice(len(SCORES), p=bias))
        item = int(shown.order[k])
        items.append(item)
        ranks.append(k + 1)
        props.append(shown.propensities[k])
        rewards.append(float(rng.random() < quality[item]))
    return quality, bias, np.array(items), np.array(ranks), np.array(props), np.array(rewards)


def test_ips_on_an_exploring_log_is_unbiased_for_a_target_policy():
    n = 20_000
    quality, bias, items, ranks, props, rewards = _simulate_log(EPSILON, n, seed=5)
    ev = EvaluationConfig(bootstrap_samples=50, ips_max_weight=None)
    reorder = np.eye(len(SCORES))[[3, 1, 2, 0, 4, 5]]  # shows item 3 first, item 0 fourth
    soft4 = placement_probabilities(SCORES, SOFTMAX.model_copy(update={"top_n": 4}))
    for target in (reorder, soft4):
        truth = float(bias @ (target.T @ quality))  # sum_k bias_k sum_i P[i, k] q_i
        pi = placement_target_probabilities([target] * n, items, ranks)
        est = estimate_policy_value(rewards, props, pi, ev)
        se = float(np.std(pi / props * rewards) / np.sqrt(n))
        assert abs(est.ips.estimate - truth) < 4 * se
        assert abs(est.snips.estimate - truth) < 4 * se + 0.01
        # the propensity-1 log a non-exploring server writes gets the answer wrong
        naive = estimate_policy_value(rewards, np.ones(n), pi, ev).ips.estimate
        assert abs(naive - truth) > 10 * se
    with pytest.raises(DataError, match="rank"):
        placement_target_probabilities([reorder], np.array([0]), np.array([7]))


# ----------------------------------------------------------------- through the server
@pytest.fixture(scope="module")
def served(tiny_cfg, tiny_dataset, tmp_path_factory):
    s = start_served(tiny_cfg, tiny_dataset, tmp_path_factory.mktemp("serving-ex"), publish=False)
    yield s
    s.close()


def test_served_exploration_logs_propensities_in_feedback(served: Served):
    engine = served.runtime.engine
    request = {"intent": "send an email with an attachment", "top_k": 8, "context_tools": None}
    engine.cfg.serving.explore = ExploreConfig()
    base = served.rank(request)
    scores = [r["score"] for r in base["rankings"]]
    assert scores == sorted(scores, reverse=True)  # off: the model's order, as before
    assert engine.requests.get(base["request_id"]).propensities is None
    ids = [r["capability_id"] for r in base["rankings"]]
    try:
        engine.cfg.serving.explore = ExploreConfig(policy="epsilon", epsilon=1.0, top_n=4)
        orders = set()
        for _ in range(12):
            pred = served.rank(request)
            shown = [r["capability_id"] for r in pred["rankings"]]
            assert sorted(shown[:4]) == sorted(ids[:4]) and shown[4:] == ids[4:]
            orders.add(tuple(shown[:4]))
            record = engine.requests.get(pred["request_id"])
            assert record.shown == tuple(shown)
            assert record.propensities == (0.25,) * 4 + (1.0,) * 4
        assert len(orders) > 1
        body = {"request_id": pred["request_id"], "selected_capability": shown[1],
                "outcome": "success", "execution_time_ms": 10.0}  # fmt: skip
        code, out = served.call("POST", "/v1/feedback", body)
        assert code == 200 and out["status"] == "stored"
        code, out = served.call("POST", "/admin/feedback/compact")
        assert code == 200
        eid = event_id(pred["request_id"], shown[1])
        rows = [r for r in read_feedback(served.cfg).to_pylist() if r["event_id"] == eid]
        assert len(rows) == 1 and rows[0]["rank"] == 2 and rows[0]["propensity"] == 0.25
    finally:
        engine.cfg.serving.explore = ExploreConfig()
