"""An experiment's record: one JSON file per experiment under ``cfg.experiments_dir()``.

Written atomically (temp file, fsync, rename), so a crash leaves the old record or the
new one. The record holds what was decided at start (versions, share, sizing) and the
last decision, so ``status`` and ``stop`` need nothing but the id.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from caprank.errors import CaprankError
from caprank.files import atomic_write_text

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
RECORD_VERSION = 1


class ExperimentError(CaprankError):
    """An experiment cannot be started, found or read."""


@dataclass
class Experiment:
    id: str
    control: str  # served model version of each arm
    treatment: str
    share: float
    unit: str
    alpha: float
    power: float
    mde: float
    baseline_rate: float
    baseline_source: str
    max_duration_h: float
    look_interval_h: float
    min_per_arm: int
    max_error_rate_increase: float
    max_latency_increase: float
    planned_n_control: int
    planned_n_treatment: int
    fixed_n_control: int
    started_at: float  # epoch seconds
    stopped_at: float | None = None
    status: str = "running"  # running | stopped
    decision: dict = field(default_factory=dict)
    mlflow_run_id: str | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_dict(self) -> dict:
        return {"v": RECORD_VERSION, **asdict(self)}


def check_id(experiment_id: str) -> str:
    if not ID_PATTERN.match(experiment_id or ""):
        raise ExperimentError(
            f"experiment id {experiment_id!r} must match {ID_PATTERN.pattern} "
            "(lower-case letters, digits, '_', '.', '-')"
        )
    return experiment_id


def record_path(root: Path, experiment_id: str) -> Path:
    return Path(root) / check_id(experiment_id) / "experiment.json"


def save(root: Path, exp: Experiment) -> Path:
    return atomic_write_text(
        record_path(root, exp.id), json.dumps(exp.to_dict(), indent=2, sort_keys=True)
    )


def load(root: Path, experiment_id: str) -> Experiment:
    path = record_path(root, experiment_id)
    if not path.is_file():
        known = ", ".join(list_ids(root)) or "none"
        raise ExperimentError(f"no experiment {experiment_id!r} under {root} (known: {known})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExperimentError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.pop("v", None) != RECORD_VERSION:
        raise ExperimentError(f"{path}: unknown record format version")
    unknown = sorted(set(data) - set(Experiment.__dataclass_fields__))
    if unknown:
        raise ExperimentError(f"{path}: unknown fields {unknown}")
    try:
        return Experiment(**data)
    except TypeError as exc:
        raise ExperimentError(f"{path}: incomplete record ({exc})") from exc


def list_ids(root: Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/experiment.json"))
