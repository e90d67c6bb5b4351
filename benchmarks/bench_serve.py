"""Benchmark: predictor latency and throughput on loopback, against two baselines.

Setup (in a temporary home): a 10,000-capability catalog synthesized with
``caprank.data.synth``, a few days of simulated logs, its capability features and text
embeddings published to a Feast SQLite store, a dense model directory. Then server
processes, one after the other: the caprank predictor (first with an empty embedding
cache: the cold catalog build, then warm), a no-op ``kserve.Model`` (the floor of HTTP +
JSON + KServe) and the naive path (per-request Feast read of the candidates' features and
embeddings, the same intent encoder, no cache, no precomputation). The load generator is
this process.

Honest measurement: it refuses to start when the 1-minute load average is above
``--max-load`` (other work on the machine) unless ``--allow-contended``, which marks the
output ``"contended": true`` (so does other work that shows up during the run: the CPU
the whole machine spent, from ``/proc/stat``, less this process tree's own, above
``OTHERS_MAX_CORES``; the load average at the end cannot tell, it counts the benchmark's
own server and load generator); it records the load before and after; on a machine with
two or more cores it pins the servers to one set of cores and the load generator to the
other.

Per candidate count (100, 1,000, 10,000): p50/p99 at a fixed open-loop rate (50 req/s;
latency counted from each request's scheduled time) with unique intents (cache misses)
and repeated intents (cache hits); the no-op server on the same requests; closed-loop
throughput. Like for like against the naive path: both sequential and unqueued, and both
at the open-loop rate (cache misses). Batching of intent encoding is measured on and off
(closed loop, cache misses). The last line printed is one JSON object with all figures,
ratios, and ``targets`` (issue 16's acceptance) with ``met`` per target.

    make bench-serve        # or: python -m benchmarks.bench_serve [--seconds 8]
    python -m benchmarks.bench_serve --capabilities 300 --sizes 100 --seconds 1 \
        --allow-contended   # a quick check that it works end to end (figures meaningless)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import queue
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.serving_proc import NO_RATE_LIMIT, ROOT, ServerProcess
from caprank.config import CaprankConfig
from caprank.data.schemas import CAPABILITY_EMBEDDINGS, EMBEDDING_TABLES, TOOL_EMBEDDINGS
from caprank.embeddings.backend import cache_for, encode_with
from caprank.embeddings.cache import encode_cached
from caprank.embeddings.catalog_text import tool_texts
from caprank.files import text_hash
from caprank.online.catalog import catalog_from_tables, write_catalog
from caprank.online.intents import serving_backend
from caprank.online.models import save_dense_model

SIZES = (100, 1000, 10_000)
RATE = 50.0
MAX_LOAD = 0.5  # 1-minute load average above which the machine counts as busy
NAIVE_OPEN_LOOP = {100: 200, 1000: 100}  # requests per naive open-loop cell (10,000: 25)
WORDS = [
    "book",
    "flight",
    "hotel",
    "weather",
    "invoice",
    "email",
    "translate",
    "summarize",
    "track",
    "order",
    "pay",
]
CACHE = ROOT / ".bench" / "embedding-cache"


def _embedding_table(schema, key, ids, texts, vecs, model, now) -> pa.Table:
    vec = pa.array([v.tolist() for v in vecs], pa.list_(pa.float32()))
    unit = pa.array([[1.0, 0.0]] * len(ids), pa.list_(pa.float32()))
    n = len(ids)
    return pa.table(
        {
            key: ids, "text_sha256": [text_hash(t) for t in texts], "text_embedding": vec,
            "graph_embedding": unit, "hybrid_embedding": vec, "text_model": [model] * n,
            "params_json": ["{}"] * n, "input_hash": ["bench"] * n,
            "computed_at": pa.array([now] * n, pa.timestamp("us", "UTC")),
            "event_timestamp": pa.array([now] * n, pa.timestamp("us", "UTC")),
        },
        schema=schema.remove_metadata(),
    )  # fmt: skip


def setup(home: Path, n_caps: int) -> tuple[CaprankConfig, Path, list[str], float]:
    """The dataset, features, published embeddings and dense model; and the seconds the
    serving encoder's first use took (its ONNX export when none is cached)."""
    from caprank.data.simulate import simulate
    from caprank.data.synth import synthesize
    from caprank.embeddings.publish import publish_embeddings
    from caprank.features.stage import build_features

    cfg = CaprankConfig.model_validate(
        {
            "paths": {"home": str(home)},
            "embedding": {"cache_dir": str(CACHE)},
            "data": {
                "synth": {"n_capabilities": n_caps, "n_tools": 1000, "intents_per_capability": 1,
                          "days": 3},
                "simulate": {"events_per_day": 2000, "n_users": 200},
            },
        }
    )  # fmt: skip
    t0 = time.perf_counter()
    ds = synthesize(cfg)
    ds.interactions = simulate(ds, cfg)
    catalog = catalog_from_tables(ds.tools, ds.capabilities, "bench")
    build_features(ds, cfg, cfg.features_dir())
    model = cfg.embedding.text_model
    export_s = prepare_encoder(cfg)
    backend = serving_backend(cfg, catalog=True)  # the encoder the predictor will use
    cache = cache_for(CACHE, model, backend)
    batch = cfg.embedding.batch_size
    cap_vecs, _ = encode_cached(list(catalog.texts), model, cache, batch, "cpu", backend.encode)
    ttexts = tool_texts(ds.tools)
    tool_vecs, _ = encode_cached(ttexts, model, cache, batch, "cpu", backend.encode)
    now = datetime.now(UTC)
    embed_dir = home / "embed"
    embed_dir.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    pq.write_table(
        _embedding_table(CAPABILITY_EMBEDDINGS, "capability_id", list(catalog.ids),
                         catalog.texts, cap_vecs, model, now),
        embed_dir / EMBEDDING_TABLES["capability_embeddings"].file,
    )  # fmt: skip
    pq.write_table(
        _embedding_table(TOOL_EMBEDDINGS, "tool_id", ds.tools["tool_id"].to_pylist(), ttexts,
                         tool_vecs, model, now),
        embed_dir / EMBEDDING_TABLES["tool_embeddings"].file,
    )  # fmt: skip
    publish_embeddings(cfg, embed_dir)
    model_dir = home / "model"
    save_dense_model(model_dir, model, version="dense-bench")
    write_catalog(catalog, model_dir)
    print(f"setup: {n_caps} capabilities published in {time.perf_counter() - t0:.1f}s", flush=True)
    return cfg, model_dir, list(catalog.ids), export_s


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> int:
    conn.request("POST", path, body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def bodies(ids: list[str], size: int, n: int, unique: bool, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = rng.choice(WORDS, 4)
        intent = " ".join(words) + (f" request {seed}-{i}" if unique else "")
        if not unique:
            intent = f"{WORDS[i % 8]} and {WORDS[(i + 3) % 11]}"
        cands = rng.choice(len(ids), size, replace=False)
        inst = {"intent": intent, "candidate_ids": [ids[j] for j in cands], "top_k": 10}
        out.append(json.dumps({"instances": [inst]}).encode())
    return out


def distinct_intents(payloads: list[bytes]) -> dict[str, bytes]:
    """The first payload of each distinct intent (the hit cells repeat a few intents)."""
    first: dict[str, bytes] = {}
    for body in payloads:
        first.setdefault(json.loads(body)["instances"][0]["intent"], body)
    return first


def open_loop(port: int, path: str, payloads: list[bytes], rate: float, workers: int = 12):
    """Latency (ms, from each request's scheduled time) at a fixed arrival rate."""
    tasks: queue.Queue = queue.Queue()
    lat, errors = [], []
    lock = threading.Lock()

    def work():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while (item := tasks.get()) is not None:
            due, body = item
            try:
                code = _post(conn, path, body)
            except OSError as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                code = type(exc).__name__
            done = time.perf_counter()
            with lock:
                (lat.append((done - due) * 1000) if code == 200 else errors.append(code))

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    start = time.perf_counter() + 0.05
    for i, body in enumerate(payloads):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        tasks.put((due, body))
    for _ in threads:
        tasks.put(None)
    for t in threads:
        t.join()
    return np.array(lat), errors


def sequential(port: int, path: str, payloads: list[bytes]) -> np.ndarray:
    """Latency (ms) of requests sent one after the other: no queueing at all."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    lat = []
    for body in payloads:
        t0 = time.perf_counter()
        if _post(conn, path, body) != 200:
            raise RuntimeError(f"request to {path} failed")
        lat.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return np.array(lat)


def closed_loop(port: int, path: str, payloads: list[bytes], concurrency: int, seconds: float):
    """Requests per second with ``concurrency`` clients each waiting for its answer."""
    count = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def work(k: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        while time.perf_counter() < stop:
            if _post(conn, path, payloads[i % len(payloads)]) == 200:
                with lock:
                    count[0] += 1
            i += concurrency

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count[0] / (time.perf_counter() - t0)


def _pct(lat: np.ndarray) -> dict:
    if not len(lat):
        return {"p50_ms": None, "p99_ms": None}
    return {"p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3)}  # fmt: skip


def measure(name: str, server: ServerProcess, ids, seconds: float, sizes, warm_hits: bool):
    path = f"/v1/models/{server.model_name}:predict"
    n = int(RATE * seconds)
    out = {}
    for size in sizes:
        miss = bodies(ids, size, n, unique=True, seed=size)
        hit = bodies(ids, size, n, unique=False, seed=size + 1)
        if warm_hits:  # every distinct intent twice: its vector, then its catalog scores
            sequential(server.port, path, list(distinct_intents(hit).values()) * 2)
        lat_miss, err_miss = open_loop(server.port, path, miss, RATE)
        lat_hit, err_hit = open_loop(server.port, path, hit, RATE)
        seq = bodies(ids, size, _naive_requests(size), unique=True, seed=7 * size)
        lat_seq = sequential(server.port, path, seq)  # the naive path's sequential requests
        fresh = bodies(ids, size, n, unique=True, seed=size + 10_000)  # never seen: misses
        out[size] = {
            "miss": {**_pct(lat_miss), "errors": len(err_miss)},
            "miss_sequential": {**_pct(lat_seq), "requests": len(seq)},
            "hit": {**_pct(lat_hit), "errors": len(err_hit)},
            "throughput_miss_rps": round(closed_loop(server.port, path, fresh, 4, seconds / 2), 1),
            "throughput_hit_rps": round(closed_loop(server.port, path, hit, 4, seconds / 2), 1),
        }
        print(name, size, json.dumps(out[size]), flush=True)
    return out


def _naive_requests(size: int) -> int:
    return {100: 20, 1000: 10}.get(size, 3)


def naive_latency(server: ServerProcess, ids, sizes) -> dict:
    """The naive path sequential (the same intents as the predictor's sequential cell)
    and at the open-loop rate (fewer requests: it queues)."""
    path = f"/v1/models/{server.model_name}:predict"
    out = {}
    for size in sizes:
        seq = bodies(ids, size, _naive_requests(size), unique=True, seed=7 * size)
        lat_seq = sequential(server.port, path, seq)
        n_open = NAIVE_OPEN_LOOP.get(size, 25)
        lat_open, err = open_loop(server.port, path, bodies(ids, size, n_open, True, size), RATE)
        out[size] = {
            "sequential": {**_pct(lat_seq), "requests": len(seq)},
            "open_loop": {**_pct(lat_open), "requests": n_open, "errors": len(err)},
        }
        print("naive", size, json.dumps(out[size]), flush=True)
    return out


def batching(model_dir, home, ids, seconds: float, cpus) -> dict:
    out = {}
    payloads = bodies(ids, min(1000, len(ids)), 400, unique=True, seed=99)
    for on in (True, False):
        over = [f"serving.intents.batch={str(on).lower()}", f"embedding.cache_dir={CACHE}"]
        srv = ServerProcess(model_dir, home, overrides=[*over, *NO_RATE_LIMIT], cpus=cpus).start()
        path = f"/v1/models/{srv.model_name}:predict"
        out["on" if on else "off"] = round(closed_loop(srv.port, path, payloads, 8, seconds), 1)
        srv.kill(15)
    print("batching", json.dumps(out), flush=True)
    return out


def _ratio(a, b):
    return None if a is None or not b else a / b


def targets(figures: dict, build: dict) -> dict:
    """Issue 16's acceptance: each target's value, limit and whether it is met (a target
    whose cell was not run counts as not met)."""

    def cell(size: int) -> dict:
        return figures.get(str(size), {})

    def get(size: int, *keys):
        node = cell(size)
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        return node

    c1, c10 = 1000, 10_000
    hit_over = get(c1, "hit_p50_over_noop_ms")
    checks = {
        "c1000_miss_p50_le_12ms": (get(c1, "caprank", "miss", "p50_ms"), 12.0, "le"),
        "c1000_miss_p99_le_30ms": (get(c1, "caprank", "miss", "p99_ms"), 30.0, "le"),
        "c1000_hit_p50_le_noop_plus_1ms": (hit_over, 1.0, "le"),
        "c10000_miss_p50_le_20ms": (get(c10, "caprank", "miss", "p50_ms"), 20.0, "le"),
        "c10000_miss_p99_le_50ms": (get(c10, "caprank", "miss", "p99_ms"), 50.0, "le"),
        "catalog_build_cold_lt_120s": (build.get("cold_start_s"), 120.0, "lt"),
        "c1000_hit_throughput_ge_60pct_noop": (get(c1, "hit_throughput_over_noop"), 0.6, "ge"),
        "c1000_naive_ge_20x_miss_sequential": (get(c1, "naive_over_miss_p50_sequential"), 20.0,
                                               "ge"),
        "c1000_naive_ge_20x_miss_open_loop": (get(c1, "naive_over_miss_p50_open_loop"), 20.0,
                                              "ge"),
    }  # fmt: skip
    out = {}
    for name, (value, limit, op) in checks.items():
        met = value is not None and (
            value <= limit if op == "le" else value < limit if op == "lt" else value >= limit
        )
        out[name] = {
            "value": None if value is None else round(value, 3),
            "limit": limit,
            "op": op,
            "met": bool(met),
        }
    return out


def pin_cores() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, load-generator cores): split where two or more cores are ours."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    half = len(cores) // 2
    return set(cores[half:]), set(cores[:half])


OTHERS_MAX_CORES = 0.1  # other processes' mean CPU (in cores) above which a run is contended


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the machine has been busy, CPU seconds of this process and its reaped
    children): their difference over a run is what everything else used."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf(
        "SC_CLK_TCK"
    ), own.user + own.system + own.children_user + own.children_system


def check_load(max_load: float, allow_contended: bool) -> bool:
    """True when the machine is busy; refuses (exits) then unless contention is allowed."""
    load = os.getloadavg()[0]
    if load <= max_load:
        return False
    if not allow_contended:
        raise SystemExit(
            f"bench-serve: 1-minute load average {load:.2f} > {max_load} (other work is "
            "running); wait for a quiet machine, or pass --allow-contended (the output is "
            'then marked "contended": true)'
        )
    print(f"bench-serve: load {load:.2f} > {max_load}: figures marked contended", flush=True)
    return True


def catalog_build(model_dir, home, cpus, ids) -> dict:
    """Seconds from process start to ready with an empty embedding cache (the catalog's
    text vectors come from what setup published to Feast, as the embed stage's do in the
    pipeline; the ONNX export is made before, once), then with a warm one."""
    cold_cache = home / "cold-embedding-cache"
    over = [f"embedding.cache_dir={cold_cache}"]
    out = {}
    for name in ("cold", "warm"):
        srv = ServerProcess(model_dir, home, overrides=over, cpus=cpus).start(timeout_s=900)
        out[f"{name}_start_s"] = round(srv.started_s, 2)
        srv.kill(15)
    out["capabilities"] = len(ids)
    print("catalog build", json.dumps(out), flush=True)
    return out


def prepare_encoder(cfg: CaprankConfig) -> float:
    """Make the serving encoder's export now (first use), so no server start pays for it."""
    t0 = time.perf_counter()
    encode_with(["warm up"], cfg.embedding.text_model, 1, "cpu", serving_backend(cfg))
    return round(time.perf_counter() - t0, 2)


def run(
    seconds: float = 8.0,
    n_caps: int = 10_000,
    sizes: tuple[int, ...] = SIZES,
    max_load: float = MAX_LOAD,
    allow_contended: bool = False,
) -> dict:
    contended = check_load(max_load, allow_contended)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    cpu_start = cpu_seconds()
    tmp = tempfile.TemporaryDirectory(prefix="caprank-bench-serve-")
    home = Path(tmp.name)
    cfg, model_dir, ids, export_s = setup(home, n_caps)
    sizes = tuple(s for s in sizes if s <= len(ids))
    server_cpus, client_cpus = pin_cores()
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    build = catalog_build(model_dir, home, server_cpus, ids)
    over = [f"embedding.cache_dir={CACHE}", *NO_RATE_LIMIT]
    srv = ServerProcess(model_dir, home, overrides=over, cpus=server_cpus).start(timeout_s=300)
    caprank = measure("caprank", srv, ids, seconds, sizes, warm_hits=True)
    srv.kill(15)
    noop = ServerProcess(model_dir, home, module="benchmarks.serve_baselines --kind noop",
                         cpus=server_cpus).start()  # fmt: skip
    floor = measure("noop", noop, ids, seconds, sizes, warm_hits=False)
    noop.kill(15)
    naive_srv = ServerProcess(model_dir, home, overrides=over, cpus=server_cpus,
                              module="benchmarks.serve_baselines --kind naive").start()  # fmt: skip
    naive = naive_latency(naive_srv, ids, sizes)
    naive_srv.kill(15)
    batch = batching(model_dir, home, ids, seconds, server_cpus)
    figures = {}
    for s in sizes:
        c, f, n = caprank[s], floor[s], naive[s]
        figures[str(s)] = {
            "caprank": c, "noop": f, "naive": n,
            "hit_p50_over_noop_ms": round(c["hit"]["p50_ms"] - f["hit"]["p50_ms"], 3),
            "hit_throughput_over_noop": _round(_ratio(c["throughput_hit_rps"],
                                                      f["throughput_hit_rps"])),
            "naive_over_miss_p50_sequential": _round(_ratio(n["sequential"]["p50_ms"],
                                                            c["miss_sequential"]["p50_ms"])),
            "naive_over_miss_p50_open_loop": _round(_ratio(n["open_loop"]["p50_ms"],
                                                           c["miss"]["p50_ms"])),
        }  # fmt: skip
    tmp.cleanup()
    load_end = os.getloadavg()
    cpu_end = cpu_seconds()
    wall = time.perf_counter() - t_start
    others = ((cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / wall
    contended = contended or others > OTHERS_MAX_CORES
    return {
        "bench": "serve",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "contended": contended,
        "loadavg_1m_start_end": [round(load_start[0], 2), round(load_end[0], 2)],
        "other_processes_mean_cores": round(others, 3),
        "max_load": max_load,
        "pinning": {
            "server_cpus": sorted(server_cpus or ()),
            "load_generator_cpus": sorted(client_cpus or ()),
        },
        "wall_s": round(time.perf_counter() - t_start, 1),
        "rate_rps": RATE,
        "seconds_per_cell": seconds,
        "catalog": len(ids),
        "text_model": cfg.embedding.text_model,
        "text_backend": cfg.serving.intents.backend,
        "quantize": cfg.serving.intents.quantize,
        "onnx_export_s": export_s,
        "catalog_build": build,
        "by_candidates": figures,
        "batching_closed_loop_rps": batch,
        "batching_speedup": round(batch["on"] / batch["off"], 2) if batch.get("off") else None,
        "targets": targets(figures, build),
    }


def _round(x, nd: int = 2):
    return None if x is None else round(x, nd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per open-loop cell")
    parser.add_argument("--capabilities", type=int, default=10_000)
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="candidate counts, comma-separated"
    )
    parser.add_argument("--max-load", type=float, default=MAX_LOAD, help="1-minute load limit")
    parser.add_argument(
        "--allow-contended",
        action="store_true",
        help='run on a busy machine anyway; the output says "contended": true',
    )
    args = parser.parse_args()
    sizes = tuple(int(x) for x in args.sizes.split(",") if x.strip())
    result = run(args.seconds, args.capabilities, sizes, args.max_load, args.allow_contended)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
