"""Drift and data-quality checks between a reference window and a current window.

Seed 002 §5.2 and seed 003 §4. Checks, each run only when its inputs are given:

- ``feature_drift``: Evidently's DataDriftPreset, two-sample KS per numeric feature column;
  a column drifts when p <= ks_pvalue / n_columns (Bonferroni), the check when any does.
- ``embedding_drift``: KS per embedding dimension; drifts when some p < ks_pvalue / dims.
- ``prediction_drift``: PSI of the predicted scores over reference-quantile bins.
- ``feature_staleness``: age of the oldest current feature row, in hours, at ``now``.
- ``missing_rate``: worst per-column share of missing (NaN / non-finite) current values.
- ``embedding_variance``: total variance (trace of the covariance) of current embeddings;
  for unit vectors it is 1 - |mean|^2, near 0 when they collapse to one point.

Bonferroni keeps the family-wise false alarm rate of each KS check at ``ks_pvalue`` (1%
by default) whatever the correlation between columns or dimensions; the price is power
against shifts spread thinly over many dimensions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from caprank.config import FeaturesConfig, MonitoringConfig
from caprank.errors import DataError
from caprank.files import atomic_write_text


@dataclass
class DriftWindow:
    """What is monitored in one time window; any part may be left out."""

    features: pd.DataFrame | None = None  # one row per capability (or event), numeric columns
    embeddings: np.ndarray | None = None  # (rows, dims)
    scores: np.ndarray | None = None  # predicted scores
    feature_timestamps: np.ndarray | None = None  # when each feature row was computed (UTC)


@dataclass
class DriftCheck:
    """One check: its value, the threshold it is held to, and whether it fired."""

    name: str
    value: float
    threshold: float
    drifted: bool
    rule: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "rule": self.rule,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> DriftCheck:
        return cls(
            name,
            float(d["value"]),
            float(d["threshold"]),
            bool(d["drifted"]),
            str(d["rule"]),
            dict(d.get("details") or {}),
        )


@dataclass
class DriftResult:
    """Every check that ran; ``drifted`` when any fired, ``retrain`` when that should
    trigger retraining (``monitoring.retrain_policy`` is not ``never``)."""

    checks: dict[str, DriftCheck]
    drifted: bool
    retrain: bool
    html: str | None = field(default=None, repr=False)  # Evidently's report, when features ran

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "retrain": self.retrain,
            "fired": sorted(name for name, c in self.checks.items() if c.drifted),
            "checks": {name: c.to_dict() for name, c in self.checks.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], html: str | None = None) -> DriftResult:
        """The inverse of ``to_dict`` (Evidently's page, when kept, travels separately)."""
        checks = {name: DriftCheck.from_dict(name, c) for name, c in d["checks"].items()}
        return cls(checks, bool(d["drifted"]), bool(d["retrain"]), html)

    def write_html(self, path: str | Path) -> Path:
        if self.html is None:
            raise ValueError("no Evidently report: the feature drift check did not run")
        return atomic_write_text(path, self.html)


# --------------------------------------------------------------------------- checks


def _numeric_columns(frame: pd.DataFrame) -> list[str]:
    return [
        c
        for c in frame.columns
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]


def binary_columns(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Columns whose values (NaN aside) are all 0 or 1: indicators, tested as proportions."""
    return [c for c in columns if frame[c].dropna().isin([0, 1]).all()]


def proportion_z_p_value(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sided two-proportion z-test (pooled variance), Evidently's ``z`` test."""
    from scipy.stats import norm

    n1, n2 = len(reference), len(current)
    p1, p2 = float(np.mean(reference)), float(np.mean(current))
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return 1.0
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * norm.sf(abs(z)))


def drift_p_values(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], binary: list[str]
) -> dict[str, float]:
    """Per column: the proportion z-test for indicator columns, else scipy's two-sample KS
    (what Evidently runs with ``cat_method="z"`` / ``num_method="ks"``), NaNs dropped;
    the fast path when no report is wanted."""
    out = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
        for c in columns:
            ref, cur = reference[c].astype(float).dropna(), current[c].astype(float).dropna()
            if c in binary:
                out[c] = proportion_z_p_value(ref.to_numpy(), cur.to_numpy())
            else:
                out[c] = float(ks_2samp(ref, cur).pvalue)
    return out


