"""The local rollout backend: the predictor's in-process canary under the controller.

``run_rollout(LocalBackend(...), new_uri, version, cfg.canary)`` then drives the same
canary / observe / promote-or-rollback logic as on KServe, against a running engine:
``set_canary`` loads the model (a directory or a registry reference) as the engine's
second model with ``traffic_percent``% of requests (``canary.mode`` split or shadow),
``metrics`` reads its request count, error rate and p99 from the engine's per-version
window, ``promote`` swaps it in as primary and ``rollback`` drops it. The rollout record
is a JSON file (atomic writes) so a controller restarted after a crash resumes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from caprank.deploy.backend import CanaryMetrics, LiveModel, Readiness, ReadyCheck
from caprank.deploy.state import RolloutState
from caprank.files import atomic_write_text
from caprank.online.engine import Mode, RankEngine
from caprank.online.models import LoadedModel

Loader = Callable[[str, str], LoadedModel]  # (uri, version) -> loaded model


class LocalBackend:
    """``RolloutBackend`` over a ``RankEngine`` in this process."""

    def __init__(self, engine: RankEngine, load: Loader, state_file: str | Path, mode: Mode):
        self.engine = engine
        self.load = load
        self.state_file = Path(state_file)
        self.mode = mode
        self.load_error: dict[str, str] = {}

    def get_state(self) -> RolloutState | None:
        if not self.state_file.is_file():
            return None
        return RolloutState.from_json(
            self.state_file.read_text(encoding="utf-8"), str(self.state_file)
        )

    def save_state(self, state: RolloutState) -> None:
        atomic_write_text(self.state_file, state.to_json())

    def live(self) -> LiveModel:
        primary = self.engine.routing.primary
        return LiveModel(primary.source if primary else None, primary is not None, "local")

    def _serving(self, uri: str) -> LoadedModel | None:
        r = self.engine.routing
        for m in (r.second, r.primary):
            if m is not None and m.source == uri:
                return m
        return None

    def set_canary(self, state: RolloutState) -> None:
        self.save_state(state)
        if self._serving(state.new_uri) is None:
            try:
                model = self.load(state.new_uri, state.model_version)
            except Exception as exc:
                self.load_error[state.new_uri] = f"{type(exc).__name__}: {exc}"
                return
            if state.initial:
                self.engine.set_primary(model)
            else:
                self.engine.set_second(model, self.mode, state.traffic_percent)

    def shift(self, state: RolloutState) -> None:
        """The new model (the second) answers ``traffic_percent``% of requests; a shift
        always splits, since a shadow answers nothing."""
        r = self.engine.routing
        if r.second is not None and r.second.source == state.new_uri:
            self.engine.set_second(r.second, "split", state.traffic_percent)
        self.save_state(state)

    def ready(self, state: RolloutState) -> ReadyCheck:
        if state.new_uri in self.load_error:
            return ReadyCheck(Readiness.FAILED, self.load_error[state.new_uri])
        if self._serving(state.new_uri) is not None:
            return ReadyCheck(Readiness.READY)
        return ReadyCheck(Readiness.PENDING, "model not loaded")

    def metrics(self, state: RolloutState, window_s: float) -> CanaryMetrics:
        model = self._serving(state.new_uri)
        version = model.version if model is not None else state.model_version
        requests, error_rate, p99 = self.engine.stats.window(version, window_s)
        return CanaryMetrics(requests=float(requests), error_rate=error_rate, p99_latency_ms=p99)

    def promote(self, state: RolloutState) -> None:
        r = self.engine.routing
        if not (r.primary is not None and r.primary.source == state.new_uri):
            self.engine.promote()
        self.save_state(state)

    def rollback(self, state: RolloutState) -> bool:
        r = self.engine.routing
        if r.second is not None and r.second.source == state.new_uri:
            self.engine.set_second(None, r.mode, 0)
        restore = state.initial and state.previous_uri
        if restore and r.primary is not None and r.primary.source == state.new_uri:
            self.engine.set_primary(self.load(state.previous_uri, ""))
        return True

    def describe(self) -> dict:
        r = self.engine.routing
        state = self.get_state()
        return {
            "primary": r.primary.version if r.primary else None,
            "second": r.second.version if r.second else None,
            "mode": r.mode,
            "percent": r.percent,
            "state": json.loads(state.to_json()) if state else None,
        }
