"""Train: the SHGAT ranker from experiences (PER + TD), tracked in MLflow; evaluate registers."""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output


def train(
    dataset: Input[Dataset],
    embeddings: Input[Dataset],
    features: Input[Dataset],
    config_yaml: str,
    model: Output[Model],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Train on the run's dataset, embeddings and features; the bundle goes to ``model``."""
    from caprank.data.dataset import load_dataset
    from caprank.training.stage import train as run_train
    from components.runtime import log_metrics, stage_config, write_text

    cfg = stage_config(config_yaml)
    result = run_train(load_dataset(dataset.path), cfg, embeddings.path, model.path, features.path)
    model.metadata["bundle"] = str(result.bundle_dir)
    model.metadata["mlflow_run_id"] = result.run_id or ""
    values = {
        "best_valid_mrr": result.fit.best_valid_mrr,
        "steps": result.fit.steps,
        "train_seconds": result.fit.seconds,
        "experiences_per_s": result.fit.experiences_per_s,
    }
    values.update(
        {k: v for k, v in result.calibration.items() if k in ("valid_ece_raw", "valid_ece")}
    )
    values.update({f"valid_{name}": m for name, m in result.valid_metrics.items()})
    log_metrics(metrics, values)
    write_text(summary.path, result.to_markdown())
    print(result.to_markdown())
