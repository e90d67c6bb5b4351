"""Benchmark: the feedback path under load, then ``kill -9`` of the server mid-stream.

A predictor runs in its own process (dense model over the embedded default catalog).
The load generator (this process) first ranks enough requests to have something to
give feedback on, then posts feedback events open-loop at a fixed rate (default 10,000
per minute for 5 minutes) from several threads, and sends SIGKILL to the server while
the stream is still going. The server is restarted (it recovers its write-ahead log),
and the stored log is compared with what was acknowledged: every acknowledged event must
be stored exactly once. Events whose fsync finished but whose response was cut by the
kill may be stored without an acknowledgement (at most the number in flight).

    make bench-feedback                 # or: python -m benchmarks.bench_feedback --duration 300

The last line printed is one JSON object of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.serving_proc import NO_RATE_LIMIT, Client, ServerProcess
from caprank.config import CaprankConfig
from caprank.data.ingest import read_feedback
from caprank.online.catalog import catalog_from_tables, write_catalog
from caprank.online.models import save_dense_model

INTENTS = [
    "book a table for two tonight",
    "convert this pdf to text and translate it",
    "what is the weather tomorrow in lyon",
    "send an invoice to my client",
    "find flights to tokyo next week",
    "summarize my unread emails",
    "plan a weekend trip with hotels",
    "track my package delivery",
]


def make_model_dir(cfg: CaprankConfig, root: Path) -> Path:
    """A dense model directory with the embedded default catalog inside."""
    from caprank.data.synth import synthesize

    ds = synthesize(cfg)
    model_dir = root / "model"
    save_dense_model(model_dir, cfg.embedding.text_model, version="dense-bench")
    write_catalog(catalog_from_tables(ds.tools, ds.capabilities, "synth"), model_dir)
    return model_dir


OVERRIDES = ["serving.feedback.compact_s=5", "serving.feedback.segment_events=2000", *NO_RATE_LIMIT]
PER_REQUEST = 10  # rankings per request: each one is a feedback slot


def rank_slots(server: ServerProcess, n_events: int) -> list[tuple[str, str]]:
    """(request id, capability id) pairs to give feedback on; intents repeat (cache hits)."""
    client = Client(server.port)
    slots = []
    for i in range(-(-n_events // PER_REQUEST)):
        code, body = client.post(
            f"/v1/models/{server.model_name}:predict",
            {"instances": [{"intent": INTENTS[i % len(INTENTS)], "top_k": PER_REQUEST}]},
        )
        assert code == 200, body
        pred = body["predictions"][0]
        slots += [(pred["request_id"], r["capability_id"]) for r in pred["rankings"]]
    client.close()
    return slots


@dataclass
class Tally:
    """What the feedback workers saw: acknowledged event ids, their latency, errors."""

    acked: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _worker(port: int, tasks: queue.Queue, stop: threading.Event, tally: Tally) -> None:
    """Post each queued slot's feedback until told to stop (``None``)."""
    c = Client(port, timeout=10)
    while True:
        item = tasks.get()
        if item is None:
            return
        _due, (rid, cap) = item
        if stop.is_set():
            continue
        t0 = time.perf_counter()
        try:
            code, body = c.post(
                "/v1/feedback",
                {"request_id": rid, "selected_capability": cap, "outcome": "success",
                 "execution_time_ms": 100.0, "rating": 5},
            )  # fmt: skip
        except OSError as exc:
            tally.errors[type(exc).__name__] += 1
            c.close()
            continue
        dt = time.perf_counter() - t0
        with tally.lock:
            if code == 200 and body.get("status") in ("stored", "duplicate"):
                tally.acked.append(body["event_id"])
                tally.latencies.append(dt)
            else:
                tally.errors[f"http_{code}"] += 1


