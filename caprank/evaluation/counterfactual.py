"""Counterfactual (off-policy) value of a new ranking policy from logged interactions.

Each logged event carries the logging policy's probability of the action it took
(``propensity``, the interactions schema's column) and the reward it earned. A target
policy, possibly stochastic, gives its own probability of that same action. With
importance weights w = pi_target / propensity:

- IPS:   V = mean(w * r)             (unbiased when propensities are right and > 0)
- SNIPS: V = sum(w * r) / sum(w)     (self-normalized: a little bias, much less variance)

The action is the data contract's (docs/data-format.md): capability c shown at rank k,
so both ``propensity`` and the target probability are P(policy puts c at rank k | context),
not the probability of the whole ranking. The serving policy logs exactly that
(``caprank.online.explore``); ``placement_target_probabilities`` reads a target policy's
from its placement matrix. With the user's choice of rank depending only on the rank, the
estimate is unbiased for the target's value wherever the logging policy could put every
capability the target shows at the rank it shows it.

Confidence intervals come from a seeded percentile bootstrap over events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from caprank.config import EvaluationConfig, RewardConfig
from caprank.errors import DataError
from caprank.evaluation.bootstrap import Interval, bootstrap_statistics, percentile_interval


@dataclass
class CounterfactualEstimate:
    """IPS and SNIPS estimates of the target policy's value, with diagnostics."""

    n_events: int
    ips: Interval
    snips: Interval
    logged_value: float  # mean reward the logging policy actually earned
    effective_sample_size: float  # (sum w)^2 / sum w^2
    max_weight: float
    clipped_share: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_events": self.n_events,
            "ips": self.ips.to_dict(),
            "snips": self.snips.to_dict(),
            "logged_value": self.logged_value,
            "effective_sample_size": self.effective_sample_size,
            "max_weight": self.max_weight,
            "clipped_share": self.clipped_share,
        }


def _column(values: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if n is not None and arr.size != n:
        raise DataError(name, f"{arr.size} values for {n} events")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise DataError(name, "value is not finite", row=int(bad[0]), field=name)
    return arr


def estimate_policy_value(
    rewards: np.ndarray,
    propensities: np.ndarray,
    target_probabilities: np.ndarray,
    cfg: EvaluationConfig,
) -> CounterfactualEstimate:
    """IPS / SNIPS value of the target policy with ``cfg.confidence`` bootstrap intervals
    (``cfg.bootstrap_samples`` resamples, seed ``cfg.seed``; weights clipped at
    ``cfg.ips_max_weight`` when set)."""
    r = _column(rewards, "rewards")
    n = r.size
    if n == 0:
        raise DataError("rewards", "no logged events to estimate from")
    p = _column(propensities, "propensity", n)
    pi = _column(target_probabilities, "target_probability", n)
    bad = np.flatnonzero(~((p > 0) & (p <= 1)))
    if bad.size:
        raise DataError(
            "propensity", f"{p[bad[0]]} is not in (0, 1]", row=int(bad[0]), field="propensity"
        )
    bad = np.flatnonzero(~((pi >= 0) & (pi <= 1)))
    if bad.size:
        raise DataError(
            "target_probability",
            f"{pi[bad[0]]} is not in [0, 1]",
            row=int(bad[0]),
            field="target_probability",
        )
    w = pi / p
    clipped = 0.0
    if cfg.ips_max_weight is not None:
        clipped = float(np.mean(w > cfg.ips_max_weight))
        w = np.minimum(w, cfg.ips_max_weight)
    wr = w * r

    def ips(wr_b: np.ndarray, _w_b: np.ndarray) -> np.ndarray:
        return wr_b.mean(axis=1)

    def snips(wr_b: np.ndarray, w_b: np.ndarray) -> np.ndarray:
        total = w_b.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, wr_b.sum(axis=1) / total, np.nan)

    # Same seed: both estimators see the same resamples.
    ips_stats = bootstrap_statistics((wr, w), ips, cfg.bootstrap_samples, cfg.seed)
    snips_stats = bootstrap_statistics((wr, w), snips, cfg.bootstrap_samples, cfg.seed)
    w_sum = float(w.sum())
    snips_value = float(wr.sum() / w_sum) if w_sum > 0 else float("nan")
    ess = w_sum**2 / float(np.sum(w**2)) if w_sum > 0 else 0.0
    return CounterfactualEstimate(
        n_events=n,
        ips=percentile_interval(float(wr.mean()), ips_stats, cfg.confidence),
        snips=percentile_interval(snips_value, snips_stats, cfg.confidence),
        logged_value=float(r.mean()),
        effective_sample_size=float(ess),
        max_weight=float(w.max()),
        clipped_share=clipped,
    )


