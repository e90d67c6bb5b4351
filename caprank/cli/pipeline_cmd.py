"""`caprank pipeline`: compile, run locally, submit runs and keep the nightly schedule.

A thin adapter over ``pipelines``; every command that reads or writes the compiled
package defaults to ``pipelines.compiled_path(cfg)``.
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from caprank.cli.context import CliState, pass_state
from caprank.cli.options import DataUri, out_file_option
from caprank.errors import ConfigError


@click.group("pipeline")
def pipeline_group() -> None:
    """Compile, run, submit and schedule the training pipeline."""


def _params(items: tuple[str, ...]) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, "a --param flag must look like name=value")
        out[key] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def _say_left_out(cfg) -> None:
    from pipelines.submit import run_config_yaml

    for key in run_config_yaml(cfg)[1]:
        click.echo(
            f"config_yaml leaves out {key} (it embeds a password): pods read it from "
            f"the Secret {cfg.pipeline.secret}"
        )


def _client(state: CliState, host: str | None):
    import kfp

    url = host or state.config().services.kfp_host
    if not url:
        raise ConfigError("services.kfp_host", "no KFP endpoint: pass --host or set this key")
    return kfp.Client(host=url)


_host = click.option("--host", default=None, help="KFP API URL (default: services.kfp_host).")
_package = click.option(
    "--package",
    type=click.Path(dir_okay=False),
    default=None,
    help="Compiled pipeline (default: pipelines/compiled/<pipeline.name>.yaml).",
)
_param = click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE", help="Pipeline parameter."
)


@pipeline_group.command("submit")
@_host
@_package
@_param
@click.option("--run-name", default=None)
@click.option("--wait/--no-wait", default=False, help="Wait for the run to finish.")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds.")
@pass_state
def submit(state, host, package, params, run_name, wait, timeout) -> None:
    """Upload the compiled pipeline (or a new version of it) and start a run with the
    resolved config as its config_yaml parameter."""
    from pipelines.submit import SubmitError, submit_run

    client = _client(state, host)
    done = submit_run(
        client,
        state.config(),
        package=package,
        params=_params(params),
        run_name=run_name,
    )
    _say_left_out(state.config())
    verb = "uploaded" if done.version.created else "reused"
    click.echo(f"{verb} version {done.version.version_name}; run {done.run_id}")
    if wait:
        run = client.wait_for_run_completion(done.run_id, timeout=timeout)
        click.echo(f"run {done.run_id} finished: {run.state}")
        if str(run.state) != "SUCCEEDED":
            raise SubmitError(f"run {done.run_id} ended in state {run.state}")


@pipeline_group.command("schedule")
@_host
@_package
@_param
@click.option(
    "--cron", default=None, help="KFP 6-field cron, seconds first (default: pipeline.cron)."
)
@pass_state
def schedule(state, host, package, params, cron) -> None:
    """Create or update the nightly recurring run (no catch-up, one at a time, no cache)."""
    from pipelines.submit import schedule_nightly

    cfg = state.config()
    if cron is not None:
        from caprank.cron import validate_kfp_cron

        cron = validate_kfp_cron(cron)  # before any network call
    done = schedule_nightly(
        _client(state, host), cfg, cron=cron, package=package, params=_params(params)
    )
    _say_left_out(cfg)
    click.echo(f"recurring run {cfg.pipeline.schedule_name} {done.action}: {done.recurring_run_id}")
    for old in done.removed:
        click.echo(f"removed outdated recurring run {old}")


@pipeline_group.command("compile")
@out_file_option("--out", help="Default: pipelines/compiled/<pipeline.name>.yaml.")
@pass_state
def compile_cmd(state: CliState, out: Path | None) -> None:
    """Compile the training pipeline to KFP IR YAML (checked in under pipelines/compiled)."""
    from pipelines.training import compile_pipeline

    click.echo(f"compiled {compile_pipeline(state.config(), out)}")


@pipeline_group.command("run")
@click.option(
    "--data",
    "data_uri",
    type=DataUri(exists=True),
    default=None,
    help="Dataset directory or s3://bucket/prefix (default: paths.data, else the embedded "
    "synthetic default).",
)
@click.option(
    "--mode",
    default="train",
    show_default=True,
    help="train (from scratch) or update (warm-start the local registry's production model).",
)
@pass_state
def run_cmd(state: CliState, data_uri: str | Path | None, mode: str) -> None:
    """Run the whole DAG locally (KFP SubprocessRunner) and summarize each stage."""
    from pipelines.local import PipelineRunError, outcome_line, run_local

    cfg = state.config()
    data = data_uri or (str(cfg.paths.data) if cfg.paths.data else None)
    click.echo(
        f"running {cfg.pipeline.name} ({mode}) locally on {data or 'the embedded default data'}"
    )
    result = run_local(cfg, data, mode)
    for stage in result.stages:
        click.echo(f"\n=== {stage.name}  ({stage.directory})")
        if stage.summary:
            click.echo(stage.summary.rstrip())
        for name, path in stage.outputs.items():
            if name != "summary" and path.exists():
                click.echo(f"  {name}: {path}")
        if stage.metrics:
            shown = ", ".join(f"{k}={v:g}" for k, v in sorted(stage.metrics.items()))
            click.echo(f"  metrics: {shown}")
    click.echo(f"\nrun directory: {result.run_dir}\nfull log: {result.log_path}")
    click.echo(outcome_line(result))
    if not result.ok:
        raise PipelineRunError(f"the pipeline failed: {result.error.strip()[-2000:]}")
