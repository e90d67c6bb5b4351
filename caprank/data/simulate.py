"""Interaction logs sampled from a ``World`` under a logging policy, vectorized with numpy.

Only intents labeled train or valid get traffic: test labels are for evaluation. Each
day holds ``events_per_day`` events grouped into sessions (one user, a few requests in
time order, mostly within one category). Every event records the slate shown, the
executed capability, its 1-based rank, the outcome, the execution time, an optional
1-5 rating, and the propensity: the probability that the logging policy placed the
executed capability at that rank for that intent on that day (see ``caprank.data.world``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from caprank.config import CaprankConfig, SimulateConfig
from caprank.data.dataset import Dataset
from caprank.data.schemas import INTERACTIONS, OUTCOMES, TIMESTAMP
from caprank.data.world import SlatePolicy, World, build_world

__all__ = [
    "SlatePolicy",
    "World",
    "build_world",
    "simulate",
    "simulate_logs",
    "simulation_metadata",
]

METADATA_KEY = b"caprank.simulation"
SESSION_GAP_MIN_S = 5.0  # seconds between two requests of a session: 5 + exponential
SESSION_GAP_MEAN_S = 60.0
USER_ACTIVITY_EXPONENT = 1.0  # Zipf exponent of how many sessions each user has
# P(rating 1..5 | outcome), rows in OUTCOMES order (success, partial, failure).
FEEDBACK_GIVEN_OUTCOME = np.array(
    [
        [0.02, 0.03, 0.10, 0.35, 0.50],
        [0.10, 0.25, 0.35, 0.22, 0.08],
        [0.55, 0.25, 0.12, 0.05, 0.03],
    ]
)
PROPENSITY_DEFINITION = (
    "P(logging policy shows the executed capability at its logged rank | intent, day) "
    "= (1 - epsilon) * [greedy slate has it at that rank] + epsilon / n_available"
)


def _random_slates(rng: np.random.Generator, m: int, n: int, pool: int) -> np.ndarray:
    """m rows of n distinct ints in [0, pool), each row uniform over ordered n-subsets."""
    if m == 0:
        return np.zeros((0, n), dtype=np.int64)
    if 2 * n > pool:  # small pools: shuffle everything
        return np.argsort(rng.random((m, pool)), axis=1)[:, :n]
    out = rng.integers(0, pool, size=(m, n))
    while True:  # reject rows with repeats: uniform over distinct tuples
        s = np.sort(out, axis=1)
        bad = (s[:, 1:] == s[:, :-1]).any(axis=1)
        if not bad.any():
            return out
        out[bad] = rng.integers(0, pool, size=(int(bad.sum()), n))


def _sessions(rng: np.random.Generator, n_events: int, mean_len: float) -> np.ndarray:
    """Session lengths (>= 1, mean ``mean_len``) adding up to exactly ``n_events``."""
    lengths = np.zeros(0, dtype=np.int64)
    while lengths.sum() < n_events:
        more = int(np.ceil((n_events - lengths.sum()) / mean_len)) + 8
        lengths = np.concatenate([lengths, 1 + rng.poisson(mean_len - 1, size=more)])
    cut = int(np.searchsorted(np.cumsum(lengths), n_events))
    lengths = lengths[: cut + 1].copy()
    lengths[-1] -= lengths.sum() - n_events
    return lengths


def _sample_intents(
    rng: np.random.Generator,
    p: np.ndarray,
    category: np.ndarray,
    first: np.ndarray,
    session_of: np.ndarray,
    step: np.ndarray,
    stickiness: float,
) -> np.ndarray:
    """Intents per event: a session's first from ``p``; later ones stay in its category.

    Staying draws from ``p`` restricted to the category, so every event's marginal is ``p``.
    """
    by_cat = np.argsort(category, kind="stable")
    cdf = np.cumsum(p[by_cat])
    cdf /= cdf[-1]
    cats_sorted = category[by_cat]
    lo = np.searchsorted(cats_sorted, np.arange(category.max() + 1), side="left")
    hi = np.searchsorted(cats_sorted, np.arange(category.max() + 1), side="right")
    below = np.where(lo > 0, cdf[np.maximum(lo - 1, 0)], 0.0)
    mass = np.where(hi > 0, cdf[np.maximum(hi - 1, 0)], 0.0) - below

    n = len(session_of)
    u = rng.random(n)
    stay = rng.random(n) < stickiness
    pos = np.searchsorted(cdf, u, side="right")
    picked = by_cat[np.minimum(pos, len(cdf) - 1)]
    # later events of a session: draw again within the first event's category
    heads = picked[first]
    cat = category[heads][session_of]
    again = (step > 0) & stay
    u2 = below[cat[again]] + u[again] * mass[cat[again]]
    pos2 = np.searchsorted(cdf, u2, side="right")
    pos2 = np.clip(pos2, lo[cat[again]], hi[cat[again]] - 1)
    picked[again] = by_cat[pos2]
    return picked


def _run_tag(world: World, policy: SlatePolicy, sim: SimulateConfig) -> str:
    spec = {
        "seed": world.seed,
        "start": world.start.isoformat(),
        "days": world.days,
        "policy": policy.name,
        "epsilon": policy.epsilon,
        "events_per_day": sim.events_per_day,
        "capabilities": len(world.capability_ids),
        "intents": len(world.intent_ids),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]


def _numbered(prefix: str, idx: np.ndarray) -> pa.Array:
    digits = pa.array(idx, pa.int64()).cast(pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(digits, 8, "0"), "")


def _lists(values: pa.Array, index: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    """A list column: row r holds values[index[r, :lengths[r]]]."""
    mask = np.arange(index.shape[1])[None, :] < lengths[:, None]
    flat = values.take(pa.array(index[mask]))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat)


@dataclass
class _Sessions:
    """One day's sessions: which session each event is in, and when it happens."""

    lengths: np.ndarray  # events per session
    session_of: np.ndarray  # per event
    first: np.ndarray  # index of each session's first event
    step: np.ndarray  # per event: position within its session
    seconds: np.ndarray  # per event: seconds since the day's midnight
    users: np.ndarray  # per session


