"""``caprank experiment start|status|stop`` as library functions.

- ``start`` sizes the experiment (``design``) from the control's logged success rate
  when it has ``baseline_min_events`` outcomes, else from ``experiments.baseline_rate``,
  and writes the record.
- ``status`` analyses the feedback log, decides, and writes ``report.md``,
  ``report.html`` and ``metrics.prom`` beside the record (the latest decision goes
  into the record too).
- ``stop`` ends the experiment at ``now``: its final analysis and decision (an
  undecided experiment keeps the control), the report, and one MLflow run with them.
  Stopping a stopped experiment only reports it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from caprank.config import CaprankConfig
from caprank.data.schemas import INTERACTIONS
from caprank.experiments import gauges, report, store
from caprank.experiments.decision import CONTINUE, KEEP_CONTROL, Decision, decide
from caprank.experiments.design import design
from caprank.experiments.readout import Analysis, analyse
from caprank.experiments.store import Experiment, ExperimentError
from caprank.files import atomic_write_text


@dataclass(frozen=True)
class Status:
    experiment: Experiment
    analysis: Analysis
    decision: Decision
    report_md: Path
    report_html: Path
    metrics_file: Path

    def to_dict(self) -> dict:
        return {
            "experiment": self.experiment.to_dict(),
            "analysis": self.analysis.to_dict(),
            "decision": self.decision.to_dict(),
            "report_md": str(self.report_md),
            "report_html": str(self.report_html),
            "metrics_file": str(self.metrics_file),
        }


def events_of(cfg: CaprankConfig) -> pa.Table:
    """Every acknowledged outcome in the serving feedback log (empty when none yet)."""
    from caprank.online.feedback import read_events

    root = cfg.feedback_dir()
    return read_events(root) if Path(root).is_dir() else INTERACTIONS.empty_table()


def _baseline(
    cfg: CaprankConfig, control: str, events: pa.Table, before: float
) -> tuple[float, str]:
    """The control's logged success rate before the start, when it has enough outcomes."""
    mask = pc.and_(
        pc.equal(events["model_version"], control),
        pc.less(pc.cast(events["timestamp"], pa.int64()), int(before * 1e6)),
    )
    rows = events.filter(pc.fill_null(mask, False))
    need = cfg.experiments.baseline_min_events
    if rows.num_rows >= need:
        rate = pc.mean(pc.cast(pc.equal(rows["outcome"], "success"), pa.float64())).as_py()
        if 0.0 < rate < 1.0:
            return rate, f"logged success rate of {control} over {rows.num_rows} outcomes"
    return cfg.experiments.baseline_rate, (
        f"experiments.baseline_rate: {control} has {rows.num_rows} logged outcomes (< {need})"
    )


def start(
    cfg: CaprankConfig,
    experiment_id: str,
    control: str,
    treatment: str,
    *,
    share: float | None = None,
    baseline: float | None = None,
    now: float | None = None,
) -> Experiment:
    root = cfg.experiments_dir()
    store.check_id(experiment_id)
    if store.record_path(root, experiment_id).exists():
        raise ExperimentError(f"experiment {experiment_id!r} exists already under {root}")
    if not control or not treatment or control == treatment:
        raise ExperimentError(
            f"control and treatment must be two different model versions, got "
            f"{control!r} and {treatment!r}"
        )
    e = cfg.experiments
    share = e.share if share is None else share
    if not 0.0 < share < 1.0:
        raise ExperimentError(f"share must be in (0, 1), got {share}")
    now = time.time() if now is None else now
    source = "--baseline"
    if baseline is None:
        baseline, source = _baseline(cfg, control, events_of(cfg), now)
    try:
        plan = design(baseline, e.mde, e.alpha, e.power, share)
    except ValueError as exc:
        raise ExperimentError(f"cannot size experiment {experiment_id!r}: {exc}") from exc
    exp = Experiment(
        id=experiment_id,
        control=control,
        treatment=treatment,
        share=share,
        unit=e.unit,
        alpha=e.alpha,
        power=e.power,
        mde=e.mde,
        baseline_rate=baseline,
        baseline_source=source,
        max_duration_h=e.max_duration_h,
        look_interval_h=e.look_interval_h,
        min_per_arm=e.min_per_arm,
        max_error_rate_increase=e.max_error_rate_increase,
        max_latency_increase=e.max_latency_increase,
        planned_n_control=plan.planned_n_control,
        planned_n_treatment=plan.planned_n_treatment,
        fixed_n_control=plan.fixed_n_control,
        started_at=now,
    )
    store.save(root, exp)
    return exp


