"""Retraining triggers: the on_degradation policy (a two-proportion test of success
rates) and the embedding KS / prediction PSI checks on served traffic."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from caprank.experiments.margin import worse_by_margin
from caprank.monitoring import monitor
from caprank.monitoring.served import served_drift, served_intents
from caprank.monitoring.windows import window_events
from tests.test_monitoring import _cfg, _logs


@pytest.fixture(scope="module")
def catalog():
    from caprank.data.synth import synthesize

    return synthesize(_cfg(0))


def test_two_proportion_test_needs_significance_not_just_a_gap():
    # the same 10-point drop: not significant on 100 events a side, significant on 2,000
    small = worse_by_margin((40, 100), (50, 100), margin=0.02, alpha=0.05)
    large = worse_by_margin((800, 2000), (1000, 2000), margin=0.02, alpha=0.05)
    assert not small.worse and small.p_value > 0.05
    assert large.worse and large.p_value < 1e-6
    # within the margin, however many events: not worse
    assert not worse_by_margin((4900, 10000), (5000, 10000), margin=0.02, alpha=0.05).worse
    # a better version is never flagged; too few events are not tested at all
    assert worse_by_margin((60, 100), (50, 100), margin=0.0, alpha=0.05).p_value > 0.9
    few = worse_by_margin((0, 3), (3, 3), margin=0.02, alpha=0.05, min_events=10)
    assert few.p_value is None and not few.worse and "too little feedback" in few.reason
    with pytest.raises(ValueError, match="successes <= events"):
        worse_by_margin((5, 3), (1, 3), margin=0.02, alpha=0.05)


def _degrade(ds, cfg, share: float, seed: int = 0):
    """Turn ``share`` of the current window's successes into failures."""
    _, _, (_, current_start, _) = window_events(ds, cfg.monitoring)
    log = ds.interactions
    ts = log["timestamp"]
    in_current = pc.greater_equal(ts, pa.scalar(current_start, ts.type)).to_numpy(
        zero_copy_only=False
    )
    success = pc.equal(log["outcome"], "success").to_numpy(zero_copy_only=False)
    flip = in_current & success & (np.random.default_rng(seed).random(log.num_rows) < share)
    outcomes = np.where(flip, "failure", np.asarray(log["outcome"].to_pylist(), dtype=object))
    column = log.schema.get_field_index("outcome")
    out = dataclasses.replace(ds)
    out.interactions = log.set_column(
        column, log.schema.field(column), pa.array(outcomes.tolist(), log["outcome"].type)
    )
    return out


def test_on_degradation_trains_when_success_drops_significantly(catalog):
    cfg = _cfg(3)
    ds = _logs(catalog, cfg)
    kw = {"policy": "on_degradation", "production_exists": True, "served": False}
    steady = monitor(ds, cfg, **kw)
    assert not steady.should_train and "no degradation" in steady.reason
    assert steady.degradation is not None and steady.degradation.p_value is not None
    degraded = monitor(_degrade(ds, cfg, 0.6), cfg, **kw)
    assert degraded.should_train and degraded.reason.startswith("degradation: success rate")
    assert degraded.degradation.worse and degraded.degradation.p_value < 0.05
    assert degraded.to_dict()["degradation"]["worse"] is True
    assert "Degradation:" in degraded.to_markdown()
    # a drop inside the margin does not train; nor does on_drift react to outcomes alone
    cfg.monitoring.degradation_margin = 0.5
    assert not monitor(_degrade(ds, cfg, 0.6), cfg, **kw).should_train


def _embed(texts):
    """A fake encoder: a fixed pseudo-random vector per text."""
    rows = [
        np.frombuffer(hashlib.sha256(t.encode()).digest()[:16], dtype=np.uint8) / 255.0
        for t in texts
    ]
    return np.stack(rows).astype(np.float64)


def test_served_checks_fire_on_a_shift_and_not_on_a_resample():
    cfg = _cfg(1)
    rng = np.random.default_rng(0)
    pool = [f"intent {i}" for i in range(300)]
    ref = list(rng.choice(pool, 800))
    same = list(rng.choice(pool, 800))
    shifted = list(rng.choice(pool[:40], 800))  # traffic concentrates on a few intents

    def score(texts):
        return np.array([len(t) + int(t.split()[1]) % 7 for t in texts], dtype=float)

    quiet = served_drift(ref, same, cfg, embed=_embed, score=score)
    assert not quiet["embedding_drift"].drifted and not quiet["prediction_drift"].drifted
    moved = served_drift(ref, shifted, cfg, embed=_embed, score=score)
    assert moved["embedding_drift"].drifted and moved["prediction_drift"].drifted
    assert moved["embedding_drift"].details["source"].startswith("served traffic")
    assert moved["prediction_drift"].details["distinct_intents"] == len(set(ref + shifted))


def test_monitor_runs_the_served_checks_on_the_windows_intents(catalog):
    cfg = _cfg(100, drift_intent_mix_day=6)
    ds = _logs(catalog, cfg)
    seen: list[int] = []

    def score(texts):
        seen.append(len(texts))
        return np.array([float(len(t)) for t in texts])

    result = monitor(ds, cfg, policy="on_drift", production_exists=True, served=True,
                     embed=_embed, score=score)  # fmt: skip
    checks = result.drift.checks
    assert {"embedding_drift", "prediction_drift"} <= set(checks)
    ref_n, cur_n = checks["prediction_drift"].details["requests"]
    assert (ref_n, cur_n) == (result.bounds.reference_events, result.bounds.current_events)
    assert seen == [checks["prediction_drift"].details["distinct_intents"]]
    fired = [name for name, c in checks.items() if c.drifted]
    assert result.should_train and result.reason == "drift: " + ", ".join(fired)
    off = monitor(ds, cfg, policy="on_drift", production_exists=True, served=False)
    assert "embedding_drift" not in off.drift.checks


def test_served_intents_sample_is_seeded():
    events = pa.table({"intent_text": [f"t{i % 50}" for i in range(500)] + ["", None]})
    a, b = served_intents(events, 100, 7), served_intents(events, 100, 7)
    assert a == b and len(a) == 100 and "" not in a
    assert len(served_intents(events, 10_000, 7)) == 500


@pytest.mark.slow
def test_served_checks_with_the_real_encoder_and_serving_model(catalog, tmp_path):
    cfg = _cfg(3)
    cfg.paths.home = tmp_path / "home"
    cfg.monitoring.served_sample = 150
    result = monitor(_logs(catalog, cfg), cfg, policy="on_drift", production_exists=True,
                     served=True)  # fmt: skip
    pred = result.drift.checks["prediction_drift"]
    emb = result.drift.checks["embedding_drift"]
    assert pred.details["model_version"] and pred.details["requests"] == [150, 150]
    assert emb.details["dims"] > 16 and np.isfinite(pred.value)


def test_served_checks_before_any_promotion_score_with_the_dense_ranker(catalog, tmp_path):
    """A first nightly run against a real registry (no `production` alias yet) must not
    fail its monitor: what serves then is the dense ranker, and that is what is scored."""
    from caprank.monitoring.served import serving_scorer

    cfg = _cfg(0)
    cfg.paths.home = tmp_path / "home"
    cfg.services.mlflow_tracking_uri = f"sqlite:///{tmp_path / 'registry.db'}"
    with serving_scorer(cfg, catalog) as served:
        top = served.score(["convert a document", "book a flight"])
        vecs = served.embed(["convert a document"])
    assert served.version == "dense" and np.isfinite(top).all()
    assert served.text_model == cfg.embedding.text_model and vecs.shape[0] == 1
