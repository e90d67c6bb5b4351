"""The promotion gate: better, worse, within noise, guardrail breaches, no production model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from caprank.config import EvaluationConfig
from caprank.errors import DataError
from caprank.evaluation.gate import decide, paired_bootstrap_delta

N = 2000


def _reciprocal_ranks(rng: np.random.Generator, p: float) -> np.ndarray:
    """Per-query RR of a ranker that puts the relevant item at a geometric(p) rank."""
    return 1.0 / np.minimum(rng.geometric(p, N), 463)


@pytest.fixture
def production() -> np.ndarray:
    return _reciprocal_ranks(np.random.default_rng(0), 0.35)


def _gate(challenger, production, cfg=None, ece=0.05, p99=40.0):
    return decide(
        challenger, production, ece=ece, scoring_p99_ms=p99, cfg=cfg or EvaluationConfig()
    )


def test_better_challenger_is_improved(production):
    rng = np.random.default_rng(1)
    # Same queries: most keep their rank, a third move the relevant item up one place.
    ranks = 1.0 / production
    better = 1.0 / np.where(rng.random(N) < 0.33, np.maximum(ranks - 1, 1), ranks)
    d = _gate(better, production, ece=np.float64(0.05), p99=np.float64(40.0))
    assert d.improved and d.reason.startswith("improved")
    assert d.delta.low > 0 and d.delta.estimate == pytest.approx(better.mean() - production.mean())
    assert d.checks == {
        "latency": True,
        "calibration": True,
        "floor": True,
        "beats_production": True,
    }
    assert json.loads(json.dumps(d.to_dict()))["improved"] is True


def test_worse_challenger_is_not_improved(production):
    worse = _reciprocal_ranks(np.random.default_rng(2), 0.25)
    d = _gate(worse, production)
    assert not d.improved and d.delta.high < 0
    assert not d.checks["beats_production"] and "does not clear" in d.reason


def test_difference_within_noise_is_not_improved(production):
    # An equally good ranker with independent errors: no real gain, the interval spans 0.
    same_quality = _reciprocal_ranks(np.random.default_rng(3), 0.35)
    d = _gate(same_quality, production)
    assert d.delta.low < 0 < d.delta.high
    assert not d.improved


def test_small_consistent_gain_needs_pairing(production):
    """+0.002 on every query is certain when pairs are kept, invisible to an unpaired test."""
    d = _gate(production + 0.002, production)
    assert d.improved and d.delta.low == pytest.approx(0.002)
    rng = np.random.default_rng(4)
    unpaired_low = np.quantile(
        [
            (production + 0.002)[rng.integers(0, N, N)].mean()
            - production[rng.integers(0, N, N)].mean()
            for _ in range(300)
        ],
        0.025,
    )
    assert unpaired_low < 0


def test_min_improvement_is_required(production):
    cfg = EvaluationConfig(min_improvement=0.01)
    assert not _gate(production + 0.005, production, cfg).improved
    assert _gate(production + 0.02, production, cfg).improved


def test_guardrail_breaches_block_a_better_model(production):
    better = np.minimum(production + 0.1, 1.0)
    slow = _gate(better, production, p99=250.0)
    assert not slow.improved and not slow.checks["latency"] and "p99 250.0 ms" in slow.reason
    miscalibrated = _gate(better, production, ece=0.4)
    assert not miscalibrated.improved and "ECE 0.400 > 0.250" in miscalibrated.reason
    assert slow.checks["beats_production"]  # it was better; the guardrail alone blocked it


def test_without_production_floor_and_guardrails_decide(production):
    d = _gate(production, None)
    assert d.improved and d.delta is None and d.production is None
    assert "no production model" in d.reason
    weak = _gate(np.full(N, 0.1), None)
    assert not weak.improved and "floor" in weak.reason
    assert not _gate(production, None, ece=0.3).improved


def test_gate_is_deterministic_and_checks_alignment(production):
    ch = _reciprocal_ranks(np.random.default_rng(5), 0.4)
    a, b = _gate(ch, production), _gate(ch, production)
    assert a.to_dict() == b.to_dict()
    other_seed = _gate(ch, production, EvaluationConfig(seed=1))
    assert other_seed.delta.low != a.delta.low
    with pytest.raises(DataError, match="same queries"):
        decide(
            ch,
            production,
            ece=0.1,
            scoring_p99_ms=10.0,
            cfg=EvaluationConfig(),
            challenger_query_ids=np.arange(N),
            production_query_ids=np.arange(N)[::-1],
        )
    with pytest.raises(DataError, match="per-query values"):
        paired_bootstrap_delta(ch, production[:-1], 100, 0.95, 0)