def _write(cfg: CaprankConfig, exp: Experiment, a: Analysis, d: Decision) -> Status:
    folder = store.record_path(cfg.experiments_dir(), exp.id).parent
    atomic_write_text(folder / "report.md", report.markdown(exp, a, d))
    atomic_write_text(folder / "report.html", report.html_page(exp, a, d))
    gauges.write_textfile(folder / "metrics.prom", a, d)
    gauges.push(cfg, a, d)
    return Status(exp, a, d, folder / "report.md", folder / "report.html", folder / "metrics.prom")


def status(cfg: CaprankConfig, experiment_id: str, *, now: float | None = None) -> Status:
    root = cfg.experiments_dir()
    exp = store.load(root, experiment_id)
    a = analyse(events_of(cfg), exp, time.time() if now is None else now)
    d = decide(a, exp)
    if not exp.running:
        d = Decision(**exp.decision) if exp.decision else d
    else:
        exp = replace(exp, decision=d.to_dict())
        store.save(root, exp)
    return _write(cfg, exp, a, d)


def stop(cfg: CaprankConfig, experiment_id: str, *, now: float | None = None) -> Status:
    root = cfg.experiments_dir()
    exp = store.load(root, experiment_id)
    if not exp.running:
        return status(cfg, experiment_id, now=now)
    exp = replace(exp, stopped_at=time.time() if now is None else now, status="stopped")
    a = analyse(events_of(cfg), exp, exp.stopped_at)
    d = decide(a, exp)
    if d.action == CONTINUE:
        d = Decision(KEEP_CONTROL, f"stopped before a decision: {d.reason}", True)
    exp = replace(exp, decision=d.to_dict())
    done = _write(cfg, exp, a, d)
    exp = replace(exp, mlflow_run_id=_log_run(cfg, done))
    store.save(root, exp)
    return replace(done, experiment=exp)


def _log_run(cfg: CaprankConfig, s: Status) -> str:
    """One MLflow run per stopped experiment: design as tags, figures as metrics."""
    from caprank.registry import Tracker

    exp, a, d = s.experiment, s.analysis, s.decision
    with Tracker(cfg, run_name=f"experiment-{exp.id}") as run:
        run.set_tags(
            {
                "caprank.kind": "ab_experiment",
                "experiment.id": exp.id,
                "experiment.control": exp.control,
                "experiment.treatment": exp.treatment,
                "experiment.decision": d.action,
                "experiment.reason": d.reason[:4000],
                "experiment.mde": exp.mde,
                "experiment.alpha": exp.alpha,
                "experiment.share": exp.share,
            }
        )
        metrics = {
            f"{arm}.{key}": getattr(summary, key)
            for arm, summary in a.arms.items()
            for key in ("n", "success_rate", "failure_rate", "latency_mean_ms")
        }
        for c in (a.primary, a.error_rate, a.latency):
            metrics.update({f"{c.metric}.diff": c.diff, f"{c.metric}.p_value": c.p_value})
            metrics.update({f"{c.metric}.ci_low": c.ci_low, f"{c.metric}.ci_high": c.ci_high})
        metrics.update(elapsed_h=a.elapsed_h, planned_n_control=exp.planned_n_control)
        run.log_metrics(0, metrics, prefix="experiment.")
        run.log_dict(s.to_dict(), "experiment/status.json")
        run.log_artifact(s.report_md, "experiment")
        run.log_artifact(s.report_html, "experiment")
        return run.run_id
