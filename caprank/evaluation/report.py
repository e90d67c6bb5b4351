"""The evaluation report: one self-contained HTML page and a Markdown summary.

The HTML holds the metric table (challenger beside production and baselines, with
bootstrap intervals), the gate decision, a reliability diagram, the rank histogram of
the relevant item, learning curves, per-segment metrics, the importance of the
capability features and score channels (``caprank.evaluation.importance``), the metric
history across registry versions with per-segment trends
(``caprank.evaluation.history``), protocol results, the counterfactual estimate and the
drift summary. Figures are matplotlib PNGs inlined as
base64, so the file needs nothing else to render. The Markdown is the short version the
Kubeflow UI shows.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.figure import Figure

from caprank.config import EvaluationConfig
from caprank.evaluation.bootstrap import Interval, mean_interval
from caprank.evaluation.counterfactual import CounterfactualEstimate
from caprank.evaluation.gate import GateDecision
from caprank.evaluation.history import VersionRow
from caprank.evaluation.importance import Importance, ImportanceReport
from caprank.evaluation.metrics import CalibrationMetrics, OfflineMetrics
from caprank.evaluation.protocols import ProtocolResult
from caprank.files import atomic_write_text
from caprank.monitoring.drift import DriftResult

Role = Literal["challenger", "production", "baseline"]
_ROLE_ORDER = {"challenger": 0, "production": 1, "baseline": 2}
# Upper edges of the rank histogram's buckets (the last bucket is open).
_RANK_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100)
DRIFT_HTML = "drift_report.html"  # Evidently's page, written beside report.html
_COLORS = ("#1f6feb", "#d29922", "#8b949e", "#2da44e", "#a371f7", "#cf222e")


@dataclass
class ModelSummary:
    """One model's row group in the report."""

    name: str
    role: Role
    metrics: dict[str, float]
    intervals: dict[str, Interval] = field(default_factory=dict)
    relevant_ranks: np.ndarray | None = None  # rank of the first relevant item, per query


def summarize_model(
    name: str, role: Role, offline: OfflineMetrics, cfg: EvaluationConfig
) -> ModelSummary:
    """Metric means with bootstrap intervals over queries (ranking metrics only; diversity
    and calibration are whole-set figures without an interval)."""
    intervals = {
        metric: mean_interval(values, cfg.bootstrap_samples, cfg.confidence, cfg.seed)
        for metric, values in offline.ranking.per_query.items()
    }
    return ModelSummary(
        name, role, offline.summary(), intervals, offline.ranking.first_relevant_rank
    )


@dataclass
class ReportInputs:
    """Everything a report can show; only ``title``, ``primary_metric`` and ``models``
    are required, and sections without inputs are left out."""

    title: str
    primary_metric: str
    models: list[ModelSummary]
    decision: GateDecision | None = None
    calibration: CalibrationMetrics | None = None
    learning_curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    segments: dict[str, dict[str, float]] | None = None  # challenger: segment -> metrics
    protocols: list[ProtocolResult] = field(default_factory=list)
    counterfactual: CounterfactualEstimate | None = None
    drift: DriftResult | None = None
    importance: ImportanceReport | None = None
    history: list[VersionRow] = field(default_factory=list)  # oldest version first
    metadata: dict[str, str] = field(default_factory=dict)

    def ordered_models(self) -> list[ModelSummary]:
        return sorted(self.models, key=lambda m: _ROLE_ORDER[m.role])


