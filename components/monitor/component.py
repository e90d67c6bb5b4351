"""Monitor: drift between the log's reference and current windows; should this run train?"""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Output


def monitor(
    dataset: Input[Dataset],
    features: Input[Dataset],
    config_yaml: str,
    retrain_policy: str,
    summary: Output[Markdown],
    metrics: Output[Metrics],
    drift_report: Output[Dataset],
) -> bool:
    """Judge drift between the log's windows and decide whether this run retrains.

    A single return value: KFP's local runner resolves only a task's ``Output`` in a
    ``dsl.If`` condition, so ``drifted`` goes to ``metrics``.

    Args:
        dataset: The ingested dataset directory (its interaction log is windowed).
        features: The feature snapshots of build_features.
        config_yaml: The run's config overrides as YAML; empty: the defaults.
        retrain_policy: ``always``, ``on_drift``, ``on_degradation`` or ``never``; empty:
            ``monitoring.retrain_policy``.
        summary: Out: windows, drift verdict and decision, as Markdown.
        metrics: Out: ``should_train``, ``drifted`` and the window sizes.
        drift_report: Out: ``monitor.json`` and, when judged, ``drift_report.html``.

    Returns:
        should_train: whether the training branch runs.
    """
    from pathlib import Path

    from caprank.data.dataset import load_dataset
    from caprank.monitoring import monitor as run_monitor
    from components.runtime import log_metrics, stage_config, write_json, write_text

    cfg = stage_config(config_yaml)
    result = run_monitor(
        load_dataset(dataset.path),
        cfg,
        features_dir=features.path,
        policy=retrain_policy or None,
        html=True,
    )
    out = Path(drift_report.path)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "monitor.json", result.to_dict())
    if result.drift is not None and result.drift.html is not None:
        result.drift.write_html(out / "drift_report.html")
    drifted = bool(result.drift is not None and result.drift.drifted)
    log_metrics(
        metrics,
        {
            "should_train": result.should_train,
            "drifted": drifted,
            "reference_events": result.bounds.reference_events,
            "current_events": result.bounds.current_events,
        },
    )
    write_text(summary.path, result.to_markdown())
    print(result.to_markdown())
    return bool(result.should_train)
