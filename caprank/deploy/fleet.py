"""The fleet rollout backend: `caprank serve` replicas driven over their admin API.

For serving without KServe (VMs, Compose, a plain Deployment behind a Service), or a
cluster-shaped run on one machine (``make e2e``): every replica in
``services.replica_urls`` gets the new registry version as its in-process canary
(``PUT /admin/canary``, ``canary.traffic_percent``% of its requests), the guardrails read
each replica's per-version window (``GET /admin/canary/metrics``) and the shared feedback
sink, and promotion or rollback is sent to every replica. Replicas load models only from
the registry, so a model reference here is a version number. Calls carry the admin
bearer token (``serving.admin_token_env``, from a Secret). A replica that does not answer
fails the poll (``MetricsUnavailable``) rather than thinning the evidence.

The rollout record is a JSON file in the controller's home (atomic writes): a controller
restarted in the same place resumes; a fresh pod starts over, and the replicas, whose
canary lives in memory, are the state that matters. After a promotion the replicas serve
the new version from memory and the `production` alias (moved by the deploy stage)
makes a restarted replica load the same one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caprank.deploy.backend import (
    CanaryMetrics,
    LiveModel,
    MetricsUnavailable,
    Readiness,
    ReadyCheck,
)
from caprank.deploy.state import RolloutState
from caprank.errors import CaprankError
from caprank.files import atomic_write_text


class FleetError(CaprankError):
    """A replica refused or failed an admin call; the message names the replica and call."""


@dataclass(frozen=True)
class Replica:
    """One replica's admin API."""

    url: str
    token: str
    timeout_s: float = 30.0

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, JSON body) of one admin call; ``OSError`` when the replica is away."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url.rstrip('/')}{path}", data=data, method=method)
        req.add_header("authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, {"error": text[:300]}

    def must(self, method: str, path: str, body: Any = None) -> Any:
        """``call`` that raises ``FleetError`` for anything but 2xx."""
        try:
            status, out = self.call(method, path, body)
        except OSError as exc:
            raise FleetError(f"replica {self.url}: {method} {path} failed ({exc})") from exc
        if not 200 <= status < 300:
            raise FleetError(f"replica {self.url}: {method} {path} answered {status}: {out}")
        return out


class FleetBackend:
    """``RolloutBackend`` over ``caprank serve`` replicas."""

    def __init__(self, replicas: list[Replica], state_file: str | Path, percent_mode: str):
        if not replicas:
            raise FleetError("the fleet target needs services.replica_urls")
        self.replicas = replicas
        self.state_file = Path(state_file)
        self.mode = percent_mode
        self.load_error: dict[str, str] = {}

    # ------------------------------------------------------------------- record
    def get_state(self) -> RolloutState | None:
        if not self.state_file.is_file():
            return None
        text = self.state_file.read_text(encoding="utf-8")
        return RolloutState.from_json(text, str(self.state_file))

    def save_state(self, state: RolloutState) -> None:
        atomic_write_text(self.state_file, state.to_json())

    # ------------------------------------------------------------------ serving
    def _statuses(self) -> list[dict]:
        return [r.must("GET", "/admin/status") for r in self.replicas]

    def live(self) -> LiveModel:
        """The primary every replica serves; a fleet that disagrees is an error."""
        primaries = {(s.get("primary") or {}).get("version") for s in self._statuses()}
        if len(primaries) != 1:
            found = sorted(map(str, primaries))
            raise FleetError(f"the replicas serve different primaries: {found}")
        (version,) = primaries
        return LiveModel(version, version is not None, "fleet")

    def set_canary(self, state: RolloutState) -> None:
        self.save_state(state)
        if state.initial:  # nothing serves yet: the new model takes everything
            method, path, body = "POST", "/admin/models/primary", {"ref": state.new_uri}
        else:
            mode, percent = self.mode, state.traffic_percent
            method, path = "PUT", "/admin/canary"
            body = {"ref": state.new_uri, "percent": percent, "mode": mode}
        for r in self.replicas:
            try:
                r.must(method, path, body)
            except FleetError as exc:
                self.load_error[state.new_uri] = str(exc)
                return

    def shift(self, state: RolloutState) -> None:
        body = {"ref": state.new_uri, "percent": state.traffic_percent, "mode": "split"}
        for r in self.replicas:
            r.must("PUT", "/admin/canary", body)
        self.save_state(state)

    def _serving(self, status: dict, version: str) -> bool:
        return any((status.get(k) or {}).get("version") == version for k in ("second", "primary"))

    def ready(self, state: RolloutState) -> ReadyCheck:
        if state.new_uri in self.load_error:
            return ReadyCheck(Readiness.FAILED, self.load_error[state.new_uri])
        try:
            statuses = self._statuses()
        except FleetError as exc:
            return ReadyCheck(Readiness.PENDING, str(exc))
        missing = [
            r.url for r, s in zip(self.replicas, statuses, strict=True)
            if not self._serving(s, state.new_uri)
        ]  # fmt: skip
        if missing:
            return ReadyCheck(Readiness.PENDING, f"not loaded on {', '.join(missing)}")
        return ReadyCheck(Readiness.READY)

    def metrics(self, state: RolloutState, window_s: float) -> CanaryMetrics:
        """Requests and errors summed over the replicas; p99 the worst replica's."""
        requests, errors, p99s = 0.0, 0.0, []
        query = f"/admin/canary/metrics?version={state.model_version}&window_s={window_s:.3f}"
        for r in self.replicas:
            try:
                status, out = r.call("GET", query)
            except OSError as exc:
                raise MetricsUnavailable(f"replica {r.url}: GET {query} failed ({exc})") from exc
            if status != 200:
                raise MetricsUnavailable(f"replica {r.url}: GET {query} answered {status}: {out}")
            n = float(out["requests"])
            requests += n
            errors += n * float(out["error_rate"] or 0.0)
            if out.get("p99_latency_ms") is not None:
                p99s.append(float(out["p99_latency_ms"]))
        return CanaryMetrics(
            requests=requests,
            error_rate=errors / requests if requests else None,
            p99_latency_ms=max(p99s) if p99s else None,
        )

    def promote(self, state: RolloutState) -> None:
        for r in self.replicas:
            status = r.must("GET", "/admin/status")
            if (status.get("primary") or {}).get("version") != state.new_uri:
                r.must("POST", "/admin/canary/promote")
        self.save_state(state)

    def rollback(self, state: RolloutState) -> bool:
        for r in self.replicas:
            status = r.must("GET", "/admin/status")
            if (status.get("second") or {}).get("version") == state.new_uri:
                r.must("DELETE", "/admin/canary")
            primary = (status.get("primary") or {}).get("version")
            if state.initial and state.previous_uri and primary == state.new_uri:
                r.must("POST", "/admin/models/primary", {"ref": state.previous_uri})
        return True


def fleet_backend(cfg) -> FleetBackend:
    """The fleet of ``cfg.services.replica_urls`` with the admin token from the env."""
    from caprank.deploy.state import rollout_state_path
    from caprank.online.control import admin_token

    token = admin_token(cfg.serving)
    if not token:
        raise FleetError(
            f"the fleet target needs the replicas' admin token in ${cfg.serving.admin_token_env}"
        )
    replicas = [Replica(url, token) for url in cfg.services.replica_urls]
    return FleetBackend(replicas, rollout_state_path(cfg), cfg.canary.mode)
