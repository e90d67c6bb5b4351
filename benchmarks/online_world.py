"""The small simulated world shared by the online-learning benchmark cells.

A synthesized catalog with simulated logs (``caprank.data.simulate``) whose ground truth
(``caprank.data.world``) is known: the truth of an intent on a day is the set of available
capabilities with the highest expected reward (relevance x reliability, less latency), so
a tool's reliability drop and a launch both move it. Text vectors come from the packaged
sentence encoder, cached under the run's home.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from caprank.config import CaprankConfig

SMALL = {
    "synth": {
        "n_tools": 60,
        "n_categories": 8,
        "n_capabilities": 120,
        "intents_per_capability": 6,
        "days": 14,
        "new_capability_fraction": 0.1,
    },
    "simulate": {"events_per_day": 500, "n_users": 200},
}
TRAINING = {
    "hidden_dim": 64,
    "heads": 2,
    "layers": 1,
    "lexical_dim": 32,
    "batch_size": 128,
    "max_steps": 600,
    "t_max": 600,
    "eval_every": 100,
    "checkpoint_every": 10_000,
    "patience": 3,
    "baselines": [],
    "device": "cpu",
    "torch_threads": 1,
}


def small_config(seed: int, home: Path, **simulate) -> CaprankConfig:
    data = {"seed": seed, "synth": SMALL["synth"], "simulate": {**SMALL["simulate"], **simulate}}
    cfg = CaprankConfig.model_validate(
        {"data": data, "training": {**TRAINING, "seed": seed}, "paths": {"home": str(home)}}
    )
    return cfg


def truth_mrr(world, scores: np.ndarray, day: int, rows: np.ndarray | None = None) -> float:
    """Traffic-weighted MRR on ``day``: each intent's relevant set is the available
    capabilities of highest expected reward; ``scores`` (n_intents, n_caps) in the
    world's capability order; ``rows``: intents to average over (default: all)."""
    avail = world.available(day)
    best = best_sets(world, day)
    s = np.where(avail[None, :], scores, -np.inf)
    top_rel = np.where(best, s, -np.inf).max(axis=1)
    rank = 1 + (s > top_rel[:, None]).sum(axis=1)
    w = world.intent_distribution(day)
    rows = np.arange(world.n_intents) if rows is None else rows
    return float((w[rows] / rank[rows]).sum() / w[rows].sum())


def bundle_scores(bundle, ds, world, encode) -> np.ndarray:
    """(n_intents, n_caps) scores of a bundle over ``ds``'s catalog, in world order."""
    from caprank.training.update import catalog_through

    inputs = catalog_through(bundle, ds, encode)
    scores = bundle.index(inputs).scores(encode(world.intent_texts), world.intent_texts)
    pos = {c: i for i, c in enumerate(inputs.capability_ids)}
    return scores[:, [pos[c] for c in world.capability_ids]]


def best_sets(world, day: int) -> np.ndarray:
    """(n_intents, n_caps) bool: the available capabilities of highest expected reward."""
    reward = np.where(world.available(day)[None, :], world.expected_reward_matrix(day), -np.inf)
    return reward >= reward.max(axis=1, keepdims=True) - 1e-9
