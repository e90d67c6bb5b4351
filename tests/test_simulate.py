"""The log simulator: exact propensities, position bias, outcomes, sessions, drift, truth."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections import Counter, defaultdict
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from rank_bm25 import BM25Okapi

from caprank.config import CaprankConfig
from caprank.data.schemas import INTERACTIONS
from caprank.data.simulate import build_world, simulate, simulate_logs, simulation_metadata
from caprank.data.synth import start_datetime, synthesize
from caprank.embeddings.catalog_text import capability_texts
from caprank.errors import ConfigError, DataError


def _cfg(base: CaprankConfig, **sim) -> CaprankConfig:
    cfg = base.model_copy(deep=True)
    for key, value in sim.items():
        setattr(cfg.data.simulate, key, value)
    return cfg


@pytest.fixture(scope="module")
def catalog(tiny_cfg):
    return synthesize(tiny_cfg)


@pytest.fixture(scope="module")
def big_logs(tiny_cfg, catalog):
    """bm25 logs with enough events for statistics (10 days x 3,000)."""
    cfg = _cfg(tiny_cfg, events_per_day=3000)
    return cfg, simulate(catalog, cfg)


def _labels(ds) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for i, c in zip(
        ds.labels["intent_id"].to_pylist(), ds.labels["capability_id"].to_pylist(), strict=True
    ):
        out[i].add(c)
    return out


def test_schema_and_determinism(tiny_cfg, catalog, tiny_dataset):
    a = simulate(catalog, tiny_cfg)
    assert a.schema.equals(INTERACTIONS, check_metadata=False)
    assert a.num_rows == tiny_cfg.data.simulate.events_per_day * tiny_cfg.data.synth.days
    assert a.equals(simulate(catalog, tiny_cfg))
    assert a.select(["intent_id", "rank"]).equals(
        tiny_dataset.interactions.select(["intent_id", "rank"])
    )
    other = tiny_cfg.model_copy(deep=True)
    other.data.seed += 1
    b = simulate(catalog, other)
    assert not a["selected_capability"].equals(b["selected_capability"])
    assert len(set(a["event_id"].to_pylist())) == a.num_rows
    later = tiny_cfg.model_copy(deep=True)
    # a later period draws fresh events
    later.data.synth.start_date = (
        (start_datetime(tiny_cfg.data.synth) + timedelta(days=30)).date().isoformat()
    )
    c = simulate(catalog, later)
    assert not a["intent_id"].equals(c["intent_id"])
    assert not set(a["event_id"].to_pylist()) & set(c["event_id"].to_pylist())
    assert set(a["model_version"].to_pylist()) == {"bm25"}


def test_ids_exist_and_no_test_intents(tiny_dataset):
    ds, logs = tiny_dataset, tiny_dataset.interactions
    caps = set(ds.capabilities["capability_id"].to_pylist())
    tools = set(ds.tools["tool_id"].to_pylist())
    assert set(logs["selected_capability"].to_pylist()) <= caps
    assert {c for s in logs["candidate_ids"].to_pylist() for c in s} <= caps
    assert {t for s in logs["context_tools"].to_pylist() for t in s} <= tools
    split = {}
    for i, s in zip(
        ds.labels["intent_id"].to_pylist(), ds.labels["split"].to_pylist(), strict=True
    ):
        split.setdefault(i, set()).add(s)
    used = set(logs["intent_id"].to_pylist())
    assert all(split[i] <= {"train", "valid"} for i in used)
    assert any("valid" in split[i] for i in used)
    texts = dict(
        zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
    )
    assert all(
        texts[i] == t
        for i, t in zip(logs["intent_id"].to_pylist(), logs["intent_text"].to_pylist(), strict=True)
    )
    for sel, cands, rank in zip(
        logs["selected_capability"].to_pylist(),
        logs["candidate_ids"].to_pylist(),
        logs["rank"].to_pylist(),
        strict=True,
    ):
        assert cands[rank - 1] == sel and len(set(cands)) == len(cands)


def _independent_greedy(ds, cfg, seed_world):
    """Greedy bm25 slates recomputed with rank_bm25 itself, per intent text and day, over
    the documented capability text (the embed stage's ``capability_texts``)."""
    tok = re.compile(r"[a-z0-9]+")
    docs = [tok.findall(text.lower()) for text in capability_texts(ds.capabilities, ds.tools)]
    model = BM25Okapi(docs)
    start = start_datetime(cfg.data.synth)
    created = [(c - start).days for c in ds.capabilities["created_at"].to_pylist()]
    tie = seed_world.tie_order  # the documented tie-break: a fixed seeded order

    def slate(text: str, day: int) -> list[int]:
        scores = np.round(model.get_scores(tok.findall(text.lower())), 9)
        avail = [c for c in range(len(docs)) if created[c] <= day]
        ordered = sorted(avail, key=lambda c: (-scores[c], tie[c]))
        return ordered[: cfg.data.simulate.slate_size], len(avail)

    return slate


def test_propensities_equal_the_policy_probabilities(tiny_dataset, tiny_cfg):
    ds, logs = tiny_dataset, tiny_dataset.interactions
    eps = tiny_cfg.data.simulate.epsilon
    world = build_world(ds, tiny_cfg)
    slate = _independent_greedy(ds, tiny_cfg, world)
    cap_ids = ds.capabilities["capability_id"].to_pylist()
    start = start_datetime(tiny_cfg.data.synth)
    greedy_shown = 0
    prop = logs["propensity"].to_numpy()
    assert (prop > 0).all() and (prop <= 1).all()
    for row, p in zip(logs.to_pylist(), prop, strict=True):
        day = (row["timestamp"] - start).days
        greedy, n_avail = slate(row["intent_text"], day)
        greedy_ids = [cap_ids[c] for c in greedy]
        at_rank = greedy_ids[row["rank"] - 1] == row["selected_capability"]
        assert p == pytest.approx((1 - eps) * at_rank + eps / n_avail, abs=1e-12)
        greedy_shown += row["candidate_ids"] == greedy_ids
    assert abs(greedy_shown / logs.num_rows - (1 - eps)) < 0.03


@pytest.mark.parametrize("policy", ["popularity", "random"])
def test_other_policies_propensities(catalog, tiny_cfg, policy):
    cfg = _cfg(tiny_cfg, policy=policy)
    logs = simulate(catalog, cfg)
    world = build_world(catalog, cfg)
    n_avail = np.array([world.available(int(d)).sum() for d in world.day_of(logs["timestamp"])])
    prop = logs["propensity"].to_numpy()
    if policy == "random":
        np.testing.assert_allclose(prop, 1.0 / n_avail)
        return
    eps = cfg.data.simulate.epsilon
    pop = world.capability_popularity
    cap_pos = {c: k for k, c in enumerate(world.capability_ids)}
    start = world.start
    for row, p in zip(logs.to_pylist(), prop, strict=True):
        day = (row["timestamp"] - start).days
        avail = [c for c in range(len(pop)) if world.available_from[c] <= day]
        top = sorted(avail, key=lambda c: (-pop[c], world.tie_order[c]))[: world.slate_size]
        hit = top[row["rank"] - 1] == cap_pos[row["selected_capability"]]
        assert p == pytest.approx((1 - eps) * hit + eps / len(avail), abs=1e-12)


def test_position_bias_visible(big_logs):
    cfg, logs = big_logs
    n = cfg.data.simulate.slate_size
    freq = np.bincount(logs["rank"].to_numpy(), minlength=n + 1)[1:] / logs.num_rows
    assert (np.diff(freq) < 0).all()  # selection rate falls with rank
    w = cfg.data.simulate.position_bias ** np.arange(n)
    np.testing.assert_allclose(freq, w / w.sum(), atol=0.01)


def test_outcomes_follow_relevance_and_feedback_follows_outcome(big_logs, catalog):
    cfg, logs = big_logs
    labels = _labels(catalog)
    relevant = np.array(
        [
            s in labels[i]
            for i, s in zip(
                logs["intent_id"].to_pylist(), logs["selected_capability"].to_pylist(), strict=True
            )
        ]
    )
    success = np.array(logs["outcome"].to_pylist()) == "success"
    assert relevant.sum() > 500
    assert success[relevant].mean() > 0.7
    assert success[~relevant].mean() < 0.1
    fb = logs["feedback"].to_numpy(zero_copy_only=False)
    given = ~np.isnan(fb.astype(float))
    assert abs(given.mean() - cfg.data.simulate.feedback_rate) < 0.02
    rating = fb[given].astype(float)
    out = np.array(logs["outcome"].to_pylist())[given]
    assert (
        rating[out == "success"].mean()
        > rating[out == "partial"].mean()
        > rating[out == "failure"].mean()
    )
    assert set(np.unique(rating)) <= {1, 2, 3, 4, 5}
    times = logs["execution_time_ms"].to_numpy()
    assert (times > 0).all() and np.median(times) > 50


def test_sessions_are_ordered_and_topical(big_logs, catalog):
    cfg, logs = big_logs
    rows = logs.select(
        ["session_id", "user_id", "timestamp", "intent_id", "selected_capability", "context_tools"]
    ).to_pylist()
    by_session = defaultdict(list)
    for r in rows:
        by_session[r["session_id"]].append(r)
    lengths = np.array([len(v) for v in by_session.values()])
    assert abs(lengths.mean() - cfg.data.simulate.session_length_mean) < 0.3
    assert (lengths >= 3).mean() > 0.3
    tools_of = dict(
        zip(
            catalog.capabilities["capability_id"].to_pylist(),
            catalog.capabilities["tool_ids"].to_pylist(),
            strict=True,
        )
    )
    cat_of_tool = dict(
        zip(
            catalog.tools["tool_id"].to_pylist(), catalog.tools["category"].to_pylist(), strict=True
        )
    )
    home = {i: sorted(c)[0] for i, c in _labels(catalog).items()}
    same, pairs = 0, 0
    for events in by_session.values():
        stamps = [e["timestamp"] for e in events]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert len({e["user_id"] for e in events}) == 1
        assert len({s.date() for s in stamps}) == 1
        assert events[0]["context_tools"] == []
        for prev, nxt in itertools.pairwise(events):
            assert nxt["context_tools"] == tools_of[prev["selected_capability"]]
            cats = [
                Counter(cat_of_tool[t] for t in tools_of[home[e["intent_id"]]]).most_common(1)[0][0]
                for e in (prev, nxt)
            ]
            same += cats[0] == cats[1]
            pairs += 1
    assert same / pairs > 0.6  # well above 1/6 for independent requests
    assert logs["timestamp"].to_pylist() == sorted(logs["timestamp"].to_pylist())


def test_expected_reward_matches_long_simulation(tiny_cfg, catalog):
    cfg = _cfg(tiny_cfg, events_per_day=10_000)
    world = build_world(catalog, cfg)
    for name in ("bm25", "random"):
        policy = world.policy(name, cfg.data.simulate.epsilon)
        logs = simulate_logs(world, policy, cfg.data.simulate)
        r = world.rewards(logs["outcome"], logs["execution_time_ms"])
        se = r.std() / np.sqrt(len(r))
        assert abs(r.mean() - world.expected_reward(policy)) < 4 * se, name
    oracle = type(policy)("oracle", world.relevance, 0.0)
    values = [world.expected_reward(world.policy(p, 0.0)) for p in ("random", "bm25")]
    assert values[0] < values[1] < world.expected_reward(oracle)


def test_ips_with_logged_propensities_recovers_another_policys_value(tiny_cfg, catalog):
    """Item-position IPS from bm25 logs estimates the popularity policy's true value."""
    cfg = _cfg(tiny_cfg, events_per_day=10_000, epsilon=0.5)
    world = build_world(catalog, cfg)
    logs = simulate_logs(world, world.policy("bm25", 0.5), cfg.data.simulate)
    target = world.policy("popularity", 0.3)
    idx = world.event_indices(logs)
    p_target = world.action_propensity(
        target, idx["intent"], idx["capability"], idx["rank"], idx["day"]
    )
    terms = (
        world.rewards(logs["outcome"], logs["execution_time_ms"])
        * p_target
        / logs["propensity"].to_numpy()
    )
    se = terms.std() / np.sqrt(len(terms))
    truth = world.expected_reward(target)
    assert abs(terms.mean() - truth) < 4 * se
    assert abs(truth - world.expected_reward(world.policy("bm25", 0.5))) > 4 * se  # not trivial


def test_action_propensity_matches_logged(tiny_dataset, tiny_cfg):
    world = build_world(tiny_dataset, tiny_cfg)
    logs = tiny_dataset.interactions
    idx = world.event_indices(logs)
    policy = world.policy("bm25", tiny_cfg.data.simulate.epsilon)
    got = world.action_propensity(policy, idx["intent"], idx["capability"], idx["rank"], idx["day"])
    np.testing.assert_allclose(got, logs["propensity"].to_numpy())


def test_tool_reliability_drift(tiny_cfg, catalog):
    cfg = _cfg(tiny_cfg, events_per_day=3000, drift_tool_reliability_day=5)
    logs = simulate(catalog, cfg)
    drift = simulation_metadata(logs)["drift"]["tool_reliability"]
    assert drift["day"] == 5
    tool = drift["tool_id"]
    tools_of = dict(
        zip(
            catalog.capabilities["capability_id"].to_pylist(),
            catalog.capabilities["tool_ids"].to_pylist(),
            strict=True,
        )
    )
    labels = _labels(catalog)
    day = build_world(catalog, cfg).day_of(logs["timestamp"])
    rows = zip(
        logs["intent_id"].to_pylist(),
        logs["selected_capability"].to_pylist(),
        logs["outcome"].to_pylist(),
        day,
        strict=True,
    )
    rate = {True: [], False: []}
    for intent, cap, outcome, d in rows:
        if tool in tools_of[cap] and cap in labels[intent]:
            rate[bool(d >= 5)].append(outcome == "success")
    assert min(len(rate[True]), len(rate[False])) > 50
    assert np.mean(rate[False]) > 0.75
    assert np.mean(rate[True]) < 0.5


def test_new_capabilities_drift(tiny_cfg):
    cfg = _cfg(tiny_cfg, events_per_day=3000, drift_new_capabilities_day=6)
    ds = synthesize(cfg)  # the catalog creates its late capabilities on day 6
    logs = simulate(ds, cfg)
    drift = simulation_metadata(logs)["drift"]["new_capabilities"]
    new = set(drift["capability_ids"])
    assert new and drift["day"] == 6 and set(drift["launch_days"].values()) == {6}
    day = build_world(ds, cfg).day_of(logs["timestamp"])
    sel = np.array([c in new for c in logs["selected_capability"].to_pylist()])
    shown = np.array([bool(new & set(c)) for c in logs["candidate_ids"].to_pylist()])
    assert not shown[day < 6].any()
    assert sel[day >= 6].sum() > 30
    home = {
        i: c
        for i, c in zip(
            ds.labels["intent_id"].to_pylist(), ds.labels["capability_id"].to_pylist(), strict=True
        )
    }
    asked = np.array([home[i] in new for i in logs["intent_id"].to_pylist()])
    assert asked[day < 6].sum() == 0 and asked[day >= 6].mean() > 0.08


def test_intent_mix_drift(tiny_cfg, catalog):
    cfg = _cfg(tiny_cfg, events_per_day=3000, drift_intent_mix_day=4)
    logs = simulate(catalog, cfg)
    mix = simulation_metadata(logs)["drift"]["intent_mix"]
    assert mix["day"] == 4 and mix["share_after"] > mix["share_before"]
    world = build_world(catalog, cfg)
    cat = world.intent_category()
    favoured = np.isin(cat, [world.categories.index(c) for c in mix["categories"]])
    ipos = {x: k for k, x in enumerate(world.intent_ids)}
    hit = favoured[[ipos[i] for i in logs["intent_id"].to_pylist()]]
    day = world.day_of(logs["timestamp"])
    before, after = hit[day < 4].mean(), hit[day >= 4].mean()
    assert abs(before - mix["share_before"]) < 0.03 and abs(after - mix["share_after"]) < 0.03
    assert after > before + 0.15


def test_drift_day_after_the_end_is_a_config_error(tiny_cfg, catalog):
    with pytest.raises(ConfigError, match="drift_tool_reliability_day"):
        simulate(catalog, _cfg(tiny_cfg, drift_tool_reliability_day=99))


def test_capability_without_tools_is_a_data_error_naming_row(tiny_cfg, catalog):
    lists = catalog.capabilities["tool_ids"].to_pylist()
    lists[3] = []
    caps = catalog.capabilities.set_column(
        2, "tool_ids", pa.array(lists, catalog.capabilities.schema.field("tool_ids").type)
    )
    with pytest.raises(DataError) as err:
        build_world(dataclasses.replace(catalog, capabilities=caps), tiny_cfg)
    assert err.value.row == 3 and err.value.field == "tool_ids"


def test_policy_from_rankings_mapping_or_function(tiny_cfg, catalog):
    world = build_world(catalog, tiny_cfg)
    scores = world.policy("bm25", 0.0)
    ranked = world.ranked(scores)
    as_map = {
        i: [world.capability_ids[c] for c in ranked[k]] for k, i in enumerate(world.intent_ids)
    }
    from_map = world.policy_from_rankings(as_map, "map")
    from_fn = world.policy_from_rankings(as_map.__getitem__, "fn")
    truth = world.expected_reward(scores)
    assert world.expected_reward(from_map) == pytest.approx(truth, abs=1e-12)
    assert world.expected_reward(from_fn) == pytest.approx(truth, abs=1e-12)
    # an ordering that puts each intent's labeled capability first beats bm25
    best = {i: [world.capability_ids[world.intent_home[k]]] for k, i in enumerate(world.intent_ids)}
    assert world.expected_reward(world.policy_from_rankings(best)) > truth + 0.05


def test_the_default_period_draws_the_same_logs_whatever_the_date(tiny_cfg, monkeypatch):
    """The embedded default covers "the last `days` days": on another date only its
    timestamps move, not what happened (a test run after midnight trains on the same
    data); an explicit later start date still draws fresh events."""
    from datetime import UTC, datetime

    import caprank.data.synth as synth_module

    def logs_on(day: datetime, start_date: str | None = None) -> pa.Table:
        class Today(datetime):
            @classmethod
            def now(cls, tz=None):
                return day

        monkeypatch.setattr(synth_module, "datetime", Today)
        cfg = tiny_cfg.model_copy(deep=True)
        cfg.data.synth.start_date = start_date
        ds = synthesize(cfg)
        return simulate(ds, cfg)

    a = logs_on(datetime(2026, 12, 5, 23, tzinfo=UTC))
    b = logs_on(datetime(2026, 12, 6, 1, tzinfo=UTC))
    same = ("selected_capability", "outcome", "intent_text", "propensity")
    assert all(a[c].to_pylist() == b[c].to_pylist() for c in same)
    assert a["timestamp"].to_pylist() != b["timestamp"].to_pylist()  # moved by a day
    c = logs_on(datetime(2026, 12, 6, 1, tzinfo=UTC), "2026-10-01")
    d = logs_on(datetime(2026, 12, 6, 1, tzinfo=UTC), "2026-10-11")
    assert c["selected_capability"].to_pylist() != d["selected_capability"].to_pylist()
