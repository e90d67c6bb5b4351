"""The experiment report, as Markdown and as a standalone HTML page (same content)."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from caprank.experiments.analysis import Comparison
from caprank.experiments.decision import Decision
from caprank.experiments.readout import Analysis
from caprank.experiments.store import Experiment

SRM_ALPHA = 0.001  # a sample-ratio p-value below this says the split is broken


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _rows(exp: Experiment, a: Analysis) -> tuple[list[str], list[list[str]], list[list[str]]]:
    arms = [
        [
            s.arm, s.version, str(s.n), str(s.successes), f"{s.success_rate:.4f}",
            f"{s.failure_rate:.4f}", f"{s.latency_mean_ms:.1f}",
        ]
        for s in a.arms.values()
    ]  # fmt: skip

    def row(c: Comparison) -> list[str]:
        return [
            c.metric, f"{c.control:.4f}", f"{c.treatment:.4f}", f"{c.diff:+.4f}",
            f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]", f"{c.p_value:.4g}",
            f"[{c.fixed_ci_low:+.4f}, {c.fixed_ci_high:+.4f}]", f"{c.fixed_p_value:.4g}",
        ]  # fmt: skip

    facts = [
        f"control `{exp.control}`, treatment `{exp.treatment}`, treatment share {exp.share:.0%}, "
        f"sticky by {exp.unit}",
        f"started {_when(exp.started_at)}, analysed at {_when(a.at)} ({a.elapsed_h:.1f} h of "
        f"max {exp.max_duration_h} h), {a.primary.looks} looks every {exp.look_interval_h} h",
        f"sized for a lift of {exp.mde} over a baseline of {exp.baseline_rate:.4f} "
        f"({exp.baseline_source}), alpha {exp.alpha}, power {exp.power}: closed form "
        f"{exp.fixed_n_control} outcomes per arm at one look; planned "
        f"{exp.planned_n_control} / {exp.planned_n_treatment} for the sequential test",
    ]
    if a.sample_ratio_p < SRM_ALPHA:
        facts.append(
            f"WARNING: sample ratio mismatch (p {a.sample_ratio_p:.2g}): the arms' sizes do "
            f"not match the {exp.share:.0%} share; check the routing before trusting this"
        )
    comps = [row(a.primary), row(a.error_rate), row(a.latency)]
    return facts, arms, comps


ARM_HEAD = ["arm", "version", "outcomes", "successes", "success rate", "failure rate",
            "mean ms"]  # fmt: skip
COMP_HEAD = ["metric", "control", "treatment", "difference", "always-valid CI",
             "always-valid p", "fixed-horizon CI (reference)", "fixed p (reference)"]  # fmt: skip


def markdown(exp: Experiment, a: Analysis, d: Decision) -> str:
    facts, arms, comps = _rows(exp, a)

    def table(head: list[str], rows: list[list[str]]) -> list[str]:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return lines + ["| " + " | ".join(r) + " |" for r in rows]

    out = [f"# Experiment {exp.id}", "", f"**Decision: {d.action}**: {d.reason}", ""]
    out += [*(f"- {f}" for f in facts), "", "## Arms", "", *table(ARM_HEAD, arms)]
    out += ["", "## Comparisons (treatment - control)", "", *table(COMP_HEAD, comps)]
    out += [
        "",
        "The always-valid figures (mSPRT) stay valid however often the experiment is looked "
        "at and drive the decision; the fixed-horizon ones assume a single look.",
        "",
    ]
    return "\n".join(out)


def html_page(exp: Experiment, a: Analysis, d: Decision) -> str:
    facts, arms, comps = _rows(exp, a)
    e = html.escape

    def table(head: list[str], rows: list[list[str]]) -> str:
        th = "".join(f"<th>{e(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{th}</tr>{body}</table>"

    items = "".join(f"<li>{e(f.replace('`', ''))}</li>" for f in facts)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Experiment {e(exp.id)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px}</style></head><body>"
        f"<h1>Experiment {e(exp.id)}</h1><p><b>Decision: {e(d.action)}</b>: {e(d.reason)}</p>"
        f"<ul>{items}</ul><h2>Arms</h2>{table(ARM_HEAD, arms)}"
        f"<h2>Comparisons (treatment - control)</h2>{table(COMP_HEAD, comps)}"
        "<p>The always-valid figures (mSPRT) stay valid however often the experiment is "
        "looked at and drive the decision; the fixed-horizon ones assume a single look.</p>"
        "</body></html>\n"
    )
