"""The monitor stage: drift between the reference and the current window, and whether
the nightly run should train.

``should_train`` follows ``monitoring.retrain_policy``: ``always`` trains every run;
``on_drift`` trains when a drift check fired; ``on_degradation`` when the current
window's success rate is below the reference's by more than
``monitoring.degradation_margin``, by a one-sided two-proportion test at
``monitoring.degradation_alpha`` (``caprank.experiments.margin``; first event of each
session, as for drift); ``never`` only reports drift. Each trains when no model is in
production yet. Windows with fewer than ``monitoring.min_window_events`` events are not
judged (too little data to tell drift from noise); the result says so. Besides
``detect_drift``'s checks, the verdict includes ``launch_demand``
(``caprank.monitoring.launches``) when capabilities launched in the current window, and,
with ``monitoring.served_checks``, the embedding KS and prediction PSI checks on served
traffic (``caprank.monitoring.served``). With ``services.pushgateway_url`` set, the
verdict is pushed as gauges for the drift alert (``caprank.monitoring.gauges``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.data.schemas import CAPABILITY_FEATURES_FILE
from caprank.errors import DataError
from caprank.experiments.margin import MarginComparison, worse_by_margin
from caprank.monitoring.drift import DriftResult, detect_drift
from caprank.monitoring.gauges import publish
from caprank.monitoring.launches import launch_demand
from caprank.monitoring.windows import WindowBounds, window_events, windows_from_events

POLICIES = ("always", "on_drift", "on_degradation", "never")
MONITOR_FILE = "monitor.json"  # ``MonitorResult.to_dict()``, in the monitor's drift_report
DRIFT_HTML = "drift_report.html"  # Evidently's page beside it, when the feature check ran


@dataclass
class MonitorResult:
    """Drift checks (None when the windows were too small), and the training decision."""

    drift: DriftResult | None
    bounds: WindowBounds
    should_train: bool
    policy: str
    reason: str
    degradation: MarginComparison | None = None  # current vs reference success rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "should_train": self.should_train,
            "policy": self.policy,
            "reason": self.reason,
            "windows": self.bounds.to_dict(),
            "drift": None if self.drift is None else self.drift.to_dict(),
            "degradation": None if self.degradation is None else self.degradation.to_dict(),
        }

    def to_markdown(self) -> str:
        b = self.bounds
        lines = [
            "## Monitor",
            "",
            f"**should_train: {str(self.should_train).lower()}** ({self.policy}): {self.reason}",
            "",
            f"Reference window {b.reference_start:%Y-%m-%d %H:%M} to "
            f"{b.current_start:%Y-%m-%d %H:%M} ({b.reference_events:,} events); current "
            f"window to {b.end:%Y-%m-%d %H:%M} ({b.current_events:,} events).",
        ]
        if self.drift is not None:
            lines += ["", "| check | value | threshold | fired |", "|---|---|---|---|"]
            for name, c in self.drift.checks.items():
                fired = "yes" if c.drifted else "no"
                lines.append(f"| {name} | {c.value:.4g} | {c.threshold:.4g} | {fired} |")
            feat = self.drift.checks.get("feature_drift")
            if feat is not None and feat.details.get("drifted_columns"):
                lines.append(f"\nDrifted columns: {', '.join(feat.details['drifted_columns'])}")
        if self.degradation is not None:
            lines += ["", f"Degradation: {self.degradation.reason}"]
        return "\n".join(lines) + "\n"


def _latest_feature_times(features_dir: str | Path | None):
    if features_dir is None:
        return None
    path = Path(features_dir) / CAPABILITY_FEATURES_FILE
    if not path.is_file():
        return None
    table = pq.read_table(path, columns=["event_timestamp"])
    if table.num_rows == 0:
        return None
    stamps = table["event_timestamp"]
    latest = table.filter(pc.equal(stamps, pc.max(stamps)))
    return latest["event_timestamp"].to_numpy(zero_copy_only=False)


@dataclass
class _Judged:
    drift: DriftResult | None
    bounds: WindowBounds
    why: str
    reference: pa.Table  # kept events (first of each session) of each window
    current: pa.Table
    degradation: MarginComparison | None = None


def judge_drift(
    ds: Dataset,
    cfg: CaprankConfig,
    *,
    features_dir: str | Path | None = None,
    html: bool = False,
) -> tuple[DriftResult | None, WindowBounds, str]:
    """Drift of the dataset's log (and the staleness of its latest feature snapshot
    against the log's last event), or None with the reason the windows were too small.

    ``html``: run the feature check through Evidently and keep its report; without it the
    same KS p-values come from scipy (fast, for tests and sweeps)."""
    judged = _judge(ds, cfg, features_dir, html)
    return judged.drift, judged.bounds, judged.why


def _judge(ds: Dataset, cfg: CaprankConfig, features_dir, html: bool) -> _Judged:
    mon = cfg.monitoring
    ref_events, cur_events, span = window_events(ds, mon)
    reference, current, bounds = windows_from_events(ds, mon, ref_events, cur_events, span)
    small = min(bounds.reference_events, bounds.current_events)
    if small < mon.min_window_events:
        why = (
            f"too few events to judge drift ({bounds.reference_events:,} reference, "
            f"{bounds.current_events:,} current; need {mon.min_window_events:,} each)"
        )
        return _Judged(None, bounds, why, ref_events, cur_events)
    current.feature_timestamps = _latest_feature_times(features_dir)
    now = bounds.end - timedelta(microseconds=1)
    drift = detect_drift(
        reference,
        current,
        mon,
        now=now,
        html=html,
        evidently=html,
        max_staleness_hours=cfg.features.max_staleness_hours,
    )
    launch = launch_demand(ds, cur_events, bounds.current_start, bounds.end, mon)
    if launch is not None:
        drift.checks[launch.name] = launch
    why = _verdict(drift, mon.retrain_policy)
    degradation = worse_by_margin(
        _success_counts(current.features),
        _success_counts(reference.features),
        margin=mon.degradation_margin,
        alpha=mon.degradation_alpha,
    )
    return _Judged(drift, bounds, why, ref_events, cur_events, degradation)


def _verdict(drift: DriftResult, policy: str) -> str:
    """Set ``drifted`` and ``retrain`` from every check now in ``drift``; say which fired."""
    drift.drifted = any(c.drifted for c in drift.checks.values())
    drift.retrain = drift.drifted and policy != "never"
    fired = [n for n, c in drift.checks.items() if c.drifted]
    return ("drift: " + ", ".join(fired)) if fired else "no drift"


def _success_counts(frame) -> tuple[int, int]:
    """(successes, events with an outcome) of a window's per-event frame."""
    reward = frame["reward"].dropna()
    return int((reward == 1.0).sum()), len(reward)