def _selected(candidate_scores: Sequence[np.ndarray], selected_positions: np.ndarray) -> np.ndarray:
    pos = np.asarray(selected_positions, dtype=np.int64).ravel()
    if pos.size != len(candidate_scores):
        raise DataError(
            "selected_positions", f"{pos.size} positions for {len(candidate_scores)} events"
        )
    for i, (s, k) in enumerate(zip(candidate_scores, pos, strict=True)):
        if not 0 <= k < len(s):
            raise DataError("selected_positions", f"{k} outside the {len(s)} candidates", row=i)
    return pos


def softmax_target_probabilities(
    candidate_scores: Sequence[np.ndarray], selected_positions: np.ndarray, temperature: float
) -> np.ndarray:
    """pi(selected | candidates) for the policy that samples softmax(scores / temperature)."""
    pos = _selected(candidate_scores, selected_positions)
    out = np.empty(pos.size, dtype=np.float64)
    for i, (s, k) in enumerate(zip(candidate_scores, pos, strict=True)):
        z = np.asarray(s, dtype=np.float64) / temperature
        z = np.exp(z - z.max())
        out[i] = z[k] / z.sum()
    return out


def greedy_target_probabilities(
    candidate_scores: Sequence[np.ndarray], selected_positions: np.ndarray
) -> np.ndarray:
    """pi(selected | candidates) for the deterministic policy taking the best-scored
    candidate (ties: the earliest listed), so 1 where it matches the logged action, else 0."""
    pos = _selected(candidate_scores, selected_positions)
    best = np.array([int(np.argmax(np.asarray(s))) for s in candidate_scores], dtype=np.int64)
    return (best == pos).astype(np.float64)


def placement_target_probabilities(
    placements: Sequence[np.ndarray], selected: np.ndarray, ranks: np.ndarray
) -> np.ndarray:
    """pi(selected at its logged rank) per event from the target's placement matrix
    ``P[i, k]`` (candidate i at 0-based rank k; e.g.
    ``caprank.online.explore.placement_probabilities``). ``selected``: the candidate's row,
    ``ranks``: the logged 1-based rank."""
    sel = np.asarray(selected, dtype=np.int64).ravel()
    rk = np.asarray(ranks, dtype=np.int64).ravel()
    if sel.size != len(placements) or rk.size != len(placements):
        raise DataError(
            "rank", f"{sel.size} candidates, {rk.size} ranks for {len(placements)} events"
        )
    out = np.empty(sel.size, dtype=np.float64)
    for i, (m, c, k) in enumerate(zip(placements, sel, rk, strict=True)):
        m = np.asarray(m, dtype=np.float64)
        if not (0 <= c < m.shape[0] and 1 <= k <= m.shape[1]):
            raise DataError("rank", f"candidate {c} at rank {k} outside {m.shape}", row=i)
        out[i] = m[c, k - 1]
    return out


def outcome_rewards(outcomes: Sequence[str], reward: RewardConfig) -> np.ndarray:
    """Reward of each logged outcome (success / partial / failure) from the reward config."""
    table = {"success": reward.success, "partial": reward.partial, "failure": reward.failure}
    out = np.empty(len(outcomes), dtype=np.float64)
    for i, o in enumerate(outcomes):
        if o not in table:
            raise DataError("outcome", f"unknown outcome {o!r}", row=i, field="outcome")
        out[i] = table[o]
    return out
