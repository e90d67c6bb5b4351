"""What every component does around its stage call: config, summaries, metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caprank.config import CaprankConfig, load_config
from caprank.files import atomic_write_text
from caprank.sandbox import enter_pod_sandbox


def stage_config(config_yaml: str) -> CaprankConfig:
    """The run's config: defaults < the pipeline's ``config_yaml`` < CAPRANK_* env vars."""
    enter_pod_sandbox()
    return load_config(extra_yaml=config_yaml or None)


def write_text(path: str, text: str) -> None:
    atomic_write_text(path, text)


def log_metrics(metrics: Any, values: dict[str, Any], prefix: str = "") -> None:
    """Log the numeric leaves of ``values`` to a KFP ``Metrics`` artifact."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            log_metrics(metrics, value, prefix=f"{name}.")
        elif isinstance(value, bool | int | float):
            metrics.log_metric(name, float(value))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
