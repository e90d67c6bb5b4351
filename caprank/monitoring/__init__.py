"""Drift monitoring between the reference and current windows of the interaction log."""

from caprank.monitoring.stage import MonitorResult, judge_drift, monitor
from caprank.monitoring.windows import WindowBounds, event_frame, split_windows

__all__ = [
    "MonitorResult",
    "WindowBounds",
    "event_frame",
    "judge_drift",
    "monitor",
    "split_windows",
]
