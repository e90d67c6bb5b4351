"""Drift checks: each injected shift is detected, and with no drift the whole result raises
a false alarm in at most 1 of 20 seeds (<= 5%)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from caprank.config import MonitoringConfig
from caprank.errors import DataError
from caprank.monitoring.drift import (
    DriftWindow,
    detect_drift,
    population_stability_index,
)

NOW = datetime(2026, 11, 1, 2, tzinfo=UTC)
DIMS = 32


def _window(rng: np.random.Generator, n: int = 400, age_hours: float = 24.0) -> DriftWindow:
    """Capability features, unit-norm anisotropic embeddings, scores and feature times."""
    features = pd.DataFrame(
        {
            "tool_count": rng.integers(1, 4, n),
            "success_rate": rng.beta(5, 2, n),
            "avg_execution_time_ms": rng.lognormal(5, 0.5, n),
            "usage_count_7d": rng.poisson(20, n),
            "pagerank_score": rng.gamma(2.0, 0.001, n),
            "clustering_coefficient": rng.uniform(0, 1, n),
        }
    )
    emb = rng.normal(size=(n, DIMS)) * np.linspace(1.0, 0.1, DIMS)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = rng.normal(0.3, 0.1, n)
    stamps = np.array([NOW - timedelta(hours=h) for h in rng.uniform(0, age_hours, n)])
    return DriftWindow(features, emb, scores, stamps)


def _pair(seed: int) -> tuple[DriftWindow, DriftWindow]:
    rng = np.random.default_rng(seed)
    return _window(rng), _window(rng)


def _run(ref: DriftWindow, cur: DriftWindow, cfg: MonitoringConfig | None = None, html=False):
    return detect_drift(ref, cur, cfg or MonitoringConfig(), now=NOW, html=html)


@pytest.mark.slow
def test_no_drift_false_alarm_rate_at_most_5_percent():
    alarms = []
    for seed in range(20):
        result = _run(*_pair(seed))
        assert set(result.checks) == {
            "feature_drift",
            "embedding_drift",
            "prediction_drift",
            "feature_staleness",
            "missing_rate",
            "embedding_variance",
        }
        if result.drifted:
            alarms.append((seed, result.to_dict()["fired"]))
    assert len(alarms) <= 1, alarms


def test_feature_mean_shift_is_detected_via_evidently():
    ref, cur = _pair(100)
    cur.features["success_rate"] = cur.features["success_rate"] - 0.08
    result = _run(ref, cur, html=True)
    check = result.checks["feature_drift"]
    assert check.drifted and check.details["drifted_columns"] == ["success_rate"]
    assert result.to_dict()["fired"] == ["feature_drift"]
    assert result.drifted and result.retrain
    assert "<html" in result.html.lower() and "success_rate" in result.html
    no_retrain = _run(ref, cur, MonitoringConfig(retrain_policy="never"))
    assert no_retrain.drifted and not no_retrain.retrain


def test_rotated_and_shifted_embeddings_are_detected():
    ref, cur = _pair(101)
    rotation, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(DIMS, DIMS)))
    rotated = DriftWindow(embeddings=cur.embeddings @ rotation)
    res = detect_drift(DriftWindow(embeddings=ref.embeddings), rotated, MonitoringConfig())
    assert res.checks["embedding_drift"].drifted
    assert not res.checks["embedding_variance"].drifted  # a rotation keeps total variance
    shifted = cur.embeddings + np.eye(DIMS)[0] * 0.15
    shifted /= np.linalg.norm(shifted, axis=1, keepdims=True)
    res = detect_drift(
        DriftWindow(embeddings=ref.embeddings), DriftWindow(embeddings=shifted), MonitoringConfig()
    )
    assert res.checks["embedding_drift"].drifted
    assert 0 in res.checks["embedding_drift"].details["worst_dims"]


def test_shifted_score_distribution_is_detected_by_psi():
    ref, cur = _pair(102)
    res = detect_drift(
        DriftWindow(scores=ref.scores), DriftWindow(scores=cur.scores + 0.05), MonitoringConfig()
    )
    assert res.checks["prediction_drift"].drifted and res.checks["prediction_drift"].value > 0.2
    same = detect_drift(
        DriftWindow(scores=ref.scores), DriftWindow(scores=cur.scores), MonitoringConfig()
    )
    assert not same.drifted


def test_collapsed_embedding_variance_is_detected():
    ref, cur = _pair(103)
    rng = np.random.default_rng(0)
    collapsed = ref.embeddings[:1] + rng.normal(scale=0.01, size=cur.embeddings.shape)
    collapsed /= np.linalg.norm(collapsed, axis=1, keepdims=True)
    res = _run(ref, DriftWindow(cur.features, collapsed, cur.scores, cur.feature_timestamps))
    check = res.checks["embedding_variance"]
    assert check.drifted and check.value < 0.01
    assert check.details["ratio_to_reference"] < 0.01
    assert res.checks["embedding_variance"].value == pytest.approx(
        1 - np.linalg.norm(collapsed.mean(axis=0)) ** 2, rel=0.01
    )


def test_stale_features_are_detected():
    ref, cur = _pair(104)
    cur.feature_timestamps = cur.feature_timestamps - timedelta(hours=60)
    res = _run(ref, cur)
    check = res.checks["feature_staleness"]
    assert check.drifted and 60 < check.value <= 84
    assert res.to_dict()["fired"] == ["feature_staleness"]
    with pytest.raises(ValueError, match="now"):
        detect_drift(ref, cur, MonitoringConfig())
    with pytest.raises(DataError, match="timezone"):
        detect_drift(ref, cur, MonitoringConfig(), now=datetime(2026, 11, 1))


def test_missing_values_are_detected():
    ref, cur = _pair(105)
    cur.features.loc[cur.features.index[:40], "avg_execution_time_ms"] = np.nan
    cur.embeddings[:3] = np.nan
    res = _run(ref, cur)
    check = res.checks["missing_rate"]
    assert check.drifted and check.details["worst_column"] == "avg_execution_time_ms"
    assert check.value == pytest.approx(0.1)
    assert check.details["rates"]["embedding"] == pytest.approx(3 / 400)
    assert not res.checks["feature_drift"].drifted  # Evidently drops the NaNs it is given
    dropped = _run(ref, DriftWindow(cur.features.drop(columns=["tool_count"]), cur.embeddings))
    assert dropped.checks["missing_rate"].details["rates"]["tool_count"] == 1.0


def test_psi_by_hand_and_json():
    ref = np.arange(100, dtype=float)
    cur = np.full(50, 99.0)
    eps = 1e-4
    expected = 3 * (eps - 0.25) * math.log(eps / 0.25) + (1 - 0.25) * math.log(1 / 0.25)
    assert population_stability_index(ref, cur, bins=4, epsilon=eps) == pytest.approx(expected)
    assert population_stability_index(ref, ref, bins=4, epsilon=eps) == 0.0
    res = _run(*_pair(106))
    assert json.loads(json.dumps(res.to_dict()))["drifted"] == res.drifted
