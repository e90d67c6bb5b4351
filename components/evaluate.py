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
    """Run ``caprank.evaluation.stage.evaluate``; returns ``improved``, which drives the
    deploy branch. ``registered`` names the new registry version (metadata ``name``,
    ``version``, ``uri`` = ``models:/<name>/<version>``) for the deploy step.

    ``run_id``: the training run; empty: the model artifact's ``mlflow_run_id`` metadata
    (what the train component records). ``drift_report``: the monitor's artifact of that
    name; its verdict is shown in the report as the monitor judged it (none when absent).
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