def feature_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitoringConfig,
    html: bool = True,
    evidently: bool = True,
) -> tuple[DriftCheck, str | None]:
    """Evidently DataDriftPreset at a Bonferroni threshold: KS per numeric column, and the
    two-proportion z-test per 0/1 indicator column (KS on binary data is far too
    conservative: a share moving from 4.6% to 2.5% over 3,000 events gets p = 0.9).

    ``evidently=False`` computes the same p-values with scipy alone (no report; Evidently
    spends ~0.2 s per column rendering plots even when no HTML is asked for).
    """
    shared = [c for c in _numeric_columns(reference) if c in current.columns]
    columns = [
        c
        for c in shared
        if pd.api.types.is_numeric_dtype(current[c])
        and reference[c].notna().sum() > 0
        and current[c].notna().sum() > 0
    ]
    if not columns:
        raise DataError("features", "no numeric feature column with values in both windows")
    threshold = cfg.ks_pvalue / len(columns)
    binary = binary_columns(pd.concat([reference[columns], current[columns]]), columns)
    if not evidently:
        p_values = drift_p_values(reference, current, columns, binary)
        return _feature_check(p_values, columns, reference, cfg), None
    from evidently import DataDefinition, Report
    from evidently import Dataset as EvDataset
    from evidently.presets import DataDriftPreset

    numeric = [c for c in columns if c not in binary]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=binary)
    preset = DataDriftPreset(
        columns=columns,
        num_method="ks",
        num_threshold=threshold,
        cat_method="z",
        cat_threshold=threshold,
        drift_share=1 / len(columns),
    )
    with warnings.catch_warnings():
        # Integer-valued features have ties; scipy then falls back to the asymptotic p-value.
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
        snapshot = Report([preset], include_tests=False).run(
            current_data=EvDataset.from_pandas(
                current[columns].astype(float), data_definition=definition
            ),
            reference_data=EvDataset.from_pandas(
                reference[columns].astype(float), data_definition=definition
            ),
        )
    p_values: dict[str, float] = {}
    drifted_count = None
    for metric in snapshot.dict()["metrics"]:
        conf = metric["config"]
        if conf["type"].endswith(":ValueDrift"):
            p_values[conf["column"]] = float(metric["value"])
        elif conf["type"].endswith(":DriftedColumnsCount"):
            drifted_count = int(metric["value"]["count"])
    check = _feature_check(p_values, columns, reference, cfg)
    if drifted_count is not None and drifted_count != len(check.details["drifted_columns"]):
        raise RuntimeError("Evidently's drifted column count disagrees with its p-values")
    return check, snapshot.get_html_str(as_iframe=False) if html else None


def _feature_check(
    p_values: dict[str, float], columns: list[str], reference: pd.DataFrame, cfg: MonitoringConfig
) -> DriftCheck:
    threshold = cfg.ks_pvalue / len(columns)
    drifted_cols = sorted(c for c, p in p_values.items() if p <= threshold)
    return DriftCheck(
        name="feature_drift",
        value=min(p_values.values()),
        threshold=threshold,
        drifted=bool(drifted_cols),
        rule=f"min p-value (KS; z-test for 0/1 columns) <= {cfg.ks_pvalue} / {len(columns)} "
        "columns (Bonferroni)",
        details={
            "p_values": p_values,
            "drifted_columns": drifted_cols,
            "drifted_share": len(drifted_cols) / len(columns),
            "ignored_columns": sorted(set(map(str, reference.columns)) - set(columns)),
        },
    )


def _finite_rows(emb: np.ndarray, source: str) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2:
        raise DataError(source, f"expected a 2-D (rows x dims) array, got shape {emb.shape}")
    return emb[np.isfinite(emb).all(axis=1)]


