"""Post-hoc calibration of the value head: raw expected reward -> success probability.

The value head regresses TD(lambda) reward targets over *logged* experiences; evaluate
and serving read it as the probability that a capability the ranker puts in its top k
is relevant. Those are different quantities, so a map is fitted at the end of training
on the validation intents (their top-k capabilities, outcome = relevant or not) and
stored with the bundle. Fitting needs scikit-learn; applying is numpy only (serving).

Methods: ``platt`` (1-D logistic regression on the raw value: the head is an
unbounded regressor, often outside [0, 1], so its value is the score, not a logit),
``isotonic`` (monotone step function, linear between its thresholds) and ``identity``
(the raw value clipped to [0, 1]: what bundles without a calibration get).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from caprank.errors import CaprankError

Method = Literal["identity", "platt", "isotonic"]
EPS = 1e-4  # keeps a constant (one-class) Platt fit finite


class CalibrationError(CaprankError):
    """Calibration parameters are missing, malformed or cannot be fitted."""


@dataclass(frozen=True)
class Calibration:
    method: Method = "identity"
    params: dict = field(default_factory=dict)  # platt: a, b; isotonic: x, y (lists)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Success probabilities in [0, 1] for raw value-head outputs."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.method == "identity":
            out = raw
        elif self.method == "platt":
            z = self.params["a"] * raw + self.params["b"]
            out = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic, without overflow
        else:
            out = np.interp(raw, self.params["x"], self.params["y"])
        return np.clip(out, 0.0, 1.0)

    def to_json(self) -> dict:
        return {"method": self.method, **self.params}

    @classmethod
    def from_json(cls, data: dict | None) -> Calibration:
        """Parse what ``to_json`` wrote; ``None`` (a bundle from before calibration) is
        the identity."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise CalibrationError(f"calibration: expected an object, got {data!r}")
        method = data.get("method")
        try:
            if method == "identity":
                return cls()
            if method == "platt":
                a, b = float(data["a"]), float(data["b"])
                if not (np.isfinite(a) and np.isfinite(b)):
                    raise ValueError("a and b must be finite")
                return cls("platt", {"a": a, "b": b})
            if method == "isotonic":
                x = np.asarray(data["x"], dtype=np.float64)
                y = np.asarray(data["y"], dtype=np.float64)
                if x.ndim != 1 or x.size == 0 or x.shape != y.shape:
                    raise ValueError("x and y must be equal-length non-empty lists")
                if np.any(np.diff(x) < 0) or np.any((y < 0) | (y > 1)):
                    raise ValueError("x must be sorted and y in [0, 1]")
                return cls("isotonic", {"x": x.tolist(), "y": y.tolist()})
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"calibration ({method}): {exc}") from exc
        raise CalibrationError(f"calibration: unknown method {method!r}")


def fit_calibration(raw: np.ndarray, outcomes: np.ndarray, method: Method) -> Calibration:
    """Fit ``method`` mapping raw values to the 0/1 ``outcomes``.

    With one outcome class only, Platt degrades to the constant observed rate (its
    logistic regression is undefined), which is still the calibrated answer.
    """
    raw = np.asarray(raw, dtype=np.float64).ravel()
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    if raw.size != y.size or raw.size == 0:
        raise CalibrationError(f"calibration: {raw.size} values for {y.size} outcomes")
    if not np.isfinite(raw).all():
        raise CalibrationError("calibration: non-finite raw values")
    if method == "identity":
        return Calibration()
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
        return Calibration(
            "isotonic",
            {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()},
        )
    if method != "platt":
        raise CalibrationError(f"calibration: unknown method {method!r}")
    if np.unique(y).size < 2:
        rate = float(np.clip(y.mean(), EPS, 1.0 - EPS))
        return Calibration("platt", {"a": 0.0, "b": float(np.log(rate / (1.0 - rate)))})
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e4, max_iter=1000).fit(raw[:, None], y.astype(int))
    return Calibration("platt", {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])})
