"""Cold-start tuning without the test split: a pseudo-cold split carved from train.

The cold split's own validation intents point at warm capabilities, so its validation
MRR says nothing about unseen capabilities. This script holds out a further seeded
share of the cold split's *training* capabilities (their train labels become the
pseudo test; the real test labels are dropped, never read), trains with the resolved
config (``--set`` overrides) and prints SHGAT and baseline metrics on those held-out
capabilities. Settings are chosen on this figure and the warm validation MRR; the
real test figures come only from ``bench_quality``. ``caprank tune --setting cold``
searches on the same split automatically (its held-out labels as the validation).

    python -m benchmarks.tune_cold --set training.id_dropout=0.3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from caprank.config import load_config
from caprank.data.dataset import load_dataset, write_dataset
from caprank.evaluation.benchmark import benchmark_dataset
from caprank.training.tune import pseudo_cold


def pseudo_cold_dir(src: Path, out: Path, fraction: float, seed: int) -> Path:
    """``src``'s pseudo-cold split (``caprank.training.tune.pseudo_cold``, the held-out
    capabilities' train labels as 'test') written to ``out``, once."""
    if not out.exists():
        write_dataset(pseudo_cold(load_dataset(src), fraction, seed, held_split="test"), out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=".bench/quality")
    parser.add_argument("--home", default=".bench/home")
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    work = Path(args.work)
    cfg = load_config(
        overrides=[
            f"paths.home={args.home}",
            f"training.torch_threads={args.threads}",
            *args.overrides,
        ]
    )
    ds_dir = pseudo_cold_dir(
        work / "toollens-cold", work / "toollens-pseudocold", args.fraction, args.seed
    )
    row = benchmark_dataset(ds_dir, cfg, work / "runs" / "pseudocold", emb_dir=work / "embeddings")
    print(json.dumps({"overrides": args.overrides, "pseudocold": row}))


if __name__ == "__main__":
    main()