def embedding_drift(
    reference: np.ndarray, current: np.ndarray, cfg: MonitoringConfig
) -> DriftCheck:
    """Two-sample KS per dimension; Bonferroni over dimensions."""
    ref = _finite_rows(reference, "reference embeddings")
    cur = _finite_rows(current, "current embeddings")
    if ref.shape[1] != cur.shape[1]:
        raise DataError("current embeddings", f"{cur.shape[1]} dims, reference has {ref.shape[1]}")
    if len(ref) < 2 or len(cur) < 2:
        raise DataError("embeddings", "need at least 2 finite rows in each window")
    dims = ref.shape[1]
    p = np.atleast_1d(ks_2samp(ref, cur, axis=0).pvalue)
    threshold = cfg.ks_pvalue / dims
    worst = np.argsort(p, kind="stable")[:5]
    return DriftCheck(
        name="embedding_drift",
        value=float(p.min()),
        threshold=threshold,
        drifted=bool(p.min() < threshold),
        rule=f"min KS p-value < {cfg.ks_pvalue} / {dims} dims (Bonferroni)",
        details={
            "dims": dims,
            "dims_drifted": int(np.count_nonzero(p < threshold)),
            "share_below_ks_pvalue": float(np.mean(p < cfg.ks_pvalue)),
            "worst_dims": {int(d): float(p[d]) for d in worst},
        },
    )


