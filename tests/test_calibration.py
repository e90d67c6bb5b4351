"""Value-head calibration: it lowers ECE, round-trips through the bundle, serves alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from caprank.evaluation.metrics import calibration_metrics
from caprank.model.bundle import BUNDLE_FILE, BundleError, load_bundle, save_bundle
from caprank.model.calibration import Calibration, CalibrationError, fit_calibration
from caprank.model.serving import BundleRanker
from caprank.training.stage import calibrate
from caprank.training.trainer import Trainer
from tests.train_fixtures import (
    fake_encode,
    tiny_bundle,
    tiny_model,
    tiny_prepared,
    tiny_training_cfg,
)

torch.set_num_threads(1)


def _miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw values in [-0.2, 1.2] (a regressor's output) whose true success rate is far
    from the value: much lower in the middle, overconfident at the top."""
    rng = np.random.default_rng(seed)
    raw = rng.uniform(-0.2, 1.2, n)
    true = 1.0 / (1.0 + np.exp(-(4.0 * raw - 3.0)))
    return raw, (rng.random(n) < true).astype(float)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_lowers_ece_on_held_out_data(method):
    raw, y = _miscalibrated(4000, seed=0)
    cal = fit_calibration(raw, y, method)
    test_raw, test_y = _miscalibrated(4000, seed=1)
    before = calibration_metrics(Calibration().apply(test_raw), test_y, 10).ece
    after = calibration_metrics(cal.apply(test_raw), test_y, 10).ece
    assert before > 0.15
    assert after < 0.04 and after < before / 4
    p = cal.apply(np.array([-5.0, 0.0, 0.5, 1.0, 7.0]))
    assert ((p >= 0) & (p <= 1)).all() and np.all(np.diff(p) >= 0)  # monotone


def test_one_outcome_class_gives_the_observed_rate():
    cal = fit_calibration(np.linspace(0, 1, 50), np.zeros(50), "platt")
    assert cal.apply(np.array([0.0, 1.0])).max() < 1e-3
    with pytest.raises(CalibrationError, match="2 values for 3 outcomes"):
        fit_calibration(np.zeros(2), np.zeros(3), "platt")


def test_calibration_json_round_trip_and_bad_input():
    cal = fit_calibration(*_miscalibrated(500, seed=2), "isotonic")
    again = Calibration.from_json(json.loads(json.dumps(cal.to_json())))
    raw = np.linspace(-1, 2, 31)
    np.testing.assert_array_equal(again.apply(raw), cal.apply(raw))
    assert Calibration.from_json(None) == Calibration()  # bundles from before calibration
    with pytest.raises(CalibrationError, match="platt"):
        Calibration.from_json({"method": "platt", "a": 1.0})
    with pytest.raises(CalibrationError, match="unknown method"):
        Calibration.from_json({"method": "beta"})


@pytest.fixture(scope="module")
def trained(tiny_cfg, tiny_dataset):
    cfg = tiny_training_cfg(tiny_cfg, max_steps=8, eval_every=4)
    prep = tiny_prepared(tiny_dataset, cfg)
    model = tiny_model(prep, cfg)
    Trainer(model, prep.data, cfg.training).fit()
    return cfg, prep, model


def test_fitted_on_validation_and_applied_identically_after_save_and_load(trained, tmp_path):
    cfg, prep, model = trained
    bundle = tiny_bundle(prep, model)
    bundle.calibration, info = calibrate(bundle.index(prep.inputs), prep, cfg)
    k = min(max(cfg.evaluation.cutoffs), len(prep.inputs.capability_ids))
    assert bundle.calibration.method == "platt"
    assert info["n"] == prep.n_valid * k
    assert info["valid_ece"] <= info["valid_ece_raw"]

    loaded = load_bundle(save_bundle(bundle, tmp_path / "bundle"))
    assert loaded.calibration == bundle.calibration
    texts = ["plan a trip", "convert this file"]
    vecs = fake_encode(texts)
    rows = np.array([3, 0, 5])
    index, again = bundle.index(prep.inputs), loaded.index(prep.inputs)
    for vec, text in zip(vecs, texts, strict=True):
        p = again.success_probability(vec, text, rows)
        np.testing.assert_allclose(p, index.success_probability(vec, text, rows), atol=1e-6)
        np.testing.assert_allclose(
            p, bundle.calibration.apply(index.values(vec, text, rows)), atol=1e-6
        )
        ranker = BundleRanker(again, loaded.text_model)
        np.testing.assert_array_equal(ranker.success_probability(vec, text, rows), p)


def test_old_bundle_loads_as_identity_and_bad_calibration_is_named(trained, tmp_path):
    _, prep, model = trained
    out = save_bundle(tiny_bundle(prep, model), tmp_path / "bundle")
    meta = json.loads((out / BUNDLE_FILE).read_text())
    del meta["calibration"]
    (out / BUNDLE_FILE).write_text(json.dumps(meta))
    old = load_bundle(out)
    assert old.calibration == Calibration()
    vec, text, rows = fake_encode(["x"])[0], "x", np.array([1, 2])
    idx = old.index(prep.inputs)
    raw = idx.values(vec, text, rows)
    np.testing.assert_array_equal(idx.success_probability(vec, text, rows), np.clip(raw, 0, 1))
    meta["calibration"] = {"method": "isotonic", "x": [0.0, 1.0], "y": [0.5]}
    (out / BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"bundle\.json: calibration \(isotonic\)"):
        load_bundle(out)
