"""The evaluation report renders in headless Chromium (skipped where Chromium is absent)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from caprank.config import EvaluationConfig
from caprank.evaluation.gate import decide
from caprank.evaluation.metrics import evaluate_scores
from caprank.evaluation.report import ReportInputs, summarize_model, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _report(tmp_path):
    rng = np.random.default_rng(0)
    cfg = EvaluationConfig(bootstrap_samples=100)
    rel = np.zeros((200, 50))
    rel[np.arange(200), rng.integers(0, 50, 200)] = 1
    good = rel * 2 + rng.random((200, 50))
    weak = rel * 0.5 + rng.random((200, 50))
    probs = rng.random(200)
    ch = evaluate_scores(good, rel, cfg, probabilities=probs, outcomes=probs > 0.5)
    pr = evaluate_scores(weak, rel, cfg)
    m = cfg.primary_metric
    inputs = ReportInputs(
        "render check",
        m,
        [
            summarize_model("candidate", "challenger", ch, cfg),
            summarize_model("v1", "production", pr, cfg),
        ],
        decision=decide(
            ch.ranking.per_query[m], pr.ranking.per_query[m], ece=0.1, scoring_p99_ms=3, cfg=cfg
        ),
        calibration=ch.calibration,
        learning_curve=[(s, {"loss": 1 / (s + 1)}) for s in range(10)],
    )
    return write_report(inputs, tmp_path)["html"]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    html = _report(tmp_path)
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1280,2400",
            f"--screenshot={shot}",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # not a blank page
    # The DOM Chromium built holds the sections and all three figures.
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", html.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for part in ("Gate decision", "fig-reliability", "fig-ranks", "fig-learning"):
        assert part in dom
