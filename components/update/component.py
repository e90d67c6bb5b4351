"""Update: warm-start the ``production`` bundle and train on what was logged since its
data cut-off (``caprank.training.update.update``), tracked in MLflow; evaluate registers.

The pipeline's ``mode: update`` branch runs this step instead of train. Its ``model``
output is what train's is (a directory holding ``bundle/``, metadata ``bundle`` and
``mlflow_run_id``), so evaluate and deploy consume either. A rejected update (the
forgetting guard) or one with nothing new to learn fails the step: evaluate and deploy
do not run and ``production`` stays as it is.
"""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output


def update(
    dataset: Input[Dataset],
    features: Input[Dataset],
    config_yaml: str,
    base: str,
    model: Output[Model],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Warm-start ``base`` and train on the experiences logged after its data cut-off.

    Args:
        dataset: The ingested dataset directory (all logs; the new ones are those after
            the base bundle's ``data_cutoff``).
        features: The build_features step's capability feature snapshots.
        config_yaml: The run's config overrides as YAML (``update.*``); empty: the defaults.
        base: The base model: a registry alias or version (``production``) or a bundle
            directory.
        model: Out: the updated bundle (``bundle/``) and ``update.json``; metadata
            ``bundle``, ``mlflow_run_id`` and ``base_version``.
        summary: Out: the update report as Markdown.
        metrics: Out: ``new_experiences``, ``replayed``, ``steps``, ``best_valid_mrr``,
            ``update_seconds``, ``accepted`` and the guard's ``drop.<metric>``.
    """
    import tempfile
    from pathlib import Path

    from caprank.data.dataset import load_dataset
    from caprank.training.stage import BUNDLE_DIR
    from caprank.training.update import resolve_base
    from caprank.training.update import update as run_update
    from components.runtime import log_metrics, stage_config, write_text

    cfg = stage_config(config_yaml)
    # the downloaded base stays out of the model artifact (evaluate reads one bundle)
    with tempfile.TemporaryDirectory() as work:
        base_dir = resolve_base(cfg, base or "production", Path(work))
        report = run_update(
            load_dataset(dataset.path), cfg, base_dir, model.path, features.path, track=True
        )
    text = report.to_markdown()
    write_text(summary.path, text)
    print(text)
    log_metrics(
        metrics,
        {
            "new_experiences": report.new_experiences,
            "replayed": report.replayed,
            "steps": report.fit.get("steps", 0),
            "best_valid_mrr": report.fit.get("best_valid_mrr", 0.0),
            "update_seconds": report.seconds,
            "accepted": report.accepted,
            "drop": report.drop,
        },
    )
    if not report.accepted:
        raise RuntimeError(
            f"update of {report.base_version} rejected by the forgetting guard "
            f"(drops {report.drop}, limit {report.max_regression}); production unchanged"
        )
    model.metadata.update(
        {
            "bundle": str(Path(model.path) / BUNDLE_DIR),
            "mlflow_run_id": report.run_id,
            "base_version": report.base_version,
        }
    )
