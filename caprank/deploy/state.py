"""The persisted record of one rollout, so a controller killed mid-way can resume.

It is stored where the rollout acts (an annotation on the InferenceService for KServe), so
the spec change and the record of it land in the same write and never disagree. A local
rollout (the deploy stage's in-process canary, or ``POST /admin/rollout`` on a server)
keeps it in one JSON file, ``rollout_state_path(cfg)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from caprank.config import CaprankConfig
from caprank.errors import CaprankError

Phase = Literal[
    "canary", "observing", "watching", "promoting", "promoted", "rolling_back", "rolled_back"
]
PHASES: tuple[str, ...] = (
    "canary",
    "observing",
    "watching",
    "promoting",
    "promoted",
    "rolling_back",
    "rolled_back",
)
ACTIVE_PHASES = frozenset({"canary", "observing", "watching", "promoting", "rolling_back"})
STATE_VERSION = 1


def rollout_state_path(cfg: CaprankConfig) -> Path:
    """The one file that records a local rollout under the caprank home."""
    return cfg.home() / "deploy" / "local-rollout.json"


class RolloutStateError(CaprankError):
    """A persisted rollout record cannot be read."""


@dataclass
class RolloutState:
    """Where a rollout stands; every field is plain JSON so it fits an annotation."""

    new_uri: str
    model_version: str
    previous_uri: str | None
    traffic_percent: int
    mode: str
    phase: Phase
    started_at: float
    initial: bool = False
    observe_started_at: float | None = None
    rollback_started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""
    hook_done: bool = False  # the `production` alias names the new version
    metrics: dict = field(default_factory=dict)
    strategy: str = "canary"  # canary | blue_green
    previous_version: str | None = None  # the registry version behind previous_uri
    watch_started_at: float | None = None
    watch: dict = field(default_factory=dict)  # the post-promotion comparison
    restored: bool = False  # after a rollback: the alias names previous_version again

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    @property
    def finished(self) -> bool:
        """Nothing is left to do: promoted with the alias moved, or rolled back with the
        alias (if the watch had moved it) moved back."""
        if self.phase == "promoted":
            return self.hook_done
        return self.phase == "rolled_back" and (not self.hook_done or self.restored)

    def to_json(self) -> str:
        return json.dumps({"v": STATE_VERSION, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> RolloutState:
        """Parse a stored record; ``where`` names its location for the error message."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise RolloutStateError(f"{where}: rollout state is not JSON ({exc})") from exc
        if not isinstance(data, dict) or data.pop("v", None) != STATE_VERSION:
            raise RolloutStateError(f"{where}: rollout state has an unknown format version")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise RolloutStateError(f"{where}: rollout state has unknown fields {unknown}")
        try:
            state = cls(**data)
        except TypeError as exc:
            raise RolloutStateError(f"{where}: rollout state is incomplete ({exc})") from exc
        if state.phase not in PHASES:
            raise RolloutStateError(f"{where}: rollout state has unknown phase '{state.phase}'")
        return state
