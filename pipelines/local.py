"""Run the whole training DAG on this machine with KFP's local SubprocessRunner.

Each step runs as a subprocess in the current Python environment (``use_venv=False``),
exactly the component code a cluster runs, with artifacts under
``<paths.home>/pipeline-runs``. KFP's own chatter goes to a log file; the console gets a
short summary of each stage and where its outputs are.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from caprank.config import CaprankConfig, dump_yaml
from caprank.data.storage import describe
from caprank.errors import CaprankError

RUNS_DIR = "pipeline-runs"


class PipelineRunError(CaprankError):
    """A step of the local run failed; the message names it and where its log is."""


@dataclass
class StageOutcome:
    name: str
    directory: Path
    outputs: dict[str, Path]
    summary: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class LocalRunResult:
    run_dir: Path
    log_path: Path
    ok: bool
    stages: list[StageOutcome] = field(default_factory=list)
    error: str = ""


def _absolute_paths(cfg: CaprankConfig) -> CaprankConfig:
    """Subprocesses must see the same locations whatever their working directory."""
    cfg = cfg.model_copy(deep=True)
    for name, value in cfg.paths:
        if isinstance(value, Path):
            setattr(cfg.paths, name, value.resolve())
    return cfg


def _metrics(task_dir: Path) -> dict[str, float]:
    """KFP keeps a Metrics artifact's values in the task's executor_output.json."""
    path = task_dir / "executor_output.json"
    if not path.is_file():
        return {}
    artifacts = json.loads(path.read_text(encoding="utf-8")).get("artifacts", {})
    found: dict[str, float] = {}
    for output in artifacts.values():
        for art in output.get("artifacts", []):
            meta = art.get("metadata", {})
            if meta and all(isinstance(v, int | float) for v in meta.values()):
                found.update(meta)
    return found


def _stage_outcomes(run_dir: Path) -> list[StageOutcome]:
    stages = []
    dirs = [d for d in run_dir.iterdir() if d.is_dir()]
    for d in sorted(dirs, key=lambda p: p.stat().st_mtime):
        outputs = {p.name: p for p in sorted(d.iterdir()) if p.name != "executor_output.json"}
        summary_path = d / "summary"
        summary = summary_path.read_text(encoding="utf-8") if summary_path.is_file() else ""
        stages.append(StageOutcome(d.name, d, outputs, summary, _metrics(d)))
    return stages


def run_local(
    cfg: CaprankConfig,
    data_uri: str | Path | None = None,
    mode: str = "train",
    *,
    config_yaml: str | None = None,
    runs: Path | None = None,
) -> LocalRunResult:
    """Run the DAG locally; never raises for a failed step (see ``LocalRunResult.ok``).

    ``mode``: ``train``, or ``update`` (warm-start the local registry's ``production``).
    ``config_yaml``: the run's config parameter as a cluster run gets it (default: all of
    ``cfg`` with absolute paths, so every step shares this machine's caprank home);
    ``runs``: where KFP keeps the runs' artifacts (default ``<home>/pipeline-runs``)."""
    from kfp import local

    from pipelines import MODES
    from pipelines.training import build_pipeline

    if mode not in MODES:
        raise PipelineRunError(f"mode {mode!r}: expected one of {MODES}")

    cfg = _absolute_paths(cfg)
    runs = Path(runs).resolve() if runs else cfg.paths.home / RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(runs))
    before = {p for p in runs.iterdir() if p.is_dir()}
    pipeline = build_pipeline(cfg)
    buffer = io.StringIO()
    error = ""
    with contextlib.redirect_stdout(buffer), warnings.catch_warnings():
        # The local runner warns that our image is not a stock Python image and that
        # display names are ignored; both are expected here.
        warnings.simplefilter("ignore")
        try:
            pipeline(
                data_uri=describe(data_uri) if data_uri else "",
                config_yaml=dump_yaml(cfg) if config_yaml is None else config_yaml,
                mode=mode,
            )
        except RuntimeError as exc:  # kfp.local raises RuntimeError for a failed task
            error = str(exc)
    new = sorted(
        ({p for p in runs.iterdir() if p.is_dir()} - before), key=lambda p: p.stat().st_mtime
    )
    if not new:
        raise PipelineRunError(f"the local run produced no run directory under {runs}: {error}")
    run_dir = new[-1]
    log_path = run_dir / "pipeline.log"
    log_path.write_text(_strip_ansi(buffer.getvalue()), encoding="utf-8")
    return LocalRunResult(
        run_dir, log_path, ok=not error, stages=_stage_outcomes(run_dir), error=_strip_ansi(error)
    )


def outcome_line(result: LocalRunResult) -> str:
    """One sentence on how the run ended, so a run that did not promote says why."""
    if not result.ok:
        return "outcome: a step failed (see the full log)"
    stages = {s.name: s for s in result.stages}
    # the update branch's evaluate and deploy are the DAG's second ones (pipelines.training)
    evaluate = stages.get("evaluate") or stages.get("evaluate-2")
    deploy = stages.get("deploy") or stages.get("deploy-2")
    if deploy is not None:
        version = int(evaluate.metrics.get("version", 0)) if evaluate else "?"
        if deploy.metrics.get("promoted") == 1.0:
            return f"outcome: version {version} promoted; `production` points at it"
        return f"outcome: version {version} not promoted by the canary (see deploy above)"
    if evaluate is not None:
        gate = next(
            (line for line in evaluate.summary.splitlines() if line.startswith("Gate: ")), ""
        )
        reason = gate.removeprefix("Gate: ") or "see evaluate above"
        return (
            f"outcome: version {int(evaluate.metrics.get('version', 0))} registered as "
            f"`challenger`, not improved ({reason}); deploy skipped, `production` unchanged"
        )
    return "outcome: the monitor found no reason to retrain; train, evaluate and deploy skipped"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)
