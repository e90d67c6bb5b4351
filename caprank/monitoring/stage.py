"""The monitor stage: drift between the reference and the current window, and whether
the nightly run should train.

``should_train`` follows ``monitoring.retrain_policy``: ``always`` trains every run;
``on_drift`` trains when a drift check fired; ``never`` only reports drift. Each trains
when no model is in production yet. Windows with fewer than
``monitoring.min_window_events`` events are not judged (too little data to tell drift
from noise); the result says so. Besides ``detect_drift``'s checks, the verdict includes
``launch_demand`` (``caprank.monitoring.launches``) when capabilities launched in the
current window.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.data.schemas import CAPABILITY_FEATURES_FILE
from caprank.errors import DataError
from caprank.monitoring.drift import DriftResult, detect_drift
from caprank.monitoring.launches import launch_demand
from caprank.monitoring.windows import WindowBounds, split_windows_with_events

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "should_train": self.should_train,
            "policy": self.policy,
            "reason": self.reason,
            "windows": self.bounds.to_dict(),
            "drift": None if self.drift is None else self.drift.to_dict(),
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
    mon = cfg.monitoring
    reference, current, bounds, cur_events = split_windows_with_events(ds, mon)
    small = min(bounds.reference_events, bounds.current_events)
    if small < mon.min_window_events:
        return (
            None,
            bounds,
            (
                f"too few events to judge drift ({bounds.reference_events:,} reference, "
                f"{bounds.current_events:,} current; need {mon.min_window_events:,} each)"
            ),
        )
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
        drift.drifted = drift.drifted or launch.drifted
        drift.retrain = drift.drifted and mon.retrain_policy != "never"
    fired = [n for n, c in drift.checks.items() if c.drifted]
    return drift, bounds, ("drift: " + ", ".join(fired)) if fired else "no drift"


def monitor(
    ds: Dataset,
    cfg: CaprankConfig,
    *,
    features_dir: str | Path | None = None,
    policy: str | None = None,
    production_exists: bool | None = None,
    html: bool = False,
) -> MonitorResult:
    """Judge drift and decide whether this run trains (module docstring).

    ``production_exists`` defaults to asking the registry for the ``production`` alias.
    """
    policy = policy or cfg.monitoring.retrain_policy
    if policy not in ("always", "on_drift", "never"):
        from caprank.errors import ConfigError

        raise ConfigError("monitoring.retrain_policy", f"unknown policy {policy!r}")
    drift, bounds, why = judge_drift(ds, cfg, features_dir=features_dir, html=html)
    if policy == "always":
        return MonitorResult(drift, bounds, True, policy, f"trains every run; {why}")
    if policy == "on_drift" and drift is not None and drift.drifted:
        return MonitorResult(drift, bounds, True, policy, why)
    if production_exists is None:
        from caprank.registry import production_version

        production_exists = production_version(cfg) is not None
    if not production_exists:
        return MonitorResult(drift, bounds, True, policy, f"no production model yet; {why}")
    if drift is not None and drift.drifted:
        why += " (retrain policy never)"
    return MonitorResult(drift, bounds, False, policy, why)


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