# --------------------------------------------------------------------------- figures


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def reliability_figure(cal: CalibrationMetrics) -> str:
    """Observed success rate against mean predicted probability per bin, with counts."""
    fig = Figure(figsize=(5.5, 5.0))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = np.diff(cal.bin_edges)
    centers = cal.bin_edges[:-1] + width / 2
    seen = cal.bin_counts > 0
    top.bar(
        centers[seen],
        cal.bin_mean_observed[seen],
        width=width[seen] * 0.9,
        color=_COLORS[0],
        alpha=0.7,
        label="observed success rate",
    )
    top.plot(
        cal.bin_mean_predicted[seen],
        cal.bin_mean_observed[seen],
        "o",
        color=_COLORS[1],
        label="bin mean predicted",
    )
    top.plot([0, 1], [0, 1], "--", color="#57606a", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed success rate")
    top.set_title(f"Reliability (ECE {cal.ece:.3f}, Brier {cal.brier:.3f}, n={cal.n})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, cal.bin_counts, width=width * 0.9, color="#8b949e")
    bottom.set_xlabel("predicted success probability")
    bottom.set_ylabel("count")
    return _png(fig)


def _rank_buckets(ranks: np.ndarray) -> np.ndarray:
    edges = np.asarray(_RANK_BUCKETS)
    idx = np.searchsorted(edges, np.asarray(ranks), side="left")
    return np.bincount(idx, minlength=edges.size + 1) / max(1, len(ranks))


def _bucket_labels() -> list[str]:
    labels, low = [], 1
    for high in _RANK_BUCKETS:
        labels.append(str(high) if high == low else f"{low}-{high}")
        low = high + 1
    return [*labels, f">{_RANK_BUCKETS[-1]}"]


def rank_histogram_figure(models: Sequence[ModelSummary]) -> str:
    """Share of queries whose first relevant item lands in each rank bucket, per model."""
    with_ranks = [m for m in models if m.relevant_ranks is not None]
    labels = _bucket_labels()
    fig = Figure(figsize=(8.0, 4.0))
    ax = fig.subplots()
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(with_ranks))
    for i, m in enumerate(with_ranks):
        ax.bar(
            x + (i - (len(with_ranks) - 1) / 2) * width,
            _rank_buckets(m.relevant_ranks),
            width=width,
            color=_COLORS[i % len(_COLORS)],
            label=f"{m.name} ({m.role})",
        )
    ax.set_xticks(x, labels)
    ax.set_xlabel("rank of the first relevant capability")
    ax.set_ylabel("share of queries")
    ax.set_title("Where the relevant capability lands")
    ax.legend(fontsize=8)
    return _png(fig)


def learning_curve_figure(curve: Sequence[tuple[int, dict[str, float]]]) -> str:
    """One small panel per logged quantity against the training step."""
    names = sorted({name for _, values in curve for name in values})
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(4.0 * cols, 3.0 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names, strict=False):
        points = sorted((step, v[name]) for step, v in curve if name in v)
        ax.plot([p[0] for p in points], [p[1] for p in points], "-o", ms=3, color=_COLORS[0])
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig)


