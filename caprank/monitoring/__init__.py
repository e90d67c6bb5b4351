"""Drift monitoring between the reference and current windows of the interaction log:
the checks (``drift``), the windows, the monitor stage and the reader of its report."""

from caprank.monitoring.stage import MonitorResult, judge_drift, monitor, read_drift_report
from caprank.monitoring.windows import WindowBounds, event_frame, split_windows

__all__ = [
    "MonitorResult",
    "WindowBounds",
    "event_frame",
    "judge_drift",
    "monitor",
    "read_drift_report",
    "split_windows",
]
