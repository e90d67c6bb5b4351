"""Evaluate: score the candidate, gate it against production, register it as challenger."""

from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output


def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    config_yaml: str,
    pipeline_run_id: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    summary: Output[Markdown],
    registered: Output[Model],
    embeddings: Input[Dataset] = None,
    drift_report: Input[Dataset] = None,
    run_id: str = "",
) -> bool:
    """Score the candidate on the test split, gate it against production, register it.

    Args:
        dataset: The ingested dataset directory.
        model: The train step's model directory (metadata ``mlflow_run_id``).
        config_yaml: The run's config overrides as YAML; empty: the defaults.
        pipeline_run_id: The KFP run id, recorded as the registered version's lineage.
        metrics: Out: test metrics, ``improved``, ``version`` and ``scoring_p99_ms``.
        report: Out: the evaluation report as HTML.
        summary: Out: the evaluation report as Markdown, headed by the decision.
        registered: Out: the new registry version (alias ``challenger``); metadata
            ``name``, ``version`` and ``uri`` = ``models:/<name>/<version>``.
        embeddings: The embed step's vectors; their hash joins the lineage.
        drift_report: The monitor step's drift artifact; the report shows its verdict
            as the monitor judged it (none when absent).
        run_id: The training run; empty: the model artifact's ``mlflow_run_id``.

    Returns:
        improved: whether the candidate passed the gate, which drives the deploy branch.
    """
    import json
    import tempfile
    from pathlib import Path

    from caprank.evaluation.stage import evaluate as run_evaluate
    from caprank.files import dir_hash
    from components.runtime import log_metrics, stage_config, write_text

    cfg = stage_config(config_yaml)
    run_id = run_id or str(model.metadata.get("mlflow_run_id") or "")
    if not run_id:
        raise ValueError("evaluate needs the training run id: pass run_id or train with MLflow")
    hashes = {}
    if embeddings is not None and Path(embeddings.path).is_dir():
        hashes["embeddings"] = dir_hash(embeddings.path)
    drift = None
    if drift_report is not None and Path(drift_report.path).is_dir():
        drift = drift_report.path
    with tempfile.TemporaryDirectory() as out:
        result = run_evaluate(
            cfg,
            dataset.path,
            model.path,
            run_id,
            out,
            pipeline_run_id=pipeline_run_id,
            data_hashes=hashes,
            drift=drift,
        )
        write_text(report.path, Path(result.paths["html"]).read_text(encoding="utf-8"))
        text = Path(result.paths["markdown"]).read_text(encoding="utf-8")
    head = (
        f"## Evaluate\n\nRegistered **{result.model_name} v{result.version}** (alias "
        f"`challenger`); improved: **{str(result.improved).lower()}**.\n\n"
        f"Gate: {result.decision.reason}\n\n"
    )
    write_text(summary.path, head + text)
    log_metrics(
        metrics,
        {
            **result.metrics,
            "improved": result.improved,
            "version": int(result.version),
            "scoring_p99_ms": result.scoring_p99_ms,
        },
    )
    print(head)
    ref = {
        "name": result.model_name,
        "version": str(result.version),
        "uri": f"models:/{result.model_name}/{result.version}",
    }
    registered.metadata.update(ref)
    write_text(registered.path, json.dumps(ref))
    return bool(result.improved)
