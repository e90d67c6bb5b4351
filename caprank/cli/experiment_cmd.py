"""`caprank experiment start|status|stop`: thin adapter over caprank.experiments."""

from __future__ import annotations

import json

import click

from caprank.cli.context import CliState, pass_state


@click.group("experiment")
def experiment_group() -> None:
    """A/B experiments between two served model versions (docs/experiments.md)."""


@experiment_group.command("start")
@click.argument("experiment_id")
@click.option("--control", required=True, help="Model version of the control arm.")
@click.option("--treatment", required=True, help="Model version of the treatment arm.")
@click.option("--share", type=float, default=None, help="Treatment share (experiments.share).")
@click.option(
    "--baseline",
    type=float,
    default=None,
    help="Control success rate to size with (default: its logged rate, else config).",
)
@pass_state
def start_cmd(state: CliState, experiment_id, control, treatment, share, baseline) -> None:
    """Record EXPERIMENT_ID and size it; prints its record (JSON)."""
    from caprank.experiments import start

    exp = start(state.config(), experiment_id, control, treatment, share=share, baseline=baseline)
    click.echo(json.dumps(exp.to_dict(), indent=2, sort_keys=True))


def _echo(result) -> None:
    a, d = result.analysis, result.decision
    p = a.primary
    click.echo(f"decision: {d.action}: {d.reason}")
    for s in a.arms.values():
        click.echo(
            f"  {s.arm:9s} {s.version}: {s.n} outcomes, success {s.success_rate:.4f}, "
            f"failure {s.failure_rate:.4f}, mean {s.latency_mean_ms:.1f} ms"
        )
    click.echo(
        f"  difference {p.diff:+.4f}, always-valid CI [{p.ci_low:+.4f}, {p.ci_high:+.4f}], "
        f"p {p.p_value:.4g}"
    )
    click.echo(f"report: {result.report_md} ({result.report_html}); gauges: {result.metrics_file}")


@experiment_group.command("status")
@click.argument("experiment_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole status as JSON.")
@pass_state
def status_cmd(state: CliState, experiment_id: str, as_json: bool) -> None:
    """Analyse EXPERIMENT_ID now: per-arm figures, the decision and its reason."""
    from caprank.experiments import status

    result = status(state.config(), experiment_id)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        _echo(result)


@experiment_group.command("stop")
@click.argument("experiment_id")
@pass_state
def stop_cmd(state: CliState, experiment_id: str) -> None:
    """End EXPERIMENT_ID: final analysis and decision, report, MLflow run."""
    from caprank.experiments import stop

    result = stop(state.config(), experiment_id)
    _echo(result)
    click.echo(f"mlflow run: {result.experiment.mlflow_run_id}")