def _pace(
    server: ServerProcess,
    slots: list,
    tasks: queue.Queue,
    rate: float,
    duration_s: float,
    kill: bool,
) -> tuple[float | None, float]:
    """Queue slots open-loop at ``rate`` per second; with ``kill``, SIGKILL the server at
    ``duration_s`` and keep sending for one more second. Returns (killed_at, elapsed)."""
    start = time.perf_counter()
    killed_at = None
    for i, slot in enumerate(slots):
        due = start + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        if kill and killed_at is None and now - start >= duration_s:
            server.kill()  # SIGKILL while workers still have requests in flight
            killed_at = time.perf_counter() - start
        if killed_at is not None and time.perf_counter() - start > killed_at + 1.0:
            break
        if not kill and now - start >= duration_s:
            break
        tasks.put((due, slot))
    return killed_at, time.perf_counter() - start


def stream_feedback(
    server: ServerProcess,
    slots: list,
    rate: float,
    duration_s: float,
    threads: int,
    kill: bool,
) -> tuple[Tally, float | None, float]:
    """The open-loop feedback stream from ``threads`` workers: (tally, killed_at, elapsed)."""
    tasks: queue.Queue = queue.Queue()
    tally = Tally()
    stop = threading.Event()
    pool = [
        threading.Thread(target=_worker, args=(server.port, tasks, stop, tally), daemon=True)
        for _ in range(threads)
    ]
    for t in pool:
        t.start()
    killed_at, elapsed = _pace(server, slots, tasks, rate, duration_s, kill)
    stop.set()
    for _ in pool:
        tasks.put(None)
    for t in pool:
        t.join(timeout=30)
    return tally, killed_at, elapsed


def figures(tally: Tally, stored: list[str], phase: float, rate_per_min: float, kill: bool) -> dict:
    """The benchmark's JSON: acknowledged vs stored, throughput, acknowledgement latency."""
    counts = Counter(stored)
    acked_set = set(tally.acked)
    lat = np.array(tally.latencies) * 1000
    return {
        "bench": "feedback",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "duration_s": round(phase, 2),
        "target_rate_per_min": rate_per_min,
        "acknowledged": len(acked_set),
        "stored": len(counts),
        "acknowledged_missing": len(acked_set - set(counts)),
        "duplicates": sum(c - 1 for c in counts.values() if c > 1),
        "stored_without_ack": len(set(counts) - acked_set),
        "throughput_per_min": round(len(tally.acked) / phase * 60, 1) if phase else None,
        "ack_p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "ack_p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
        "client_errors": dict(tally.errors),
        "killed": kill,
    }


def run(
    duration_s: float = 300.0,
    rate_per_min: float = 10_000.0,
    threads: int = 8,
    home: str | Path | None = None,
    kill: bool = True,
) -> dict:
    """Rank, stream feedback (killing the server mid-stream), restart, compare."""
    tmp = None
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix="caprank-bench-feedback-")
        home = tmp.name
    home = Path(home)
    cfg = CaprankConfig.model_validate({"paths": {"home": str(home)}})
    model_dir = make_model_dir(cfg, home)
    server = ServerProcess(model_dir, home, overrides=OVERRIDES).start()
    rate = rate_per_min / 60.0
    n_events = int(rate * duration_s) + threads * 50  # enough for the stream past the kill
    slots = rank_slots(server, n_events)
    tally, killed_at, elapsed = stream_feedback(server, slots, rate, duration_s, threads, kill)
    if not kill:
        server.kill()
    # restart: recovery compacts the write-ahead log; read what is stored
    server2 = ServerProcess(model_dir, home, port=server.port, overrides=OVERRIDES).start()
    server2.kill(15)
    stored = read_feedback(cfg)["event_id"].to_pylist()
    phase = killed_at if killed_at is not None else elapsed
    result = figures(tally, stored, phase, rate_per_min, kill)
    if tmp is not None:
        tmp.cleanup()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds before kill -9")
    parser.add_argument("--rate", type=float, default=10_000.0, help="events per minute")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    result = run(args.duration, args.rate, args.threads)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
