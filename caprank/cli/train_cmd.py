"""`caprank train`: train the SHGAT ranker on a dataset and its embed stage output."""

from __future__ import annotations

import json

import click

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import data_option, out_dir_option


@click.command("train")
@data_option(exists=True)
@click.option(
    "--embeddings",
    "emb_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="Output folder of `caprank embed`.",
)
@out_dir_option("Where the bundle and checkpoints go (a re-run here resumes).", required=True)
@click.option(
    "--features",
    "features",
    default=None,
    type=click.Path(exists=True),
    help="capability_features.parquet (or its folder) from the features stage.",
)
@click.option("--no-track", is_flag=True, help="Do not log the run to MLflow.")
@click.option("--no-resume", is_flag=True, help="Start over even if a checkpoint matches.")
@pass_state
def train_cmd(state: CliState, data_dir, emb_dir, out_dir, features, no_track, no_resume) -> None:
    """Train, write <out>/bundle, score it on the validation intents, log to MLflow."""
    from caprank.data.dataset import load_dataset
    from caprank.training.stage import train

    result = train(
        load_dataset(data_dir),
        state.config(),
        emb_dir,
        out_dir,
        features,
        track=not no_track,
        resume=not no_resume,
    )
    click.echo(result.to_markdown())
    click.echo(
        json.dumps(
            {
                "bundle": str(result.bundle_dir),
                "run_id": result.run_id,
                "best_valid_mrr": result.fit.best_valid_mrr,
                "valid": result.valid_metrics,
            }
        )
    )
