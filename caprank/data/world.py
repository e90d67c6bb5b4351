"""The simulator's ground truth: who asks for what, what works, and what a ranking is worth.

A ``World`` is built from a dataset and the config. It holds the user model the log
simulator samples from, and computes exactly what any ranking policy would earn under
it, so counterfactual estimators can be checked against the truth.

User model, per request (an intent on a day):
  1. the policy shows a slate of ``n = min(slate_size, available capabilities)``
     capabilities: with probability ``1 - epsilon`` its greedy top-n, otherwise a uniformly
     random ordered n-subset of the capabilities available that day;
  2. the user executes the capability at position k with probability
     ``w_k = b**(k-1) / sum_j b**(j-1)`` (``b = position_bias``), whatever it is;
  3. the outcome depends on the relevance q of that capability to the intent and on the
     reliability r of its tools: P(success) = q r,
     P(partial) = q (1 - r) partial_if_tool_fails + (1 - q) partial_if_unfit.
The logged propensity is the probability that the logging policy put the executed
capability at the position it was executed from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.data.synth import start_datetime
from caprank.embeddings.catalog_text import capability_texts
from caprank.errors import ConfigError, DataError
from caprank.evaluation.baselines import bm25_scores

LATENCY_SPREAD = 0.5  # per-tool log-median latency varies by N(0, spread) around the median
LATENCY_SIGMA_RANGE = (0.25, 0.75)  # per-tool lognormal sigma, uniform in this range


@dataclass(frozen=True)
class SlatePolicy:
    """Greedy top-n by score with epsilon-uniform exploration (epsilon 1: uniformly random).

    ``scores`` has one row per world intent and one column per capability; ties are
    broken by the world's fixed ``tie_order``.
    """

    name: str
    scores: np.ndarray
    epsilon: float


@dataclass
class World:
    """Catalog, traffic, relevance, reliability, latency and drift of one simulation."""

    seed: int
    start: datetime
    days: int
    capability_ids: list[str]
    tool_ids: list[str]
    intent_ids: list[str]  # intents that get traffic: train/valid-labeled, never test
    intent_texts: list[str]
    capability_texts: list[str]  # ``catalog_text.capability_texts``: what the bm25 policy ranks
    categories: list[str]
    cap_category: np.ndarray  # (n_caps,) index into categories
    cap_tools: np.ndarray  # (n_caps, max_len) tool indices, -1 padded
    intent_home: np.ndarray  # (n_intents,) the capability the intent is labeled with
    available_from: np.ndarray  # (n_caps,) first day index the capability exists
    relevance: np.ndarray  # (n_intents, n_caps) q in [0, 1]
    capability_popularity: np.ndarray  # (n_caps,) traffic share of the capability's intents
    tool_reliability: np.ndarray  # (n_tools,) before any drift
    latency_mu: np.ndarray  # (n_tools,) log-ms
    latency_sigma: np.ndarray  # (n_tools,)
    tie_order: np.ndarray  # (n_caps,) rank of each capability among equal scores
    slate_size: int
    position_bias: float
    partial_if_tool_fails: float
    partial_if_unfit: float
    reward_values: tuple[float, float, float]  # success, partial, failure
    latency_penalty_per_s: float
    drift: dict = field(default_factory=dict)
    # what the log's draws are seeded with beside ``seed``: the first day's ordinal for an
    # explicit ``data.synth.start_date`` (a later period appended draws fresh events), 0
    # for the default "the last ``days`` days", so the embedded default's content is the
    # same whatever the date and only its timestamps move
    period: int = 0
    _ranked: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ basics
    @property
    def n_intents(self) -> int:
        return len(self.intent_ids)

    @property
    def n_capabilities(self) -> int:
        return len(self.capability_ids)

    def intent_category(self) -> np.ndarray:
        return self.cap_category[self.intent_home]

    def available(self, day: int) -> np.ndarray:
        return self.available_from <= day

    def slate_length(self, day: int) -> int:
        return int(min(self.slate_size, self.available(day).sum()))

    def position_weights(self, n: int) -> np.ndarray:
        """P(the user executes position k), k = 1..n: examination decays by position_bias."""
        w = self.position_bias ** np.arange(n, dtype=np.float64)
        return w / w.sum()

    def tool_reliability_on(self, day: int) -> np.ndarray:
        rel = self.tool_reliability.copy()
        d = self.drift.get("tool_reliability")
        if d is not None and day >= d["day"]:
            rel[d["tool_index"]] *= d["factor"]
        return rel

    def capability_reliability(self, day: int) -> np.ndarray:
        """Probability that every tool of each capability works on that day."""
        rel = np.append(self.tool_reliability_on(day), 1.0)  # index -1 (padding) -> 1
        return rel[self.cap_tools].prod(axis=1)

    def expected_latency_ms(self) -> np.ndarray:
        mean = np.append(np.exp(self.latency_mu + self.latency_sigma**2 / 2), 0.0)
        return mean[self.cap_tools].sum(axis=1)

    def intent_distribution(self, day: int) -> np.ndarray:
        """P(a request on that day is for each intent); drifts change it over time."""
        home = self.intent_home
        per_cap = np.bincount(home, minlength=self.n_capabilities).astype(np.float64)
        w = self.capability_popularity[home] / per_cap[home]
        w = w * self.available(day)[home]
        mix = self.drift.get("intent_mix")
        if mix is not None and day >= mix["day"]:
            boosted = np.isin(self.cap_category[home], mix["category_indices"])
            w = np.where(boosted, w * mix["boost"], w)
        new = self.drift.get("new_capabilities")
        if new is not None:
            launched = np.isin(home, new["capability_indices"]) & (day >= new["day"])
            w = np.where(launched, w * new["boost"], w)
        total = w.sum()
        if total <= 0:
            raise DataError("<world>", f"no intent can be requested on day {day}")
        return w / total

    # ------------------------------------------------------------------ outcomes
    def outcome_probabilities(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        """(P(success), P(partial)) for every (intent, capability) on that day."""
        q = self.relevance
        r = self.capability_reliability(day)[None, :]
        success = q * r
        partial = q * (1 - r) * self.partial_if_tool_fails + (1 - q) * self.partial_if_unfit
        return success, partial

    def expected_reward_matrix(self, day: int) -> np.ndarray:
        """E[reward | intent, executed capability, day] (outcome value minus latency cost)."""
        success, partial = self.outcome_probabilities(day)
        v_s, v_p, v_f = self.reward_values
        value = v_s * success + v_p * partial + v_f * (1 - success - partial)
        return value - self.latency_penalty_per_s * self.expected_latency_ms()[None, :] / 1000

    def rewards(self, outcomes: Sequence[str] | pa.Array, execution_time_ms) -> np.ndarray:
        """The reward of logged events, on the same scale as ``expected_reward``."""
        v_s, v_p, v_f = self.reward_values
        out = np.asarray(pa.array(outcomes).to_numpy(zero_copy_only=False))
        value = np.where(out == "success", v_s, np.where(out == "partial", v_p, v_f))
        t = np.asarray(execution_time_ms, dtype=np.float64)
        return value - self.latency_penalty_per_s * t / 1000

    # ------------------------------------------------------------------ policies
    def policy(self, name: str, epsilon: float = 0.0) -> SlatePolicy:
        """A named logging policy: 'bm25', 'popularity' or 'random' (epsilon ignored)."""
        if name == "bm25":
            scores = bm25_scores(self.capability_texts, self.intent_texts)
        elif name == "popularity":
            scores = np.broadcast_to(
                self.capability_popularity, (self.n_intents, self.n_capabilities)
            )
        elif name == "random":
            return SlatePolicy("random", np.zeros((self.n_intents, self.n_capabilities)), 1.0)
        else:
            raise ConfigError("data.simulate.policy", f"unknown policy {name!r}")
        return SlatePolicy(name, scores, float(epsilon))

    def policy_from_rankings(
        self,
        rankings: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]],
        name: str = "rankings",
        epsilon: float = 0.0,
    ) -> SlatePolicy:
        """A policy from explicit orderings: intent id -> capability ids, best first.

        ``rankings`` is a mapping or a function of the intent id. Capabilities an ordering
        leaves out follow it in the world's tie order.
        """
        lookup = rankings if callable(rankings) else (lambda i: rankings.get(i, ()))
        pos = {c: j for j, c in enumerate(self.capability_ids)}
        scores = np.zeros((self.n_intents, self.n_capabilities))
        for i, intent in enumerate(self.intent_ids):
            order = list(dict.fromkeys(pos[c] for c in lookup(intent) if c in pos))
            scores[i, order] = np.arange(len(order), 0, -1, dtype=np.float64)
        return SlatePolicy(name, scores, float(epsilon))

    def ranked(self, policy: SlatePolicy) -> np.ndarray:
        """(n_intents, n_caps) every capability by descending score, ties in tie order."""
        cached = self._ranked.get(id(policy))
        if cached is not None and cached[0] is policy:
            return cached[1]
        by_tie = np.argsort(self.tie_order)  # column order that realises the tie order
        s = np.nan_to_num(np.asarray(policy.scores, dtype=np.float64)[:, by_tie], nan=-np.inf)
        order = by_tie[np.argsort(-s, axis=1, kind="stable")]
        self._ranked[id(policy)] = (policy, order)  # holding the policy keeps its id unique
        return order

    def greedy_slates(self, policy: SlatePolicy, day: int) -> np.ndarray:
        """(n_intents, n) capability indices: each intent's top-n available, best first."""
        n = self.slate_length(day)
        avail = self.available(day)
        # the first n available lie within the first n + (number unavailable) ranked
        head = self.ranked(policy)[:, : n + int((~avail).sum())]
        keep = np.argsort(~avail[head], axis=1, kind="stable")[:, :n]
        return np.take_along_axis(head, keep, axis=1)

    def action_propensity(
        self,
        policy: SlatePolicy,
        intents: np.ndarray,
        capabilities: np.ndarray,
        ranks: np.ndarray,
        days: np.ndarray,
    ) -> np.ndarray:
        """P(policy shows capability c at 1-based rank k for intent i on day d), per event."""
        intents, capabilities, ranks, days = map(np.asarray, (intents, capabilities, ranks, days))
        out = np.zeros(len(intents))
        for day in np.unique(days):
            sel = days == day
            n_avail = int(self.available(int(day)).sum())
            avail = self.available(int(day))[capabilities[sel]]
            p = np.where(avail, policy.epsilon / n_avail, 0.0)
            if policy.epsilon < 1:
                greedy = self.greedy_slates(policy, int(day))
                k = ranks[sel] - 1
                ok = (k >= 0) & (k < greedy.shape[1])
                hit = np.zeros(sel.sum(), dtype=bool)
                hit[ok] = greedy[intents[sel][ok], k[ok]] == capabilities[sel][ok]
                p = p + (1 - policy.epsilon) * hit
            out[sel] = p * (ranks[sel] <= self.slate_length(int(day)))
        return out

    def expected_reward(self, policy: SlatePolicy, day: int | None = None) -> float:
        """Exact mean reward per request of ``policy`` on ``day`` (None: over all days)."""
        days = range(self.days) if day is None else [day]
        cache: dict[bytes, np.ndarray] = {}
        total = 0.0
        for d in days:
            rmat = self.expected_reward_matrix(d)
            avail = self.available(d)
            value = policy.epsilon * rmat[:, avail].mean(axis=1)
            if policy.epsilon < 1:
                key = avail.tobytes()
                if key not in cache:
                    cache[key] = self.greedy_slates(policy, d)
                slates = cache[key]
                w = self.position_weights(slates.shape[1])
                greedy = np.take_along_axis(rmat, slates, axis=1) @ w
                value = value + (1 - policy.epsilon) * greedy
            total += float(self.intent_distribution(d) @ value)
        return total / len(days)

    # ------------------------------------------------------------------ logs
    def day_of(self, timestamps: pa.Array | pa.ChunkedArray) -> np.ndarray:
        start = pa.scalar(self.start, type=pa.timestamp("us", tz="UTC"))
        micros = pc.subtract(timestamps, start).cast(pa.int64()).to_numpy()
        return micros // 86_400_000_000

    def event_indices(self, logs: pa.Table) -> dict[str, np.ndarray]:
        """Map logged events to world indices: intent, capability, 1-based rank, day."""
        ipos = {x: j for j, x in enumerate(self.intent_ids)}
        cpos = {x: j for j, x in enumerate(self.capability_ids)}
        try:
            intents = np.array([ipos[x] for x in logs["intent_id"].to_pylist()], dtype=np.int64)
            caps = np.array(
                [cpos[x] for x in logs["selected_capability"].to_pylist()], dtype=np.int64
            )
        except KeyError as exc:
            raise DataError("<interactions>", f"id not in this world: {exc}") from exc
        return {
            "intent": intents,
            "capability": caps,
            "rank": logs["rank"].to_numpy().astype(np.int64),
            "day": self.day_of(logs["timestamp"]),
        }