def _day_sessions(rng: np.random.Generator, sim: SimulateConfig, user_w: np.ndarray) -> _Sessions:
    """Sessions that start anywhere in the day and end before midnight, one user each."""
    lengths = _sessions(rng, sim.events_per_day, sim.session_length_mean)
    m = int(lengths.sum())
    session_of = np.repeat(np.arange(len(lengths)), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    step = np.arange(m) - first[session_of]
    gaps = np.where(step > 0, SESSION_GAP_MIN_S + rng.exponential(SESSION_GAP_MEAN_S, m), 0.0)
    offset = np.cumsum(gaps)
    offset -= offset[first][session_of]
    span = offset[np.cumsum(lengths) - 1]
    begin = np.minimum(rng.uniform(0, 86_400, len(lengths)), np.maximum(86_399 - span, 0))
    users = rng.choice(sim.n_users, size=len(lengths), p=user_w)
    return _Sessions(lengths, session_of, first, step, begin[session_of] + offset, users)


def _show_slates(
    rng: np.random.Generator,
    world: World,
    policy: SlatePolicy,
    day: int,
    intents: np.ndarray,
    greedy_cache: dict[bytes, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slates (greedy, or uniformly random with probability epsilon), the 0-based rank
    of the executed capability, and that placement's propensity."""
    m, eps = len(intents), policy.epsilon
    avail = world.available(day)
    avail_idx = np.flatnonzero(avail)
    n = world.slate_length(day)
    explore = rng.random(m) < eps
    slates = np.full((m, world.slate_size), -1, dtype=np.int64)
    if eps < 1:
        key = avail.tobytes()  # the greedy slates change only with the available set
        if key not in greedy_cache:
            greedy_cache[key] = world.greedy_slates(policy, day)
        greedy = greedy_cache[key]
        slates[~explore, :n] = greedy[intents[~explore]]
    slates[explore, :n] = avail_idx[_random_slates(rng, int(explore.sum()), n, len(avail_idx))]
    k = rng.choice(n, size=m, p=world.position_weights(n))
    chosen = slates[np.arange(m), k]
    propensity = np.full(m, eps / len(avail_idx))
    if eps < 1:
        propensity += (1 - eps) * (greedy[intents, k] == chosen)
    return slates, k, propensity


def _outcomes(
    rng: np.random.Generator, world: World, day: int, intents: np.ndarray, chosen: np.ndarray
) -> np.ndarray:
    """Outcome index (OUTCOMES order) from relevance and tool reliability, drift included."""
    q = world.relevance[intents, chosen]
    r = world.capability_reliability(day)[chosen]
    ps = q * r
    pp = q * (1 - r) * world.partial_if_tool_fails + (1 - q) * world.partial_if_unfit
    u = rng.random(len(chosen))
    return np.where(u < ps, 0, np.where(u < ps + pp, 1, 2))


def _execution_ms(rng: np.random.Generator, world: World, chosen: np.ndarray) -> np.ndarray:
    """Sum of log-normal latencies over the executed capability's tools."""
    tools = world.cap_tools[chosen]
    z = rng.standard_normal(tools.shape)
    lat = np.exp(world.latency_mu[tools] + world.latency_sigma[tools] * z)
    return np.where(tools >= 0, lat, 0.0).sum(axis=1)


def _feedback(rng: np.random.Generator, outcome: np.ndarray, rate: float) -> np.ndarray:
    """A 1-5 rating drawn given the outcome, for a ``rate`` share of events; 0 = none."""
    m = len(outcome)
    has_fb = rng.random(m) < rate
    fb_cdf = np.cumsum(FEEDBACK_GIVEN_OUTCOME, axis=1)
    rating = np.minimum(1 + (rng.random(m)[:, None] > fb_cdf[outcome]).sum(axis=1), 5)
    return np.where(has_fb, rating, 0)


def _simulate_day(
    rng: np.random.Generator,
    world: World,
    policy: SlatePolicy,
    sim: SimulateConfig,
    day: int,
    user_w: np.ndarray,
    greedy_cache: dict[bytes, np.ndarray],
) -> tuple[dict[str, np.ndarray], int]:
    """One day's events as columns (session numbers from 0), and its session count.

    The order of the draws from ``rng`` is part of the output: keep it.
    """
    s = _day_sessions(rng, sim, user_w)
    intents = _sample_intents(
        rng,
        world.intent_distribution(day),
        world.intent_category(),
        s.first,
        s.session_of,
        s.step,
        sim.session_topic_stickiness,
    )
    slates, k, propensity = _show_slates(rng, world, policy, day, intents, greedy_cache)
    chosen = slates[np.arange(len(intents)), k]
    outcome = _outcomes(rng, world, day, intents, chosen)
    exec_ms = _execution_ms(rng, world, chosen)
    feedback = _feedback(rng, outcome, sim.feedback_rate)
    cols = {
        "seconds": day * 86_400 + s.seconds,
        "session": s.session_of,
        "user": s.users[s.session_of],
        "intent": intents,
        "slate": slates,
        "slate_len": np.full(len(intents), world.slate_length(day)),
        "chosen": chosen,
        "rank": k + 1,
        "outcome": outcome,
        "exec_ms": exec_ms,
        "feedback": feedback,
        "propensity": propensity,
        "prev": np.where(s.step > 0, np.roll(chosen, 1), -1),
    }
    return cols, len(s.lengths)


def simulate_logs(world: World, policy: SlatePolicy, sim: SimulateConfig) -> pa.Table:
    """Sample ``sim.events_per_day`` events per day of ``world`` under ``policy``."""
    # an explicit first day is part of the seed: appending a later period draws fresh
    # events; the default period (relative to today) draws the same ones every day
    rng = np.random.default_rng([world.seed, 0x10C5, world.period])
    user_w = (1.0 + rng.permutation(sim.n_users)) ** -USER_ACTIVITY_EXPONENT
    user_w /= user_w.sum()
    greedy_cache: dict[bytes, np.ndarray] = {}
    parts: dict[str, list[np.ndarray]] = {}
    n_sessions = 0
    for day in range(world.days):
        cols, day_sessions = _simulate_day(rng, world, policy, sim, day, user_w, greedy_cache)
        cols["session"] = n_sessions + cols["session"]
        for name, arr in cols.items():
            parts.setdefault(name, []).append(arr)
        n_sessions += day_sessions

    cols = {name: np.concatenate(arrs) for name, arrs in parts.items()}
    order = np.lexsort((cols["rank"], cols["session"], cols["seconds"]))
    cols = {name: arr[order] for name, arr in cols.items()}
    return _to_table(world, policy, sim, cols)


def _to_table(world: World, policy: SlatePolicy, sim: SimulateConfig, cols: dict) -> pa.Table:
    m = len(cols["chosen"])
    tag = _run_tag(world, policy, sim)
    start_us = int(world.start.timestamp()) * 1_000_000
    micros = start_us + np.round(cols["seconds"] * 1e6).astype(np.int64)
    cap_ids = pa.array(world.capability_ids, pa.string())
    tool_ids = pa.array(world.tool_ids, pa.string())
    prev = cols["prev"]
    prev_tools = np.where(prev[:, None] >= 0, world.cap_tools[np.maximum(prev, 0)], -1)
    prev_len = np.where(prev >= 0, (prev_tools >= 0).sum(axis=1), 0)
    intent_idx = pa.array(cols["intent"])
    arrays = {
        "event_id": _numbered(f"ev-{tag}-", np.arange(m)),
        "timestamp": pa.array(micros, pa.int64()).cast(TIMESTAMP),
        "session_id": _numbered(f"se-{tag}-", cols["session"]),
        "user_id": _numbered("user-", cols["user"]),
        "intent_id": pa.array(world.intent_ids, pa.string()).take(intent_idx),
        "intent_text": pa.array(world.intent_texts, pa.string()).take(intent_idx),
        "context_tools": _lists(tool_ids, prev_tools, prev_len),
        "candidate_ids": _lists(cap_ids, cols["slate"], cols["slate_len"]),
        "selected_capability": cap_ids.take(pa.array(cols["chosen"])),
        "rank": pa.array(cols["rank"].astype(np.int32)),
        "outcome": pa.array(OUTCOMES, pa.string()).take(pa.array(cols["outcome"])),
        "execution_time_ms": pa.array(cols["exec_ms"], pa.float64()),
        "feedback": pa.array(
            cols["feedback"].astype(np.int8), pa.int8(), mask=cols["feedback"] == 0
        ),
        "propensity": pa.array(cols["propensity"], pa.float64()),
        "model_version": pa.array(np.full(m, policy.name, dtype=object), pa.string()),
    }
    schema = INTERACTIONS.with_metadata(
        {METADATA_KEY: json.dumps(_metadata(world, policy, sim, m, tag), default=str).encode()}
    )
    return pa.Table.from_arrays([arrays[f.name] for f in INTERACTIONS], schema=schema)


def _metadata(
    world: World, policy: SlatePolicy, sim: SimulateConfig, events: int, tag: str
) -> dict:
    drift = {
        name: {k: v for k, v in d.items() if not k.endswith(("_index", "_indices"))}
        for name, d in world.drift.items()
    }
    return {
        "tag": tag,
        "policy": policy.name,
        "epsilon": policy.epsilon,
        "seed": world.seed,
        "start": world.start.isoformat(),
        "days": world.days,
        "events": events,
        "events_per_day": sim.events_per_day,
        "slate_size": world.slate_size,
        "position_bias": world.position_bias,
        "propensity": PROPENSITY_DEFINITION,
        "drift": drift,
    }


def simulation_metadata(logs: pa.Table) -> dict:
    """The simulation's settings and drift details (which tool, which day, ...)."""
    meta = logs.schema.metadata or {}
    if METADATA_KEY not in meta:
        return {}
    return json.loads(meta[METADATA_KEY])


def simulate(ds: Dataset, cfg: CaprankConfig) -> pa.Table:
    """Interaction logs for ``ds`` under ``cfg.data.simulate`` (schema ``INTERACTIONS``).

    Seeded by ``cfg.data.seed``; ``simulation_metadata(table)`` tells what was simulated.
    """
    world = build_world(ds, cfg)
    sim = cfg.data.simulate
    return simulate_logs(world, world.policy(sim.policy, sim.epsilon), sim)