def _add_served_checks(judged: _Judged, ds: Dataset, cfg: CaprankConfig, embed, score) -> None:
    """The embedding KS and prediction PSI on served traffic, into ``judged.drift``."""
    from caprank.monitoring.served import (
        served_drift,
        served_intents,
        serving_scorer,
        text_embedder,
    )

    mon, seed = cfg.monitoring, cfg.data.seed
    ref = served_intents(judged.reference, mon.served_sample, seed)
    cur = served_intents(judged.current, mon.served_sample, seed + 1)
    if min(len(ref), len(cur)) < 2:
        return
    if score is not None:  # a given model (tests): no served model is loaded
        checks = served_drift(ref, cur, cfg, embed=embed or text_embedder(cfg), score=score)
    else:  # the served model's scores, in its own encoder's space unless one is given
        with serving_scorer(cfg, ds) as served:
            checks = served_drift(ref, cur, cfg, embed=embed or served.embed, score=served.score)
        checks["prediction_drift"].details["model_version"] = served.version
        if embed is None:
            checks["embedding_drift"].details["text_model"] = served.text_model
    assert judged.drift is not None
    judged.drift.checks.update(checks)


def monitor(
    ds: Dataset,
    cfg: CaprankConfig,
    *,
    features_dir: str | Path | None = None,
    policy: str | None = None,
    production_exists: bool | None = None,
    html: bool = False,
    served: bool | None = None,
    embed=None,
    score=None,
) -> MonitorResult:
    """Judge drift and decide whether this run trains (module docstring).

    ``production_exists`` defaults to asking the registry for the ``production`` alias.
    ``served`` (default ``monitoring.served_checks``) adds the served-traffic checks;
    ``embed`` and ``score`` replace their text encoder and model (tests).
    """
    policy = policy or cfg.monitoring.retrain_policy
    if policy not in POLICIES:
        from caprank.errors import ConfigError

        raise ConfigError("monitoring.retrain_policy", f"unknown policy {policy!r}")
    judged = _judge(ds, cfg, features_dir, html)
    drift, bounds, why = judged.drift, judged.bounds, judged.why
    degradation = judged.degradation
    if drift is not None:
        if cfg.monitoring.served_checks if served is None else served:
            _add_served_checks(judged, ds, cfg, embed, score)
        why = _verdict(drift, policy)

    def result(train: bool, reason: str) -> MonitorResult:
        out = MonitorResult(drift, bounds, train, policy, reason, degradation)
        publish(out, cfg)  # the drift alert's gauges, when a Pushgateway is configured
        return out

    if policy == "always":
        return result(True, f"trains every run; {why}")
    if policy == "on_drift" and drift is not None and drift.drifted:
        return result(True, why)
    if policy == "on_degradation" and degradation is not None and degradation.worse:
        return result(True, f"degradation: {degradation.reason}")
    if production_exists is None:
        from caprank.registry import production_version

        production_exists = production_version(cfg) is not None
    if not production_exists:
        return result(True, f"no production model yet; {why}")
    if drift is not None and drift.drifted and policy == "never":
        why += " (retrain policy never)"
    if policy == "on_degradation" and degradation is not None:
        why += f"; no degradation: {degradation.reason}"
    return result(False, why)


def read_drift_report(report: str | Path | Mapping[str, Any]) -> DriftResult | None:
    """The drift the monitor stage judged, from its ``drift_report`` artifact: a folder
    holding ``MONITOR_FILE`` (and ``DRIFT_HTML``), that file, or its parsed dict. None
    when the monitor did not judge drift (windows too small)."""
    html = None
    if isinstance(report, Mapping):
        data = report
    else:
        path = Path(report)
        if path.is_dir():
            path = path / MONITOR_FILE
        if not path.is_file():
            raise DataError(str(path), "monitor drift report not found")
        data = json.loads(path.read_text(encoding="utf-8"))
        page = path.parent / DRIFT_HTML
        html = page.read_text(encoding="utf-8") if page.is_file() else None
    drift = data.get("drift")
    return None if drift is None else DriftResult.from_dict(drift, html)
