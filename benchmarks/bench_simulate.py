"""Benchmark: synthesize the default dataset, then simulate 1,000,000 logged events.

Baseline, measured in the same run: a straightforward per-event Python loop over the
same World and policy (same greedy slates, same user model), timed on a sample of
events and compared per event. The last line printed is one JSON object of figures.

    make bench-simulate            # or: python -m benchmarks.bench_simulate [--events N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import numpy as np
import pyarrow as pa

from caprank.config import CaprankConfig
from caprank.data.schemas import INTERACTIONS, OUTCOMES
from caprank.data.simulate import FEEDBACK_GIVEN_OUTCOME, build_world, simulate_logs
from caprank.data.synth import synthesize
from caprank.data.world import SlatePolicy, World


def loop_simulate(world: World, policy: SlatePolicy, cfg: CaprankConfig, n: int) -> pa.Table:
    """The per-event loop a first implementation would write (one day, no sessions)."""
    rng = np.random.default_rng(0)
    sim = cfg.data.simulate
    day = 0
    p_intent = world.intent_distribution(day)
    greedy = world.greedy_slates(policy, day)
    avail = np.flatnonzero(world.available(day))
    slate_n = world.slate_length(day)
    w = world.position_weights(slate_n)
    cap_rel = world.capability_reliability(day)
    rows = []
    for e in range(n):
        i = int(rng.choice(len(p_intent), p=p_intent))
        explore = rng.random() < policy.epsilon
        slate = rng.choice(avail, slate_n, replace=False) if explore else greedy[i]
        k = int(rng.choice(slate_n, p=w))
        c = int(slate[k])
        prop = policy.epsilon / len(avail) + (1 - policy.epsilon) * (greedy[i, k] == c)
        q, r = world.relevance[i, c], cap_rel[c]
        ps = q * r
        pp = q * (1 - r) * world.partial_if_tool_fails + (1 - q) * world.partial_if_unfit
        u = rng.random()
        outcome = 0 if u < ps else (1 if u < ps + pp else 2)
        ms = 0.0
        for t in world.cap_tools[c]:
            if t >= 0:
                ms += math.exp(world.latency_mu[t] + world.latency_sigma[t] * rng.normal())
        fb = None
        if rng.random() < sim.feedback_rate:
            fb = int(rng.choice(5, p=FEEDBACK_GIVEN_OUTCOME[outcome])) + 1
        rows.append(
            {
                "event_id": f"loop-{e:08d}",
                "timestamp": world.start,
                "session_id": f"loop-{e:08d}",
                "user_id": None,
                "intent_id": world.intent_ids[i],
                "intent_text": world.intent_texts[i],
                "context_tools": [],
                "candidate_ids": [world.capability_ids[x] for x in slate],
                "selected_capability": world.capability_ids[c],
                "rank": k + 1,
                "outcome": OUTCOMES[outcome],
                "execution_time_ms": ms,
                "feedback": fb,
                "propensity": float(prop),
                "model_version": policy.name,
            }
        )
    return pa.Table.from_pylist(rows, schema=INTERACTIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--baseline-events", type=int, default=20_000)
    args = parser.parse_args()

    cfg = CaprankConfig()
    t0 = time.perf_counter()
    ds = synthesize(cfg)
    synth_s = time.perf_counter() - t0

    cfg.data.simulate.events_per_day = math.ceil(args.events / cfg.data.synth.days)
    t0 = time.perf_counter()
    world = build_world(ds, cfg)
    policy = world.policy(cfg.data.simulate.policy, cfg.data.simulate.epsilon)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    logs = simulate_logs(world, policy, cfg.data.simulate)
    sim_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    base = loop_simulate(world, policy, cfg, args.baseline_events)
    base_s = time.perf_counter() - t0

    rate = logs.num_rows / sim_s
    base_rate = base.num_rows / base_s
    figures = {
        "benchmark": "simulate",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "synth_defaults_s": round(synth_s, 3),
        "synth_rows": {name: t.num_rows for name, t in ds.tables().items() if t.num_rows},
        "world_and_policy_s": round(setup_s, 3),
        "events": logs.num_rows,
        "simulate_s": round(sim_s, 3),
        "events_per_s": round(rate),
        "baseline_loop_events": base.num_rows,
        "baseline_loop_s": round(base_s, 3),
        "baseline_loop_events_per_s": round(base_rate),
        "speedup_vs_loop": round(rate / base_rate, 1),
    }
    print(f"synthesized the defaults in {synth_s:.2f} s; {logs.num_rows} events in {sim_s:.2f} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
