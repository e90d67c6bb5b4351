"""The report's analytics sections: importance, registry history and segment trends."""

from __future__ import annotations

import numpy as np

from caprank.config import EvaluationConfig
from caprank.evaluation.bootstrap import Interval
from caprank.evaluation.history import history_rows, segment_metrics
from caprank.evaluation.importance import Importance, ImportanceReport
from caprank.evaluation.metrics import evaluate_scores
from caprank.evaluation.report import ReportInputs, render_html, render_markdown, summarize_model
from caprank.registry import RegisteredVersion, mlflow_key


def _version(n: int, mrr: float, segments: dict[str, float], aliases=()) -> RegisteredVersion:
    metrics = {
        "mrr": mrr,
        "hit@1": mrr / 2,
        **segment_metrics({k: {"mrr": v} for k, v in segments.items()}, "mrr"),
    }
    tags = {f"caprank.metric.{mlflow_key(k)}": repr(v) for k, v in metrics.items()}
    return RegisteredVersion("m", str(n), "s3://x", None, tuple(aliases), tags)


def test_history_rows_read_metrics_and_segments_back():
    versions = [
        _version(1, 0.5, {"warm": 0.6, "size 3+": 0.4}, ("production",)),
        _version(2, 0.55, {"warm": 0.65, "cold": 0.3}),
        RegisteredVersion("m", "3", "s3://x", None),  # registered without metrics
    ]
    rows = history_rows(versions, ["mrr", "hit@1", "map"], "mrr", labels=["size 3+"])
    assert [r.version for r in rows] == ["1", "2", "3"]
    assert rows[0].metrics == {"mrr": 0.5, "hit@1": 0.25} and rows[0].aliases == ("production",)
    assert rows[0].segments == {"size 3+": 0.4, "warm": 0.6}  # label restored from the key
    assert rows[1].segments == {"cold": 0.3, "warm": 0.65}
    assert rows[2].metrics == {} and rows[2].segments == {}
    # an unknown label keeps its registry key
    assert set(history_rows(versions[:1], ["mrr"], "mrr")[0].segments) == {"size 3_", "warm"}


def _inputs() -> ReportInputs:
    ev = EvaluationConfig(bootstrap_samples=50)
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 10))
    model = summarize_model(
        "cand", "challenger", evaluate_scores(scores, [{i % 10: 1} for i in range(40)], ev), ev
    )
    iv = lambda e: Interval(e, e - 0.01, e + 0.01, 0.95)  # noqa: E731
    imp = ImportanceReport(
        "mrr",
        0.6,
        40,
        [
            Importance("success_rate", "feature", iv(0.02), 3),
            Importance("tool_count", "feature", iv(0.0), 3),
            Importance("content", "channel", iv(0.4), 1),
            Importance("id", "channel", iv(0.1), 1),
        ],
    )
    versions = [
        _version(1, 0.5, {"warm": 0.6}, ("production",)),
        _version(2, 0.55, {"warm": 0.65, "cold": 0.3}),
    ]
    history = history_rows(versions, ["mrr", "hit@1"], "mrr")
    return ReportInputs("t", "mrr", [model], importance=imp, history=history)


def test_html_shows_importance_history_and_trends():
    page = render_html(_inputs())
    for anchor in ("id='importance'", "id='history'", "id='segment-trends'", "id='fig-history'"):
        assert anchor in page, anchor
    assert "capability feature" in page and "score channel" in page
    # largest drop first within a kind
    assert page.index(">content<") < page.index(">id<")
    assert page.index(">success_rate<") < page.index(">tool_count<")
    assert "<td>0.6500</td>" in page and "<td class='t'>cold</td><td>-</td><td>0.3000</td>" in page


def test_markdown_lists_top_importance_and_history():
    md = render_markdown(_inputs())
    assert "Importance (features, mrr drop): success_rate 0.0200, tool_count 0.0000." in md
    assert "Importance (channels, mrr drop): content 0.4000, id 0.1000." in md
    assert "History (mrr): v1 0.5000, v2 0.5500." in md
