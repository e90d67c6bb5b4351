"""Build features: point-in-time capability features, published to Feast."""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Output


def build_features(
    dataset: Input[Dataset],
    config_yaml: str,
    features: Output[Dataset],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Compute the feature snapshots, then apply and materialize them into Feast.

    Args:
        dataset: The ingested dataset directory.
        config_yaml: The run's config overrides as YAML; empty: the defaults.
        features: Out: the feature snapshots (Parquet); metadata ``input_hash``.
        summary: Out: rows, snapshots and the Feast views, as Markdown.
        metrics: Out: ``rows`` and ``snapshots``.
    """
    from caprank.data.dataset import load_dataset
    from caprank.features.stage import build_and_publish
    from components.runtime import log_metrics, stage_config, write_text

    cfg = stage_config(config_yaml)
    result = build_and_publish(load_dataset(dataset.path), cfg, features.path)
    features.metadata["input_hash"] = result.build.input_hash
    log_metrics(metrics, {"rows": result.build.rows, "snapshots": result.build.snapshots})
    write_text(summary.path, result.to_markdown())
    print(result.to_markdown())