# --------------------------------------------------------------------------- construction


def _traffic_labels(ds: Dataset) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Intents that may get traffic (train/valid labels, no test label) and their labels."""
    lab_int = ds.labels["intent_id"].to_pylist()
    lab_cap = ds.labels["capability_id"].to_pylist()
    lab_split = ds.labels["split"].to_pylist()
    test = {i for i, s in zip(lab_int, lab_split, strict=True) if s == "test"}
    order: dict[str, int] = {}
    pairs: list[tuple[int, str]] = []
    for i, c, s in zip(lab_int, lab_cap, lab_split, strict=True):
        if s in ("train", "valid") and i not in test:
            pairs.append((order.setdefault(i, len(order)), c))
    return list(order), np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def _incidence(cap_tools: np.ndarray, n_tools: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(cap_tools.shape[0]), cap_tools.shape[1])
    cols = cap_tools.ravel()
    keep = cols >= 0
    data = np.ones(int(keep.sum()))
    m = sp.csr_matrix((data, (rows[keep], cols[keep])), shape=(cap_tools.shape[0], n_tools))
    m.data[:] = 1.0  # a tool listed twice counts once
    return m


def _check_drift_day(key: str, day: int | None, days: int) -> None:
    if day is not None and day >= days:
        raise ConfigError(f"data.simulate.{key}", f"day {day} is not before the end ({days} days)")


def _capability_tools(ds: Dataset, tpos: Mapping[str, int]) -> np.ndarray:
    """(n_caps, max tools) tool indices of each capability, -1 padded."""
    tool_lists = ds.capabilities["tool_ids"].to_pylist()
    width = max(1, *(len(t) for t in tool_lists))
    cap_tools = np.full((len(tool_lists), width), -1, dtype=np.int64)
    for k, tools in enumerate(tool_lists):
        if not tools:
            raise DataError(
                "capabilities", "a capability needs at least one tool", row=k, field="tool_ids"
            )
        for j, t in enumerate(tools):
            if t not in tpos:
                raise DataError("capabilities", f"unknown tool id {t!r}", row=k, field="tool_ids")
            cap_tools[k, j] = tpos[t]
    return cap_tools


def _capability_categories(ds: Dataset, cap_tools: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sorted categories, and each capability's: the most common among its tools."""
    tool_cat = ds.tools["category"].to_pylist()
    categories = sorted(set(tool_cat))
    cat_of_tool = np.array([categories.index(c) for c in tool_cat])
    cap_category = np.array(
        [np.bincount(cat_of_tool[row[row >= 0]]).argmax() for row in cap_tools], dtype=np.int64
    )
    return categories, cap_category


