"""Ranking quality: SHGAT vs BM25, dense cosine and logistic regression.

On ToolLens by default, three settings, each trained from scratch with the resolved
config (defaults unless ``--set`` overrides), on 2 CPU threads unless told otherwise:

* ``warm``: the official split (every test capability has training intents);
* ``cold``: the importer's cold split (a seeded 20% of capabilities never in training);
* ``logs``: setting (b): no labels in training, only interaction logs simulated under
  the weak BM25 logging policy (epsilon-greedy); evaluated on the held-out test labels
  beside that logging policy's own ranking.

The encoder is fine-tuned per setting (``embedding.finetune``, on that setting's
training pairs: labels, or for ``logs`` the logged successes), as a production run on a
real catalog should: the ``dense_ft`` row (cosine with the fine-tuned encoder) stands
beside ``dense`` (the base one) and SHGAT trains and serves on the fine-tuned vectors.
``--base-encoder`` leaves the encoder as it ships (the product's default, which spares
``make run`` and the tests the fine-tuning budget).

With ``--data DIR`` any dataset directory in the data contract is benchmarked instead
(its test labels, or for a dataset without labels the latest period of its log), one
row named after the folder; ``caprank benchmark --data DIR`` is the same run on the
config as given (fine-tuning only where that config turns it on).

SHGAT is scored exactly as serving and the evaluation reports score it
(``caprank.evaluation.benchmark``). Metrics are capability-level MRR, Hit@1/3/5/10 and
NDCG@10 over the whole catalog, and ``segments``: each ranker's MRR on the test intents
whose answer SHGAT has training evidence for and on those it has none for. The last line
of output is one JSON object keyed by split and ranker.

    python -m benchmarks.bench_quality --toollens ../shared/data/toollens
    python -m benchmarks.bench_quality --data data/my-catalog
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from caprank.config import load_config
from caprank.data.dataset import load_dataset, write_dataset
from caprank.data.simulate import simulate, simulation_metadata
from caprank.data.toollens import import_toollens
from caprank.evaluation.benchmark import benchmark_dataset, ensure_embeddings, machine


def toollens_plan(args, work: Path, cfg) -> dict:
    """The ToolLens settings: (dataset dir, config, baselines left out) per split."""
    datasets = {}
    for split in ("official", "cold"):
        path = work / f"toollens-{split}"
        if not path.exists():
            write_dataset(import_toollens(args.toollens, split=split), path)
        datasets[split] = path
    logs_dir = work / "toollens-logs"
    if "logs" in args.splits and not logs_dir.exists():
        ds = load_dataset(datasets["official"])
        ds.interactions = simulate(ds, cfg)
        write_dataset(ds, logs_dir, simulation=simulation_metadata(ds.interactions))
    log_cfg = cfg.model_copy(deep=True)
    log_cfg.training.source = "interactions"
    # logs: the simulator's logging policy ranks by the same BM25 over the same capability
    # text (plus exploration), so its greedy ranking is the bm25 row; logreg learns from
    # labels, which this setting does not use
    return {
        "warm": (datasets["official"], cfg, ()),
        "cold": (datasets["cold"], cfg, ()),
        "logs": (logs_dir, log_cfg, ("logreg",)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toollens", default=os.environ.get("TOOLLENS", "../shared/data/toollens"))
    parser.add_argument("--data", default=None, help="benchmark this dataset directory instead")
    parser.add_argument("--work", default=".bench/quality", help="datasets, embeddings, bundles")
    parser.add_argument("--home", default=".bench/home", help="run directory (embedding cache)")
    parser.add_argument("--splits", default="warm,cold,logs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--base-encoder", action="store_true", help="do not fine-tune the encoder per setting"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="score bundles a previous run left in --work"
    )
    args = parser.parse_args()
    work = Path(args.work)
    cfg = load_config(
        overrides=[
            f"paths.home={args.home}",
            f"training.torch_threads={args.threads}",
            f"embedding.finetune.enabled={'false' if args.base_encoder else 'true'}",
            *args.overrides,
        ]
    )
    out: dict = {}
    if args.data:
        name = Path(args.data).resolve().name
        out[name] = benchmark_dataset(args.data, cfg, work / "data" / name, reuse=args.reuse)
        print(f"{name}: {json.dumps(out[name])}", flush=True)
    else:
        plan = toollens_plan(args, work, cfg)
        # the catalog (and so the embeddings) is the same for every ToolLens split, unless
        # the encoder is fine-tuned: on each setting's own training pairs
        emb_dir = None
        if not cfg.embedding.finetune.enabled:
            emb_dir = ensure_embeddings(load_dataset(plan["warm"][0]), cfg, work / "embeddings")
        for name in args.splits.split(","):
            ds_dir, run_cfg, drop = plan[name]
            out[name] = benchmark_dataset(
                ds_dir, run_cfg, work / "runs" / name, emb_dir=emb_dir, reuse=args.reuse, drop=drop
            )
            print(f"{name}: {json.dumps(out[name])}", flush=True)
    out["machine"] = machine(args.threads)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
