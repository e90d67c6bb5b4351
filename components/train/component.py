"""Train: the SHGAT ranker from experiences (PER + TD), tracked in MLflow; evaluate registers.

The body only hands the artifact paths to ``caprank.training.entrypoint`` (the step's
command-line contract, importable with the training image's packages alone) and copies
what it reports onto the KFP artifacts. A Python component rather than a container
component: KFP's local SubprocessRunner (kfp 2.17) runs only lightweight Python
components, and the local run must exercise the same step as the cluster.
"""

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
    """Train on the run's dataset, embeddings and features; the bundle goes to ``model``.

    Args:
        dataset: The ingested dataset directory (catalog, labels, interaction logs).
        embeddings: The embed step's text, Node2Vec and hybrid vectors.
        features: The build_features step's capability feature snapshots.
        config_yaml: The run's config overrides as YAML; empty: the defaults.
        model: Out: the bundle and checkpoints; metadata ``bundle``, ``mlflow_run_id`` and
            ``tuned_from`` (the tuning run applied by ``training.tuned_from``, or empty).
        summary: Out: the training report as Markdown.
        metrics: Out: ``best_valid_mrr``, ``steps``, throughput, calibration ECE and the
            test metrics of the model and its baselines.
    """
    from caprank.training.entrypoint import run_step

    out = run_step(
        dataset.path, embeddings.path, features.path, model.path, summary.path, config_yaml
    )
    model.metadata.update(out.metadata)
    for name, value in out.metrics.items():
        metrics.log_metric(name, value)
