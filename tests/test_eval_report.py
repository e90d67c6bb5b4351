"""The evaluation report: HTML holds every section and inline PNGs, Markdown summarizes,
files are written whole, and (when chromium is installed) the page really renders."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from caprank.config import CaprankConfig
from caprank.evaluation.counterfactual import estimate_policy_value
from caprank.evaluation.gate import decide
from caprank.evaluation.metrics import evaluate_scores
from caprank.evaluation.protocols import FoldResult, ProtocolResult
from caprank.evaluation.report import (
    ReportInputs,
    render_html,
    render_markdown,
    summarize_model,
    write_report,
)
from caprank.monitoring.drift import DriftWindow, detect_drift

CHROMIUM = Path("/usr/bin/chromium")
N_QUERIES, N_ITEMS = 300, 60


class _Page(HTMLParser):
    """Collects element ids, image sources, headings and external references."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.refs: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "table":
            self.tables += 1
        for key in ("src", "href"):
            if key in a and not a[key].startswith("data:"):
                self.refs.append(a[key])


@pytest.fixture(scope="module")
def inputs() -> ReportInputs:
    cfg = CaprankConfig()
    ev = cfg.evaluation.model_copy(update={"bootstrap_samples": 200})
    rng = np.random.default_rng(0)
    relevant = rng.integers(0, N_ITEMS, N_QUERIES)
    qrels = [{int(i): 1} for i in relevant]
    signal = np.zeros((N_QUERIES, N_ITEMS))
    signal[np.arange(N_QUERIES), relevant] = 1.0

    def ranker(strength: float) -> np.ndarray:
        return strength * signal + rng.normal(size=(N_QUERIES, N_ITEMS))

    challenger, production, baseline = ranker(2.5), ranker(2.0), ranker(0.5)
    probs = 1 / (1 + np.exp(-(challenger.max(axis=1) - 2.0)))
    hit1 = (challenger.argmax(axis=1) == relevant).astype(int)
    segments = np.where(relevant < N_ITEMS // 2, "small", "large")
    ch = evaluate_scores(
        challenger, qrels, ev, probabilities=probs, outcomes=hit1, segments=segments
    )
    pr = evaluate_scores(production, qrels, ev)
    models = [
        summarize_model("Challenger <v2> & co", "challenger", ch, ev),
        summarize_model("production", "production", pr, ev),
        summarize_model("bm25", "baseline", evaluate_scores(baseline, qrels, ev), ev),
    ]
    decision = decide(
        ch.ranking.per_query["mrr"],
        pr.ranking.per_query["mrr"],
        ece=ch.calibration.ece,
        scoring_p99_ms=15.0,
        cfg=ev,
    )
    folds = [
        FoldResult(i, 240, 60, {"mrr": 0.5 + 0.01 * i, "hit@1": 0.4, "map": 0.5}) for i in range(3)
    ]
    emb = rng.normal(size=(200, 8))
    drift = detect_drift(
        DriftWindow(embeddings=emb, scores=rng.normal(size=200)),
        DriftWindow(embeddings=emb + 0.5, scores=rng.normal(size=200)),
        cfg.monitoring,
    )
    n = 500
    logged = estimate_policy_value(
        (rng.random(n) < 0.4).astype(float), np.full(n, 0.5), rng.uniform(0, 1, n), ev
    )
    curve = [
        (s, {"loss": 1 / (1 + s / 100), "val_mrr": 0.3 + s / 2000}) for s in range(0, 1001, 100)
    ]
    return ReportInputs(
        title="Evaluation <test> & report",
        primary_metric=ev.primary_metric,
        models=models,
        decision=decision,
        calibration=ch.calibration,
        learning_curve=curve,
        segments=ch.segments,
        protocols=[ProtocolResult("cross_validation", folds)],
        counterfactual=logged,
        drift=drift,
        metadata={"model version": "7", "data hash": "abc123"},
    )


def test_html_has_every_section_and_inline_images(inputs):
    page_html = render_html(inputs)
    page = _Page()
    page.feed(page_html)
    assert {
        "decision",
        "metrics",
        "figures",
        "fig-reliability",
        "fig-ranks",
        "learning",
        "fig-learning",
        "segments",
        "protocols",
        "counterfactual",
        "drift",
    } <= page.ids
    assert len(page.images) == 3
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert page.refs == []  # self-contained: no external file, script or stylesheet
    assert "Evaluation &lt;test&gt; &amp; report" in page_html  # user text is escaped
    assert "Challenger &lt;v2&gt; &amp; co (challenger)" in page_html
    assert "<details>" in page_html and page.tables >= 6
    assert page_html == render_html(inputs)  # deterministic, images included


def test_minimal_report_leaves_out_sections_without_inputs(inputs):
    minimal = ReportInputs("Only metrics", "mrr", inputs.models[:1])
    page = _Page()
    page.feed(render_html(minimal))
    assert "metrics" in page.ids
    assert not page.ids & {"decision", "drift", "learning", "protocols", "counterfactual"}
    assert len(page.images) == 1  # the rank histogram needs only the model's ranks


def test_markdown_summary(inputs):
    md = render_markdown(inputs)
    assert md.startswith("# Evaluation <test> & report\n")
    assert "**Gate: " in md and inputs.decision.reason in md
    assert "| **mrr** |" in md and "| hit@10 |" in md
    assert "Drift: fired: embedding_drift" in md
    assert "cross_validation: mrr 0.5100 ± 0.0100 over 3 folds." in md
    header = next(line for line in md.splitlines() if line.startswith("| metric |"))
    assert header.count("|") == len(inputs.models) + 2


def test_write_report_is_atomic_and_complete(inputs, tmp_path):
    paths = write_report(inputs, tmp_path / "report")
    assert set(paths) == {"html", "markdown"}  # no Evidently page: features were not checked
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["report.html", "report.md"]
    assert paths["html"].read_text(encoding="utf-8") == render_html(inputs)


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="chromium not installed (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(inputs, tmp_path):
    from PIL import Image

    page = write_report(inputs, tmp_path)["html"]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    image = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"))
    assert image.shape == (2000, 1280, 3)
    ink = (image < 200).any(axis=2).mean()  # share of pixels that are not near-white
    colors = len(np.unique(image.reshape(-1, 3), axis=0))
    assert ink > 0.03 and colors > 100, (ink, colors)
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
