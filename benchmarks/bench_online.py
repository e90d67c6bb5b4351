"""Benchmark: the online-learning cells of issue 15, each on a simulator with a known truth.

Every cell is a module ``benchmarks/online_<cell>.py`` with a ``run_<cell>(seed)``
function returning a dict with a ``met`` mapping (criterion -> bool). ``CELLS`` lists
them; a cell whose module is not in the tree yet is reported as missing, not run.

    make bench-online            # or: python -m benchmarks.bench_online --seed 7 --only ab

The last line printed is one JSON object: each cell's figures, and ``met`` (every
criterion of every cell that ran held).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time

CELLS = ("ab", "update", "rollback", "active")


def run_cells(seed: int, only: list[str] | None = None) -> dict:
    out: dict = {"seed": seed, "cells": {}, "missing": []}
    for cell in CELLS:
        if only and cell not in only:
            continue
        try:
            module = importlib.import_module(f"benchmarks.online_{cell}")
        except ModuleNotFoundError as exc:
            if exc.name != f"benchmarks.online_{cell}":
                raise
            out["missing"].append(cell)
            continue
        start = time.perf_counter()
        result = getattr(module, f"run_{cell}")(seed)
        result.setdefault("seconds", round(time.perf_counter() - start, 1))
        out["cells"][cell] = result
        print(f"{cell}: {json.dumps(result)}", flush=True)
    out["met"] = bool(out["cells"]) and all(
        all(c.get("met", {}).values()) for c in out["cells"].values()
    )
    out["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", choices=CELLS, help="run only these cells")
    args = ap.parse_args()
    print(json.dumps(run_cells(args.seed, args.only), sort_keys=True))


if __name__ == "__main__":
    main()
