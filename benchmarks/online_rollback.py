"""Benchmark cell `rollback`: does the post-promotion watch roll back a worse model and
keep a better one?

Each trial runs the real controller (``run_rollout``: canary, guardrails, watch, promote
or roll back) on the real ``VirtualClock``, against an in-memory two-model backend whose
traffic is simulated: every poll interval sends ``rate_per_s`` requests, routed to the
new model with the backend's current share (the rest to the previous model), a
``feedback_rate`` share of them get an outcome, and an outcome is a success with the
serving model's true rate. The previous model succeeds at ``base_rate``; a worse
candidate at ``base_rate - worse_by``, a better one at ``base_rate + better_by``. The
watch's test and thresholds are the defaults of ``canary.watch`` unless overridden.

Acceptance (issue 15): a worse model is rolled back within the watch period in >= 95% of
seeds, a better one kept in >= 95%.

    python -m benchmarks.online_rollback [--seed 0] [--trials 100]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field

import numpy as np

from caprank.config import CanaryConfig
from caprank.deploy.backend import CanaryMetrics, LiveModel, Readiness, ReadyCheck
from caprank.deploy.controller import run_rollout
from caprank.deploy.state import RolloutState
from caprank.deploy.traffic import VirtualClock

OLD, NEW = "models:/ranker/1", "models:/ranker/2"
TARGET = 0.95


@dataclass
class SimTraffic:
    """Requests and outcomes per poll interval for two models with true success rates."""

    rates: dict[str, float]  # model version -> true success rate
    rate_per_s: float
    feedback_rate: float
    rng: np.random.Generator
    now: float = 0.0
    share_new: float = 0.0  # set by the backend
    log: list[tuple[float, str, int, int]] = field(default_factory=list)

    def run_for(self, seconds: float) -> None:
        n = self.rng.poisson(self.rate_per_s * seconds)
        to_new = self.rng.binomial(n, self.share_new)
        for version, requests in (("2", to_new), ("1", n - to_new)):
            events = self.rng.binomial(requests, self.feedback_rate)
            successes = self.rng.binomial(events, self.rates[version])
            self.log.append((self.now, version, int(successes), int(events)))
        self.now += seconds

    def success_counts(self, model_version: str, since: float) -> tuple[int, int]:
        s = n = 0
        for t, v, succ, events in self.log:
            if v == model_version and t >= since:
                s, n = s + succ, n + events
        return s, n

    def baseline_counts(self, model_version: str, since: float) -> tuple[int, int]:
        """Every other version's (successes, events): what the canary is held to."""
        s = n = 0
        for t, v, succ, events in self.log:
            if v != model_version and t >= since:
                s, n = s + succ, n + events
        return s, n


class SimBackend:
    """A ``RolloutBackend`` over ``SimTraffic``: the new model's share is the routing."""

    def __init__(self, traffic: SimTraffic):
        self.traffic = traffic
        self.state: RolloutState | None = None
        self.serving = OLD

    def get_state(self):
        return self.state

    def save_state(self, state):
        self.state = state

    def live(self):
        return LiveModel(self.serving, True, "sim")

    def _route(self, state, share):
        self.traffic.share_new = share / 100.0
        self.save_state(state)

    def set_canary(self, state):
        self._route(state, state.traffic_percent)

    def shift(self, state):
        self._route(state, state.traffic_percent)

    def ready(self, state):
        return ReadyCheck(Readiness.READY)

    def metrics(self, state, window_s):
        return CanaryMetrics(requests=1e6, error_rate=0.0, p99_latency_ms=10.0)

    def promote(self, state):
        self.serving = state.new_uri
        self._route(state, 100)

    def rollback(self, state):
        self._route(state, 0)
        return True


def trial(cfg: CanaryConfig, new_rate: float, base_rate: float, seed: int, **sim) -> dict:
    """One promotion of a model with success rate ``new_rate``; what the watch did."""
    traffic = SimTraffic({"1": base_rate, "2": new_rate}, rng=np.random.default_rng(seed), **sim)
    clock = VirtualClock(traffic.run_for, start=0.0)
    result = run_rollout(
        SimBackend(traffic), NEW, "2", cfg, quality=traffic, previous_version="1",
        now=clock.now, sleep=clock.sleep,
    )  # fmt: skip
    state = result.state
    assert state is not None and state.watch_started_at is not None, result.reason
    end = state.rollback_started_at if result.outcome == "rolled_back" else state.finished_at
    return {
        "outcome": result.outcome,
        "within_watch": end is not None and end - state.watch_started_at <= cfg.watch.period_s,
        "p_value": state.watch.get("p_value"),
    }


def run_rollback(
    seed: int,
    *,
    trials: int = 100,
    base_rate: float = 0.30,
    worse_by: float = 0.06,
    better_by: float = 0.02,
    rate_per_s: float = 30.0,
    feedback_rate: float = 0.5,
    mode: str = "holdback",
) -> dict:
    """Rates of rollback (worse) and keep (better) over ``trials`` seeds each."""
    start = time.perf_counter()
    base = CanaryConfig()
    # The cell measures the watch given a promotion, so the canary window's own quality
    # checks (relative drop, always-valid test) are off here: every trial is promoted.
    cfg = base.model_copy(
        update={
            "watch": base.watch.model_copy(update={"mode": mode}),
            "max_success_rate_drop": 1.0,
            "quality_alpha": 0.0,
            "allow_unmeasured": ["success_rate"],
        }
    )
    sim = {"rate_per_s": rate_per_s, "feedback_rate": feedback_rate}
    worse = [
        trial(cfg, base_rate - worse_by, base_rate, seed * 100_003 + i, **sim)
        for i in range(trials)
    ]
    better = [
        trial(cfg, base_rate + better_by, base_rate, seed * 100_003 + trials + i, **sim)
        for i in range(trials)
    ]
    rolled_back = np.mean([t["outcome"] == "rolled_back" and t["within_watch"] for t in worse])
    kept = np.mean([t["outcome"] == "promoted" for t in better])
    return {
        "cell": "rollback",
        "seed": seed,
        "trials": trials,
        "worse_rolled_back_rate": float(rolled_back),
        "better_kept_rate": float(kept),
        "target": TARGET,
        "met": {
            "worse_rolled_back_within_watch": bool(rolled_back >= TARGET),
            "better_kept": bool(kept >= TARGET),
        },
        "setup": {
            "base_success_rate": base_rate,
            "worse_by": worse_by,
            "better_by": better_by,
            "requests_per_s": rate_per_s,
            "feedback_rate": feedback_rate,
            "canary_window_s": cfg.window_s,
            "watch": cfg.watch.model_dump(),
        },
        "seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--mode", choices=["holdback", "shadow"], default="holdback")
    args = parser.parse_args()
    print(json.dumps(run_rollback(args.seed, trials=args.trials, mode=args.mode)))


if __name__ == "__main__":
    main()