def population_stability_index(
    reference: np.ndarray, current: np.ndarray, bins: int, epsilon: float
) -> float:
    """PSI = sum (c - r) ln(c / r) over bins cut at reference quantiles (shares floored at
    ``epsilon``); repeated quantiles of discrete scores merge into one edge."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cur = np.asarray(current, dtype=np.float64).ravel()
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        raise DataError("scores", "PSI needs finite scores in both windows")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1) / cur.size
    r, c = np.maximum(r, epsilon), np.maximum(c, epsilon)
    return float(np.sum((c - r) * np.log(c / r)))


def prediction_drift(
    reference: np.ndarray, current: np.ndarray, cfg: MonitoringConfig
) -> DriftCheck:
    psi = population_stability_index(reference, current, cfg.psi_bins, cfg.psi_epsilon)
    return DriftCheck(
        name="prediction_drift",
        value=psi,
        threshold=cfg.psi_threshold,
        drifted=psi > cfg.psi_threshold,
        rule=f"PSI over {cfg.psi_bins} reference-quantile bins > {cfg.psi_threshold}",
        details={
            "reference_mean": float(np.nanmean(reference)),
            "current_mean": float(np.nanmean(current)),
        },
    )


def feature_staleness(timestamps: np.ndarray, now: datetime, max_hours: float) -> DriftCheck:
    """Hours since the oldest current feature row was computed (``features.max_staleness_hours``
    is the limit: serving ignores such rows too)."""
    ts = pd.to_datetime(pd.Series(np.asarray(timestamps).ravel()), utc=True)
    if ts.isna().all():
        raise DataError("feature_timestamps", "no timestamps", field="computed_at")
    now_ts = pd.Timestamp(now)
    if now_ts.tzinfo is None:
        raise DataError("now", "must be timezone-aware (UTC)")
    ages = (now_ts - ts.dropna()).dt.total_seconds() / 3600.0
    oldest = float(ages.max())
    return DriftCheck(
        name="feature_staleness",
        value=oldest,
        threshold=max_hours,
        drifted=oldest > max_hours,
        rule=f"oldest feature row older than {max_hours} h",
        details={
            "median_age_hours": float(ages.median()),
            "stale_rows": int((ages > max_hours).sum()),
            "missing_timestamps": int(ts.isna().sum()),
        },
    )


def missing_rate(
    current: DriftWindow, reference: DriftWindow, cfg: MonitoringConfig
) -> DriftCheck | None:
    """Worst per-column missing share in the current window (features, embedding rows,
    scores); a feature column the reference has and the current window lacks counts as 1."""
    rates: dict[str, float] = {}
    if current.features is not None and len(current.features):
        for col in current.features.columns:
            values = current.features[col]
            missing = values.isna()
            if pd.api.types.is_numeric_dtype(values):
                missing |= ~np.isfinite(values.astype(float).fillna(0.0))
            rates[str(col)] = float(missing.mean())
        if reference.features is not None:
            for col in reference.features.columns:
                rates.setdefault(str(col), 1.0)
    if current.embeddings is not None and len(current.embeddings):
        emb = np.asarray(current.embeddings, dtype=np.float64)
        rates["embedding"] = float(np.mean(~np.isfinite(emb).all(axis=1)))
    if current.scores is not None and len(current.scores):
        rates["score"] = float(np.mean(~np.isfinite(np.asarray(current.scores, dtype=np.float64))))
    if not rates:
        return None
    worst = max(rates, key=rates.__getitem__)
    return DriftCheck(
        name="missing_rate",
        value=rates[worst],
        threshold=cfg.max_missing_rate,
        drifted=rates[worst] > cfg.max_missing_rate,
        rule=f"worst column's missing share > {cfg.max_missing_rate}",
        details={"worst_column": worst, "rates": rates},
    )


def total_variance(embeddings: np.ndarray) -> float:
    """Trace of the covariance: mean squared distance of rows from their centroid."""
    emb = _finite_rows(embeddings, "embeddings")
    if len(emb) < 2:
        raise DataError("embeddings", "need at least 2 finite rows for a variance")
    return float(emb.var(axis=0, ddof=1).sum())


def embedding_variance(
    current: np.ndarray, reference: np.ndarray | None, cfg: MonitoringConfig
) -> DriftCheck:
    value = total_variance(current)
    details: dict[str, Any] = {}
    if reference is not None:
        ref = total_variance(reference)
        details = {"reference": ref, "ratio_to_reference": value / ref if ref > 0 else None}
    return DriftCheck(
        name="embedding_variance",
        value=value,
        threshold=cfg.min_total_variance,
        drifted=value < cfg.min_total_variance,
        rule=f"total embedding variance < {cfg.min_total_variance} (collapse)",
        details=details,
    )


# --------------------------------------------------------------------------- all checks


def detect_drift(
    reference: DriftWindow,
    current: DriftWindow,
    cfg: MonitoringConfig,
    *,
    now: datetime | None = None,
    html: bool = True,
    evidently: bool = True,
    max_staleness_hours: float = FeaturesConfig().max_staleness_hours,
) -> DriftResult:
    """Run every check whose inputs both windows provide (staleness needs ``now``;
    ``max_staleness_hours`` is ``features.max_staleness_hours``).

    ``evidently=False``: feature drift from scipy's KS alone (same p-values, no report).
    """
    checks: dict[str, DriftCheck] = {}
    report_html = None
    if reference.features is not None and current.features is not None:
        checks["feature_drift"], report_html = feature_drift(
            reference.features, current.features, cfg, html=html and evidently, evidently=evidently
        )
    if reference.embeddings is not None and current.embeddings is not None:
        checks["embedding_drift"] = embedding_drift(reference.embeddings, current.embeddings, cfg)
    if reference.scores is not None and current.scores is not None:
        checks["prediction_drift"] = prediction_drift(reference.scores, current.scores, cfg)
    if current.feature_timestamps is not None:
        if now is None:
            raise ValueError("feature staleness needs `now` (a timezone-aware datetime)")
        checks["feature_staleness"] = feature_staleness(
            current.feature_timestamps, now, max_staleness_hours
        )
    missing = missing_rate(current, reference, cfg)
    if missing is not None:
        checks["missing_rate"] = missing
    if current.embeddings is not None:
        checks["embedding_variance"] = embedding_variance(
            current.embeddings, reference.embeddings, cfg
        )
    if not checks:
        raise ValueError("no drift check has inputs: give features, embeddings or scores")
    drifted = any(c.drifted for c in checks.values())
    retrain = drifted and cfg.retrain_policy != "never"
    return DriftResult(checks, drifted, retrain, report_html)