def _available_from(ds: Dataset, start: datetime) -> np.ndarray:
    """First day index each capability exists (``created_at``; 0 when unknown or earlier)."""
    created = ds.capabilities["created_at"]
    available_from = np.zeros(ds.capabilities.num_rows, dtype=np.int64)
    if created.null_count < len(created):
        micros = pc.subtract(created, pa.scalar(start, created.type)).cast(pa.int64())
        day_idx = pc.fill_null(micros, 0).to_numpy() // 86_400_000_000
        available_from = np.clip(day_idx, 0, None).astype(np.int64)
    return available_from


def _intent_labels(
    ds: Dataset, cpos: Mapping[str, int]
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Traffic intents, their texts, label rows (intent, capability index) and each
    intent's home capability (its first label)."""
    intent_ids, lab_i, lab_c = _traffic_labels(ds)
    if not intent_ids:
        raise DataError("labels", "no train or valid labels: nothing to simulate")
    for c in lab_c:
        if c not in cpos:
            raise DataError("labels", f"unknown capability id {c!r}", field="capability_id")
    lab_c_idx = np.array([cpos[c] for c in lab_c])
    texts = dict(
        zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
    )
    missing = [i for i in intent_ids if i not in texts]
    if missing:
        raise DataError(
            "labels", "intent ids without a row in intents", field="intent_id", examples=missing
        )
    home = np.full(len(intent_ids), -1, dtype=np.int64)
    for i, c in zip(lab_i[::-1], lab_c_idx[::-1], strict=True):
        home[i] = c  # the first label of each intent wins
    return intent_ids, [texts[i] for i in intent_ids], lab_i, lab_c_idx, home


def _relevance(
    cap_tools: np.ndarray,
    n_tools: int,
    n_intents: int,
    lab_i: np.ndarray,
    lab_c_idx: np.ndarray,
    partial: float,
) -> np.ndarray:
    """q: 1 for a labeled capability, else ``partial`` times the largest tool-set Jaccard
    with one of the intent's labeled capabilities."""
    inc = _incidence(cap_tools, n_tools)
    size = np.asarray(inc.sum(axis=1)).ravel()
    inter = (inc[lab_c_idx] @ inc.T).toarray()
    jaccard = inter / (size[lab_c_idx][:, None] + size[None, :] - inter)
    relevance = np.zeros((n_intents, cap_tools.shape[0]))
    np.maximum.at(relevance, lab_i, partial * jaccard)
    relevance[lab_i, lab_c_idx] = 1.0
    return relevance


def _record_mix_shares(world: World) -> None:
    """The favoured categories' share of requests, the day before the mix drift and of."""
    mix = world.drift.get("intent_mix")
    if mix is None:
        return
    favoured = np.isin(world.intent_category(), mix["category_indices"])
    for key, d in (("share_before", mix["day"] - 1), ("share_after", mix["day"])):
        share = world.intent_distribution(d)[favoured].sum() if d >= 0 else None
        mix[key] = None if share is None else float(share)


def build_world(ds: Dataset, cfg: CaprankConfig) -> World:
    """The ground truth for simulating ``ds`` under ``cfg`` (seeded by ``cfg.data.seed``)."""
    sim, synth = cfg.data.simulate, cfg.data.synth
    rng = np.random.default_rng([cfg.data.seed, 0x301D])
    start = start_datetime(synth)
    cap_ids = ds.capabilities["capability_id"].to_pylist()
    tool_ids = ds.tools["tool_id"].to_pylist()
    if not cap_ids or not tool_ids:
        raise DataError("<dataset>", "the catalog needs tools and capabilities")
    cap_tools = _capability_tools(ds, {t: j for j, t in enumerate(tool_ids)})
    categories, cap_category = _capability_categories(ds, cap_tools)
    intent_ids, intent_texts, lab_i, lab_c_idx, home = _intent_labels(
        ds, {c: j for j, c in enumerate(cap_ids)}
    )
    relevance = _relevance(
        cap_tools, len(tool_ids), len(intent_ids), lab_i, lab_c_idx, sim.partial_relevance
    )
    # the draws, in this order (the seed's stream)
    popularity = rng.lognormal(0.0, sim.popularity_sigma, len(cap_ids))
    popularity /= popularity.sum()
    reliability = rng.uniform(sim.min_tool_reliability, 1.0, len(tool_ids))
    mu = np.log(sim.latency_median_ms) + rng.normal(0.0, LATENCY_SPREAD, len(tool_ids))
    sigma = rng.uniform(*LATENCY_SIGMA_RANGE, len(tool_ids))
    tie_order = np.argsort(rng.permutation(len(cap_ids)))
    reward = cfg.training.reward
    world = World(
        seed=cfg.data.seed,
        start=start,
        period=start.toordinal() if synth.start_date else 0,
        days=synth.days,
        capability_ids=cap_ids,
        tool_ids=tool_ids,
        intent_ids=intent_ids,
        intent_texts=intent_texts,
        capability_texts=capability_texts(ds.capabilities, ds.tools),
        categories=categories,
        cap_category=cap_category,
        cap_tools=cap_tools,
        intent_home=home,
        available_from=_available_from(ds, start),
        relevance=relevance,
        capability_popularity=popularity,
        tool_reliability=reliability,
        latency_mu=mu,
        latency_sigma=sigma,
        tie_order=tie_order,
        slate_size=sim.slate_size,
        position_bias=sim.position_bias,
        partial_if_tool_fails=sim.partial_if_tool_fails,
        partial_if_unfit=sim.partial_if_unfit,
        reward_values=(reward.success, reward.partial, reward.failure),
        latency_penalty_per_s=reward.latency_penalty_per_s,
    )
    world.drift = _plan_drift(world, cfg, rng)
    _record_mix_shares(world)
    return world


def _plan_drift(world: World, cfg: CaprankConfig, rng: np.random.Generator) -> dict:
    """Which tool, which capabilities, which categories drift, and from which day."""
    sim = cfg.data.simulate
    drift: dict = {}
    _check_drift_day("drift_tool_reliability_day", sim.drift_tool_reliability_day, world.days)
    _check_drift_day("drift_new_capabilities_day", sim.drift_new_capabilities_day, world.days)
    _check_drift_day("drift_intent_mix_day", sim.drift_intent_mix_day, world.days)
    day = sim.drift_tool_reliability_day
    if day is not None:
        # the tool carrying the most traffic, so the drop shows in the logs
        traffic = (
            np.bincount(world.intent_home, minlength=world.n_capabilities)
            * world.capability_popularity
        )
        per_tool = np.zeros(len(world.tool_ids) + 1)
        np.add.at(per_tool, world.cap_tools, traffic[:, None])
        tool = int(np.argmax(per_tool[:-1]))
        drift["tool_reliability"] = {
            "day": day,
            "tool_index": tool,
            "tool_id": world.tool_ids[tool],
            "factor": sim.drift_reliability_factor,
            "reliability_before": float(world.tool_reliability[tool]),
            "reliability_after": float(world.tool_reliability[tool] * sim.drift_reliability_factor),
        }
    day = sim.drift_new_capabilities_day
    if day is not None:
        new = np.flatnonzero(world.available_from >= day)
        new = new[np.isin(new, world.intent_home)]
        if len(new) == 0:
            raise ConfigError(
                "data.simulate.drift_new_capabilities_day",
                f"no capability with traffic is created on or after day {day} (see created_at)",
            )
        drift["new_capabilities"] = {
            "day": day,
            "capability_indices": new.tolist(),
            "capability_ids": [world.capability_ids[k] for k in new],
            "launch_days": {world.capability_ids[k]: int(world.available_from[k]) for k in new},
            "boost": sim.new_capability_boost,
        }
    day = sim.drift_intent_mix_day
    if day is not None:
        present = np.unique(world.cap_category[world.intent_home])
        n_boost = max(1, len(present) // 4)
        chosen = np.sort(rng.choice(present, size=n_boost, replace=False))
        drift["intent_mix"] = {
            "day": day,
            "category_indices": chosen.tolist(),
            "categories": [world.categories[c] for c in chosen],
            "boost": sim.intent_mix_boost,
        }
    return drift
