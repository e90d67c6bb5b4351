"""`caprank benchmark --data DIR`: ranking quality of any dataset (SHGAT vs baselines)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import data_option


@click.command("benchmark")
@data_option(exists=True, help="Dataset directory in the data contract (labels or a log).")
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".bench/quality"),
    show_default=True,
    help="Where embeddings, bundles and training figures go.",
)
@click.option(
    "--max-steps",
    type=click.IntRange(1),
    default=None,
    help="Training budget in optimizer steps (default: training.max_steps).",
)
@click.option("--threads", type=click.IntRange(0), default=None, help="torch CPU threads.")
@click.option("--reuse", is_flag=True, help="Score the bundle a previous run left in --work.")
@pass_state
def benchmark_cmd(
    state: CliState,
    data_dir: Path,
    work: Path,
    max_steps: int | None,
    threads: int | None,
    reuse: bool,
) -> None:
    """Train SHGAT from scratch on DATA and print its held-out metrics beside the
    baselines as JSON (the last line): `make bench-quality`'s row for any dataset."""
    from caprank.evaluation.benchmark import benchmark_dataset, machine

    cfg = state.config().model_copy(deep=True)
    if max_steps is not None:
        cfg.training.max_steps = max_steps
    if threads is not None:
        cfg.training.torch_threads = threads
    name = data_dir.resolve().name
    row = benchmark_dataset(data_dir, cfg, work / "data" / name, reuse=reuse)
    click.echo(json.dumps({name: row, "machine": machine(cfg.training.torch_threads)}))
