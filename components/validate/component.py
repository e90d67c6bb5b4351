"""Validate: Great Expectations checks; a failure stops the run before anything downstream."""

from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output


def validate(
    dataset: Input[Dataset],
    config_yaml: str,
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Check the dataset against the data contract; raise with a readable report.

    Args:
        dataset: The ingested dataset directory (catalog, labels, interaction logs).
        config_yaml: The run's config overrides as YAML; empty: the defaults.
        report: Out: every check as an HTML report (written before a failure is raised).
        summary: Out: the failed checks (or PASSED) as Markdown.
        metrics: Out: ``checks`` and ``failed_checks``.
    """
    from caprank.data.validation import validate_dataset
    from components.runtime import stage_config, write_text

    cfg = stage_config(config_yaml)
    result = validate_dataset(dataset.path, cfg)
    write_text(report.path, result.to_html())
    write_text(summary.path, result.to_markdown(all_checks=False))
    metrics.log_metric("checks", float(len(result.checks)))
    metrics.log_metric("failed_checks", float(len(result.failures)))
    print(result.to_markdown(all_checks=False))
    result.raise_for_errors()
