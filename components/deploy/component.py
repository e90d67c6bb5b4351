"""Deploy: canary rollout of the registered version; promote or roll back (caprank.deploy)."""

from typing import NamedTuple

from kfp.dsl import Input, Markdown, Metrics, Model, Output


def deploy(
    model: Input[Model],
    registered: Input[Model],
    config_yaml: str,
    summary: Output[Markdown],
    metrics: Output[Metrics],
) -> NamedTuple("Outputs", [("decision", str)]):
    """Canary the registered version, then promote it or roll it back.

    Cluster mode: KServe; local mode: the in-process canary with synthetic requests.

    Args:
        model: The train step's model directory.
        registered: The evaluate step's registry version (metadata ``version``).
        config_yaml: The run's config overrides as YAML; empty: the defaults.
        summary: Out: the rollout's decision and reasons, as Markdown.
        metrics: Out: the canary's guardrail measurements, ``promoted``, ``requests_sent``.

    Returns:
        decision: ``promoted``, ``rolled_back`` or ``unchanged``.
    """
    from collections import namedtuple

    from caprank.deploy.stage import deploy as run_deploy
    from components.runtime import log_metrics, stage_config, write_text

    cfg = stage_config(config_yaml)
    result = run_deploy(cfg, str(registered.metadata["version"]), model_dir=model.path)
    values = {k: v for k, v in result.metrics.items() if v is not None}
    values["promoted"] = result.outcome == "promoted"
    values["requests_sent"] = result.traffic.get("requests", 0)
    log_metrics(metrics, values)
    text = result.to_markdown()
    write_text(summary.path, text)
    print(text)
    return namedtuple("Outputs", ["decision"])(result.outcome)
