"""`caprank tune`: search training settings with Optuna on validation only."""

from __future__ import annotations

import json
from pathlib import Path

import click

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import data_option, out_dir_option


@click.command("tune")
@data_option(exists=True)
@click.option("--trials", type=click.IntRange(1), default=None, help="Default: tuning.trials.")
@click.option(
    "--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Wall-clock budget. Default: tuning.minutes.",
)  # fmt: skip
@click.option(
    "--setting",
    type=click.Choice(["warm", "cold"]),
    default="warm",
    show_default=True,
    help="cold: validate on a pseudo-cold split carved from train (unseen capabilities).",
)
@click.option(
    "--embeddings",
    "emb_dir",
    default=None,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Output folder of `caprank embed` (default: embed into <out>/embeddings).",
)
@click.option(
    "--features",
    default=None,
    type=click.Path(exists=True, path_type=Path),
    help="capability_features.parquet (or its folder) from the features stage.",
)
@out_dir_option("Where tuning.json goes (default: <home>/tuning/<setting>).")
@click.option("--no-track", is_flag=True, help="Do not record the study in MLflow.")
@pass_state
def tune_cmd(
    state: CliState,
    data_dir: Path,
    trials: int | None,
    minutes: float | None,
    setting: str,
    emb_dir: Path | None,
    features: Path | None,
    out_dir: Path | None,
    no_track: bool,
) -> None:
    """Tune training settings for DATA; the best trial's settings are recorded in MLflow,
    where `--set training.tuned_from=latest` (or the run id) applies them to training."""
    from caprank.data.dataset import load_dataset
    from caprank.evaluation.benchmark import ensure_embeddings
    from caprank.training.tune import tune

    cfg = state.config()
    ds = load_dataset(data_dir)
    out = out_dir or cfg.home() / "tuning" / setting
    emb = emb_dir or ensure_embeddings(ds, cfg, out / "embeddings")
    result = tune(
        ds, cfg, emb, features, out, trials=trials, minutes=minutes, setting=setting,
        track=not no_track,
    )  # fmt: skip
    click.echo(result.to_markdown())
    click.echo(
        json.dumps(
            {
                "setting": result.setting,
                "best_valid_mrr": result.best_value,
                "overrides": result.overrides,
                "trials": len(result.trials),
                "pruned": result.count("PRUNED"),
                "seconds": result.seconds,
                "run_id": result.run_id,
            }
        )
    )
