"""Experiment sizing (closed form vs textbook figures), sticky assignment, the mSPRT."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from caprank.experiments.analysis import (
    compare_proportions,
    msprt_log_lambda,
    msprt_threshold,
    proportion_diff,
)
from caprank.experiments.assignment import CONTROL, TREATMENT, assign, unit_of
from caprank.experiments.design import design, fixed_n, sequential_n, sequential_power


def test_fixed_n_matches_the_textbook_figure():
    # Fleiss (no continuity correction): 10% -> 12%, alpha 0.05 two-sided, power 0.8:
    # 3841 per arm (the figure of common calculators, e.g. Evan Miller's)
    assert fixed_n(0.10, 0.02, 0.05, 0.80) == 3841
    # the smallest n whose normal-approximation power (pooled variance under H0) reaches
    # the target: 50% -> 60% at alpha 0.05 and power 0.9 needs 519
    n = fixed_n(0.50, 0.10, 0.05, 0.90)
    assert n == 519 and _power(n, 0.5, 0.6) >= 0.9 > _power(n - 1, 0.5, 0.6)
    # statsmodels' arcsine approximation lands within 0.5% of the closed form
    approx = NormalIndPower().solve_power(proportion_effectsize(0.12, 0.10), alpha=0.05, power=0.8)
    assert fixed_n(0.10, 0.02, 0.05, 0.80) == pytest.approx(approx, rel=0.005)


def _power(n: int, p1: float, p2: float, alpha: float = 0.05) -> float:
    pbar = (p1 + p2) / 2
    se0 = math.sqrt(2 * pbar * (1 - pbar) / n)
    se1 = math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)
    return float(norm.cdf((abs(p2 - p1) - norm.ppf(1 - alpha / 2) * se0) / se1))


def test_unequal_share_needs_more_in_total_and_keeps_the_ratio():
    even = fixed_n(0.3, 0.05, 0.05, 0.8, share=0.5)
    plan = design(0.3, 0.05, 0.05, 0.8, share=0.2)
    assert plan.fixed_n_treatment == math.ceil(plan.fixed_n_control * 0.25)
    assert plan.fixed_n_control + plan.fixed_n_treatment > 2 * even


def test_sequential_plan_reaches_power_and_costs_more_than_one_look():
    n = sequential_n(0.6, 0.02, 0.05, 0.8)
    assert sequential_power(n, 0.6, 0.02, 0.05, 0.5) >= 0.8
    assert sequential_power(n - 1, 0.6, 0.02, 0.05, 0.5) < 0.8
    assert fixed_n(0.6, 0.02, 0.05, 0.8) < n < 3 * fixed_n(0.6, 0.02, 0.05, 0.8)


def test_bad_sizing_inputs_are_refused():
    with pytest.raises(ValueError, match="mde"):
        fixed_n(0.95, 0.1, 0.05, 0.8)
    with pytest.raises(ValueError, match="baseline"):
        fixed_n(0.0, 0.1, 0.05, 0.8)


def test_assignment_is_sticky_salted_and_follows_the_share():
    users = [f"user-{i}" for i in range(20000)]
    first = [assign("exp-a", u, 0.3) for u in users]
    assert first == [assign("exp-a", u, 0.3) for u in users]  # same unit, same arm
    share = Counter(first)[TREATMENT] / len(users)
    assert share == pytest.approx(0.3, abs=0.015)
    other = [assign("exp-b", u, 0.3) for u in users]
    agree = sum(a == b for a, b in zip(first, other, strict=True)) / len(users)
    assert agree == pytest.approx(0.3 * 0.3 + 0.7 * 0.7, abs=0.02)  # independent salts
    assert assign("exp-a", "x", 0.0) == CONTROL and assign("exp-a", "x", 1.0) == TREATMENT
    assert unit_of("u1", "s1") == "u1" and unit_of(None, "s1") == "s1"
    assert unit_of("u1", "s1", unit="session") == "s1"
    with pytest.raises(ValueError):
        unit_of(None, None)


def test_msprt_threshold_is_where_the_ratio_reaches_one_over_alpha():
    var, tau, alpha = 1e-4, 0.02, 0.05
    z = float(msprt_threshold(var, tau, alpha))
    assert float(msprt_log_lambda(z * math.sqrt(var), var, tau)) == pytest.approx(math.log(20))
    assert z > 1.96  # stricter than one fixed look


def _aa_trajectories(rng, runs: int, looks: int, per_look: int, p: float):
    n = np.arange(1, looks + 1) * per_look
    s_c = np.cumsum(rng.binomial(per_look, p, (runs, looks)), axis=1)
    s_t = np.cumsum(rng.binomial(per_look, p, (runs, looks)), axis=1)
    return n, s_c, s_t


def test_aa_false_positives_stay_under_alpha_with_hourly_peeks_but_naive_peeking_does_not():
    rng = np.random.default_rng(15)
    runs, alpha = 300, 0.05
    n, s_c, s_t = _aa_trajectories(rng, runs, looks=48, per_look=100, p=0.6)
    crossed = naive = 0
    for i in range(runs):
        c = compare_proportions("s", s_c[i], n, s_t[i], n, tau=0.02, alpha=alpha, min_per_arm=100)
        crossed += c.crossed_look is not None
        diff, var = proportion_diff(s_c[i], n, s_t[i], n)
        naive += bool(np.any(np.abs(diff) / np.sqrt(var) > 1.959964))
    assert crossed / runs <= alpha
    assert naive / runs > 2 * alpha  # what the sequential test protects against


def test_a_real_difference_is_found_and_the_always_valid_ci_covers_it():
    rng = np.random.default_rng(3)
    n = np.arange(1, 41) * 500
    s_c = np.cumsum(rng.binomial(500, 0.50, 40))
    s_t = np.cumsum(rng.binomial(500, 0.55, 40))
    c = compare_proportions("s", s_c, n, s_t, n, tau=0.05, alpha=0.05, min_per_arm=100)
    assert c.crossed_look is not None and c.p_value <= 0.05 and c.diff > 0
    assert c.ci_low < 0.05 < c.ci_high
    assert c.ci_high - c.ci_low > c.fixed_ci_high - c.fixed_ci_low  # the price of peeking
