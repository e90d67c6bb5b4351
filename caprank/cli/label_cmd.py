"""`caprank label`: the active-learning labelling queue (export) and its answers (import)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import data_option


@click.group("label")
def label_group() -> None:
    """Queue the least certain served intents for labelling; import the answers."""


@label_group.command("export")
@data_option(exists=True, help="Dataset (catalog; its interactions are the served traffic).")
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Bundle directory (or a folder holding one) that ranks the intents.",
)
@click.option(
    "--served",
    default=None,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Serving request log (feedback dir or its served/); default: the interactions.",
)
@click.option("--budget", type=int, default=None, help="Intents to queue (default active.budget).")
@click.option("--queue-id", default=None, help="Name of this batch (default: a UTC timestamp).")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Queue file: .jsonl or .csv.",
)
@pass_state
def export_cmd(state: CliState, data_dir, model_dir, served, budget, queue_id, out) -> None:
    """Write the most uncertain served intents with their top candidates."""
    from caprank.active.queue import build_queue, export_queue
    from caprank.data.dataset import load_dataset
    from caprank.embeddings.cache import embed_texts
    from caprank.model.bundle import load_bundle
    from caprank.training.update import find_bundle

    cfg = state.config()
    ds = load_dataset(data_dir)
    bundle = load_bundle(find_bundle(model_dir))

    def encode(texts: list[str]):
        return embed_texts(list(texts), cfg, text_model=bundle.text_model)[0]

    items = build_queue(ds, cfg, bundle, encode, served, budget)
    queue_id = queue_id or datetime.now(UTC).strftime("q%Y%m%dT%H%M%SZ")
    export_queue(items, ds, out, queue_id, str(bundle.meta.get("version", "")))
    click.echo(json.dumps({"queue_id": queue_id, "intents": len(items), "out": str(out)}))


@label_group.command("import")
@data_option(exists=True, help="Dataset whose labels (and intents) receive the answers.")
@click.argument("answers", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--split", type=click.Choice(["train", "valid", "test"]), default="train", show_default=True
)
@pass_state
def import_cmd(state: CliState, data_dir, answers, split) -> None:
    """Add the answered rows of a queue file as labels with their provenance."""
    from caprank.active.queue import import_answers

    click.echo(json.dumps(import_answers(data_dir, answers, split)))
