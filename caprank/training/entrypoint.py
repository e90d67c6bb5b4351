"""The training step as a command: ``python -m caprank.training.entrypoint --dataset ...``.

Typed artifact paths in, a model directory, a Markdown summary and one JSON of outputs
(artifact metadata + metrics) out: the contract of a container step, so the step runs
the same from the KFP ``train`` component, from a container command line or by hand.

This module is what the GPU training image runs, so at import time it (and every
caprank module it imports, transitively) needs only that image's packages
(``images/requirements-train-gpu.txt`` + torch); ``tests/test_import_rules.py`` checks it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from caprank.config import load_config
from caprank.data.dataset import load_dataset
from caprank.files import atomic_write_text
from caprank.sandbox import enter_pod_sandbox
from caprank.training.stage import train


@dataclass(frozen=True)
class StepOutputs:
    """What the step reports besides its files: model metadata and numeric metrics."""

    metadata: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"metadata": self.metadata, "metrics": self.metrics}, indent=2) + "\n"


def run_step(
    dataset: str | Path,
    embeddings: str | Path,
    features: str | Path,
    model: str | Path,
    summary: str | Path,
    config_yaml: str = "",
) -> StepOutputs:
    """Train on the dataset, embeddings and features; the bundle goes under ``model``.

    ``config_yaml``: the run's overrides (defaults < these < CAPRANK_* env vars).
    """
    enter_pod_sandbox()
    cfg = load_config(extra_yaml=config_yaml or None)
    result = train(load_dataset(dataset), cfg, embeddings, model, features)
    metrics: dict[str, float] = {
        "best_valid_mrr": result.fit.best_valid_mrr,
        "valid_without_evidence": result.fit.valid_without_evidence,
        "steps": result.fit.steps,
        "train_seconds": result.fit.seconds,
        "experiences_per_s": result.fit.experiences_per_s,
    }
    metrics.update(
        {k: v for k, v in result.calibration.items() if k in ("valid_ece_raw", "valid_ece")}
    )
    for name, values in result.valid_metrics.items():
        metrics.update({f"valid_{name}.{k}": v for k, v in values.items()})
    text = result.to_markdown()
    atomic_write_text(summary, text)
    print(text)
    return StepOutputs(
        metadata={
            "bundle": str(result.bundle_dir),
            "mlflow_run_id": result.run_id or "",
            "tuned_from": result.summary.get("tuned_from", ""),  # training.tuned_from's run
        },
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, bool | int | float)},
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m caprank.training.entrypoint", description="Train the SHGAT ranker."
    )
    p.add_argument("--dataset", required=True, help="ingested dataset directory (input)")
    p.add_argument("--embeddings", required=True, help="embed step's vectors (input)")
    p.add_argument("--features", required=True, help="feature snapshots (input)")
    p.add_argument("--model", required=True, help="model directory (output)")
    p.add_argument("--summary", required=True, help="Markdown summary file (output)")
    p.add_argument("--outputs", required=True, help="JSON of metadata and metrics (output)")
    p.add_argument("--config-yaml", default="", help="the run's config overrides as YAML")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = run_step(
        args.dataset, args.embeddings, args.features, args.model, args.summary, args.config_yaml
    )
    atomic_write_text(args.outputs, out.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