def history_figure(rows: Sequence[VersionRow], primary: str) -> str:
    """The primary metric per registry version, overall and per segment."""
    fig = Figure(figsize=(8.0, 4.0))
    ax = fig.subplots()
    x = np.arange(len(rows))
    lines = {"all queries": [r.metrics.get(primary) for r in rows]}
    for label in sorted({s for r in rows for s in r.segments}):
        lines[label] = [r.segments.get(label) for r in rows]
    for i, (label, values) in enumerate(lines.items()):
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        style = "-o" if i == 0 else "--."
        ax.plot(x, y, style, color=_COLORS[i % len(_COLORS)], label=label, lw=2 if i == 0 else 1)
    ax.set_xticks(x, [f"v{r.version}" for r in rows])
    ax.set_xlabel("registry version")
    ax.set_ylabel(primary)
    ax.set_title(f"{primary} across registry versions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1200px;color:#1f2328;line-height:1.4;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:18px;margin-top:28px;
border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right;white-space:nowrap}
th.t,td.t{text-align:left}th{background:#f6f8fa}h3{font-size:15px;margin:16px 0 4px}
details{margin:8px 0}summary{cursor:pointer;color:#0969da}
tr.primary td{background:#fff8c5;font-weight:600}
.ci{color:#57606a;font-size:11px}
.decision{padding:10px 14px;border-radius:6px;font-weight:600;margin:12px 0}
.yes{background:#dafbe1;border:1px solid #2da44e}.no{background:#ffebe9;border:1px solid #cf222e}
.fired{color:#cf222e;font-weight:600}.ok{color:#1a7f37}
img{max-width:100%;border:1px solid #d0d7de;border-radius:4px;margin:6px 0}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _fmt(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.4f}"


def _metric_rows(inputs: ReportInputs) -> list[str]:
    models = inputs.ordered_models()
    names: list[str] = []
    for m in models:
        names += [n for n in m.metrics if n not in names]
    return names


def _headline(names: Sequence[str], primary: str) -> list[str]:
    """The metrics seed 002 §3.1 lists: MRR, every Hit@k, the deepest NDCG@k, full NDCG,
    MAP, coverage, Gini, ECE, Brier (the cut-offs of NDCG/MAP go in the full table)."""
    ndcg_cuts = [n for n in names if n.startswith("ndcg@")]
    wanted = [primary, "mrr", *(n for n in names if n.startswith("hit@"))]
    wanted += [*ndcg_cuts[-1:], "ndcg", "map"]
    wanted += [*(n for n in names if n.startswith(("coverage@", "gini@"))), "ece", "brier"]
    out: list[str] = []
    for n in wanted:
        if n in names and n not in out:
            out.append(n)
    return out


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    row_classes: Sequence[str] | None = None,
    text_columns: Sequence[int] = (0,),
) -> str:
    """An HTML table; cells are trusted HTML (escape before), numbers align right."""
    head = "".join(
        f"<th class='t'>{_e(h)}</th>" if i in text_columns else f"<th>{_e(h)}</th>"
        for i, h in enumerate(header)
    )
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        cells = "".join(
            f"<td class='t'>{c}</td>" if i in text_columns else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _metric_table(inputs: ReportInputs, names: Sequence[str]) -> str:
    models = inputs.ordered_models()
    header = ["metric", *(f"{m.name} ({m.role})" for m in models)]
    rows, classes = [], []
    for name in names:
        cells = [_e(name)]
        for m in models:
            cell = _fmt(m.metrics.get(name))
            ci = m.intervals.get(name)
            if ci is not None:
                cell += f'<br><span class="ci">[{ci.low:.4f}, {ci.high:.4f}]</span>'
            cells.append(cell)
        rows.append(cells)
        classes.append("primary" if name == inputs.primary_metric else "")
    return _table(header, rows, classes)


def _metrics_section(inputs: ReportInputs) -> str:
    names = _metric_rows(inputs)
    headline = _headline(names, inputs.primary_metric)
    conf = next((ci.confidence for m in inputs.models for ci in m.intervals.values()), None)
    note = (
        f"<p class='ci'>Brackets: {conf:.0%} percentile-bootstrap intervals over queries. "
        f"Highlighted: the primary metric ({_e(inputs.primary_metric)}).</p>"
        if conf is not None
        else ""
    )
    rest = ""
    if len(headline) < len(names):
        rest = (
            "<details><summary>All metrics (every cut-off)</summary>"
            + _metric_table(inputs, names)
            + "</details>"
        )
    return "<h2 id='metrics'>Metrics</h2>" + _metric_table(inputs, headline) + note + rest


def _decision_section(d: GateDecision) -> str:
    cls = "yes" if d.improved else "no"
    verdict = "IMPROVED: promote to canary" if d.improved else "NOT IMPROVED: keep production"
    checks = ", ".join(f"{_e(k)}: {'pass' if v else 'FAIL'}" for k, v in d.checks.items())
    return (
        f"<h2 id='decision'>Gate decision</h2><div class='decision {cls}'>{verdict}</div>"
        f"<p>{_e(d.reason)}</p><p class='ci'>{checks}</p>"
    )


def _drift_section(drift: DriftResult) -> str:
    rows = []
    for name, c in drift.checks.items():
        status = "<span class='fired'>fired</span>" if c.drifted else "<span class='ok'>ok</span>"
        rows.append([_e(name), f"{c.value:.4g}", f"{c.threshold:.4g}", status, _e(c.rule)])
    verdict = "drift detected" if drift.drifted else "no drift"
    retrain = "retraining requested" if drift.retrain else "no retraining requested"
    evidently = (
        "<p class='ci'>Per-column detail: the Evidently report "
        f"<a href='{DRIFT_HTML}'>{DRIFT_HTML}</a>, saved beside this page.</p>"
        if drift.html is not None
        else ""
    )
    return (
        f"<h2 id='drift'>Drift</h2><p><b>{verdict}</b>; {retrain}.</p>"
        + _table(["check", "value", "threshold", "status", "rule"], rows, text_columns=(0, 4))
        + evidently
    )


# Metrics the compact tables (protocols, segments) show after the primary one, when present.
KEY_METRICS = ("mrr", "hit@1", "hit@5", "hit@10", "ndcg@10", "map")


def _key_metrics(available: Sequence[str], primary: str) -> list[str]:
    return [primary, *(n for n in KEY_METRICS if n in available and n != primary)]


def _protocols_section(protocols: Sequence[ProtocolResult], primary: str) -> str:
    parts = ["<h2 id='protocols'>Protocols</h2>"]
    for p in protocols:
        mean, std = p.mean(), p.std()
        names = _key_metrics(mean, primary)
        rows = [
            [
                _e(f"fold {f.fold}"),
                str(f.n_train),
                str(f.n_test),
                *(_fmt(f.metrics.get(n)) for n in names),
            ]
            for f in p.folds
        ]
        rows.append(
            [
                "<b>mean &plusmn; std</b>",
                "",
                "",
                *(f"{mean[n]:.4f} &plusmn; {std[n]:.4f}" for n in names),
            ]
        )
        parts.append(f"<h3>{_e(p.protocol)} ({len(p.folds)} folds)</h3>")
        parts.append(_table(["fold", "train", "test", *names], rows))
    return "".join(parts)


def _counterfactual_section(c: CounterfactualEstimate) -> str:
    rows = [
        [name, f"{iv.estimate:.4f}", f"[{iv.low:.4f}, {iv.high:.4f}]"]
        for name, iv in (("IPS", c.ips), ("SNIPS", c.snips))
    ]
    rows.append(["logged policy (on-policy mean)", f"{c.logged_value:.4f}", ""])
    return (
        "<h2 id='counterfactual'>Counterfactual value</h2>"
        + _table(["estimator", "value", "interval"], rows)
        + f"<p class='ci'>{c.n_events} logged events; effective sample size "
        f"{c.effective_sample_size:.0f}; max weight {c.max_weight:.2f}; clipped share "
        f"{c.clipped_share:.1%}.</p>"
    )


def _segments_section(segments: dict[str, dict[str, float]], primary: str) -> str:
    names = ["n_queries", *_key_metrics(next(iter(segments.values())), primary)]
    rows = [
        [_e(seg), *(str(int(v[n])) if n == "n_queries" else _fmt(v.get(n)) for n in names)]
        for seg, v in segments.items()
    ]
    return "<h2 id='segments'>Segments</h2>" + _table(["segment", *names], rows)


def _importance_rows(items: Sequence[Importance]) -> list[list[str]]:
    return [
        [
            _e(i.name),
            _fmt(i.drop.estimate),
            f"<span class='ci'>[{i.drop.low:.4f}, {i.drop.high:.4f}]</span>",
            str(i.repeats),
        ]
        for i in items
    ]


def _importance_section(rep: ImportanceReport) -> str:
    parts = [
        "<h2 id='importance'>Importance</h2>",
        f"<p class='ci'>Drop in {_e(rep.metric)} (intact: {rep.baseline:.4f} on "
        f"{rep.n_queries:,} test queries) when one capability feature is shuffled across "
        "capabilities (mean over the repeats) or one score channel is removed; brackets: "
        f"{next((i.drop.confidence for i in rep.items), 0.95):.0%} bootstrap intervals over "
        "queries. Near zero: the ranking does not rest on it.</p>",
    ]
    for kind, title in (("feature", "capability feature"), ("channel", "score channel")):
        items = rep.of(kind)
        if items:
            header = [title, f"{rep.metric} drop", "interval", "repeats"]
            parts.append(_table(header, _importance_rows(items)))
    parts += [f"<p class='ci'>{_e(n)}</p>" for n in rep.notes]
    return "".join(parts)


def _history_section(rows: Sequence[VersionRow], primary: str) -> str:
    found = {n for r in rows for n in r.metrics}
    names = _key_metrics(sorted(found), primary) + [n for n in ("scoring_p99_ms",) if n in found]
    table = [
        [f"v{_e(r.version)}", _e(", ".join(r.aliases)), *(_fmt(r.metrics.get(n)) for n in names)]
        for r in rows
    ]
    parts = [
        "<h2 id='history'>History across registry versions</h2>",
        "<p class='ci'>As each version's evaluate stage registered it (its own test "
        "queries: a change mixes model and data).</p>",
        _table(["version", "aliases", *names], table, text_columns=(0, 1)),
    ]
    labels = sorted({s for r in rows for s in r.segments})
    if labels:
        trend = [[_e(s), *(_fmt(r.segments.get(s)) for r in rows)] for s in labels]
        parts.append(f"<h3 id='segment-trends'>Segment trends ({_e(primary)})</h3>")
        parts.append(_table(["segment", *(f"v{r.version}" for r in rows)], trend))
    if len(rows) >= 2:
        parts.append(
            "<figure id='fig-history'><img alt='Metric history' "
            f"src='data:image/png;base64,{history_figure(rows, primary)}'></figure>"
        )
    return "".join(parts)


def render_html(inputs: ReportInputs) -> str:
    """The whole report as one self-contained HTML document."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(inputs.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(inputs.title)}</h1>",
    ]
    if inputs.metadata:
        rows = [[_e(k), _e(v)] for k, v in inputs.metadata.items()]
        parts.append(_table(["field", "value"], rows, text_columns=(0, 1)))
    if inputs.decision is not None:
        parts.append(_decision_section(inputs.decision))
    parts.append(_metrics_section(inputs))
    figures = []
    if inputs.calibration is not None:
        figures.append(
            ("reliability", "Reliability diagram", reliability_figure(inputs.calibration))
        )
    if any(m.relevant_ranks is not None for m in inputs.models):
        figures.append(("ranks", "Rank histogram", rank_histogram_figure(inputs.ordered_models())))
    if figures:
        parts.append("<h2 id='figures'>Calibration and ranks</h2><div class='figs'>")
        parts += [
            f"<figure id='fig-{key}'><img alt='{_e(alt)}' src='data:image/png;base64,{png}'>"
            f"<figcaption>{_e(alt)}</figcaption></figure>"
            for key, alt, png in figures
        ]
        parts.append("</div>")
    if inputs.learning_curve:
        png = learning_curve_figure(inputs.learning_curve)
        parts.append(
            "<h2 id='learning'>Learning curves</h2><figure id='fig-learning'>"
            f"<img alt='Learning curves' src='data:image/png;base64,{png}'></figure>"
        )
    if inputs.segments:
        parts.append(_segments_section(inputs.segments, inputs.primary_metric))
    if inputs.importance is not None:
        parts.append(_importance_section(inputs.importance))
    if inputs.history:
        parts.append(_history_section(inputs.history, inputs.primary_metric))
    if inputs.protocols:
        parts.append(_protocols_section(inputs.protocols, inputs.primary_metric))
    if inputs.counterfactual is not None:
        parts.append(_counterfactual_section(inputs.counterfactual))
    if inputs.drift is not None:
        parts.append(_drift_section(inputs.drift))
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- Markdown


def render_markdown(inputs: ReportInputs) -> str:
    """A short summary: decision, metric table, drift and counterfactual in a few lines."""
    models = inputs.ordered_models()
    lines = [f"# {inputs.title}", ""]
    if inputs.decision is not None:
        verdict = "IMPROVED" if inputs.decision.improved else "NOT IMPROVED"
        lines += [f"**Gate: {verdict}**: {inputs.decision.reason}", ""]
    lines.append("| metric | " + " | ".join(f"{m.name} ({m.role})" for m in models) + " |")
    lines.append("|---" * (len(models) + 1) + "|")
    for name in _metric_rows(inputs):
        cells = []
        for m in models:
            cell = _fmt(m.metrics.get(name))
            ci = m.intervals.get(name)
            if ci is not None:
                cell += f" [{ci.low:.3f}, {ci.high:.3f}]"
            cells.append(cell)
        label = f"**{name}**" if name == inputs.primary_metric else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    if inputs.counterfactual is not None:
        c = inputs.counterfactual
        lines.append(
            f"Counterfactual: SNIPS {c.snips.estimate:.4f} [{c.snips.low:.4f}, {c.snips.high:.4f}],"
            f" IPS {c.ips.estimate:.4f}; logged policy {c.logged_value:.4f}."
        )
    if inputs.drift is not None:
        fired = [n for n, c in inputs.drift.checks.items() if c.drifted]
        lines.append(
            "Drift: "
            + (f"fired: {', '.join(fired)}" if fired else "none")
            + ("; retraining requested." if inputs.drift.retrain else ".")
        )
    if inputs.importance is not None:
        imp = inputs.importance
        for kind in ("feature", "channel"):
            top = imp.of(kind)[:3]
            if top:
                lines.append(
                    f"Importance ({kind}s, {imp.metric} drop): "
                    + ", ".join(f"{i.name} {i.drop.estimate:.4f}" for i in top)
                    + "."
                )
    if inputs.history:
        m = inputs.primary_metric
        lines.append(
            f"History ({m}): "
            + ", ".join(f"v{r.version} {_fmt(r.metrics.get(m))}" for r in inputs.history)
            + "."
        )
    for p in inputs.protocols:
        mean, std = p.mean(), p.std()
        m = inputs.primary_metric
        lines.append(f"{p.protocol}: {m} {mean[m]:.4f} ± {std[m]:.4f} over {len(p.folds)} folds.")
    return "\n".join(lines).rstrip() + "\n"


def write_report(inputs: ReportInputs, out_dir: str | Path) -> dict[str, Path]:
    """Write report.html, report.md and (when present) drift_report.html atomically."""
    out = Path(out_dir)
    paths = {
        "html": atomic_write_text(out / "report.html", render_html(inputs)),
        "markdown": atomic_write_text(out / "report.md", render_markdown(inputs)),
    }
    if inputs.drift is not None and inputs.drift.html is not None:
        paths["drift_html"] = inputs.drift.write_html(out / DRIFT_HTML)
    return paths
