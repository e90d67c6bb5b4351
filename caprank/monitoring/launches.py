"""Launch drift: do capabilities launched in the current window draw more demand than
established ones?

Catalogs launch capabilities all the time, so "traffic on new capabilities" is nonzero
with no drift at all (a column of it fired in every drift-free seed). What a launch
*campaign* changes is how much demand each new capability gets. Demand is counted per
capability from the requests' intents (a request counts for every capability its intent
is labeled with), per day the capability was available in the window, and the launched
capabilities' rates are compared with the established ones' by a one-sided Mann-Whitney
U test: if new capabilities are like any other (exchangeable), p is uniform, whatever the
skew of popularity. Executed capabilities are not used: exploration and slates spread
them over many capabilities and drown the boost (2 of 10 drifted seeds vs 8 of 10).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
from scipy.stats import mannwhitneyu

from caprank.config import MonitoringConfig
from caprank.data.dataset import Dataset
from caprank.monitoring.drift import DriftCheck


def _labeled_capabilities(ds: Dataset) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for intent, cap in zip(
        ds.labels["intent_id"].to_pylist(), ds.labels["capability_id"].to_pylist(), strict=True
    ):
        out.setdefault(intent, []).append(cap)
    return out


def launch_demand(
    ds: Dataset,
    current_events: pa.Table,
    current_start: datetime,
    end: datetime,
    cfg: MonitoringConfig,
) -> DriftCheck | None:
    """The check (module docstring), or None when no labeled capability was launched in
    [current_start, end) or fewer than two established ones exist to compare with."""
    by_intent = _labeled_capabilities(ds)
    labeled = {c for caps in by_intent.values() for c in caps}
    window_days = (end - current_start).total_seconds() / 86_400
    days: dict[str, float] = {}
    launched: list[str] = []
    for cap, made in zip(
        ds.capabilities["capability_id"].to_pylist(),
        ds.capabilities["created_at"].to_pylist(),
        strict=True,
    ):
        if cap not in labeled or (made is not None and made >= end):
            continue
        if made is not None and made >= current_start:
            launched.append(cap)
            days[cap] = (end - made).total_seconds() / 86_400
        else:
            days[cap] = window_days
    established = [c for c in days if c not in set(launched)]
    if not launched or len(established) < 2:
        return None
    demand = dict.fromkeys(days, 0)
    for intent in current_events["intent_id"].to_pylist():
        for cap in by_intent.get(intent, ()):
            if cap in demand:
                demand[cap] += 1
    rate = {c: demand[c] / days[c] for c in days}
    new = np.array([rate[c] for c in launched])
    old = np.array([rate[c] for c in established])
    p = float(mannwhitneyu(new, old, alternative="greater").pvalue)
    return DriftCheck(
        name="launch_demand",
        value=p,
        threshold=cfg.launch_pvalue,
        drifted=p <= cfg.launch_pvalue,
        rule=f"one-sided Mann-Whitney p (launched vs established requests/day) <= "
        f"{cfg.launch_pvalue}",
        details={
            "launched": sorted(launched),
            "launched_mean_per_day": float(new.mean()),
            "established_median_per_day": float(np.median(old)),
            "established": len(established),
        },
    )
