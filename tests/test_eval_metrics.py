"""Metrics on hand-computed cases: ranks and ties, graded NDCG, MAP, ECE, Brier, coverage, Gini."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from caprank.config import EvaluationConfig
from caprank.errors import DataError
from caprank.evaluation.metrics import (
    calibration_metrics,
    diversity_metrics,
    evaluate_scores,
    gini,
    ranking_metrics,
    ranks_of,
    segment_means,
    top_k_items,
)


def test_single_relevant_item_at_rank_three():
    m = ranking_metrics(np.array([[0.9, 0.5, 0.7, 0.1]]), [{1: 1}], [1, 3])
    means = m.means()
    assert m.first_relevant_rank.tolist() == [3]
    assert means["mrr"] == pytest.approx(1 / 3)
    assert (means["hit@1"], means["hit@3"]) == (0.0, 1.0)
    assert means["ndcg@1"] == 0.0
    assert means["ndcg@3"] == pytest.approx(1 / math.log2(4))
    assert means["map"] == pytest.approx(1 / 3)
    assert means["map@1"] == 0.0


def test_ties_go_to_the_lower_item_index():
    scores = np.array([[1.0, 1.0, 1.0, 0.0]])
    assert ranks_of(scores, np.array([0, 0, 0, 0]), np.array([0, 1, 2, 3])).tolist() == [1, 2, 3, 4]
    assert ranking_metrics(scores, [{2: 1}], [1]).means()["mrr"] == pytest.approx(1 / 3)
    assert top_k_items(np.array([[1.0, 2.0, 2.0, 2.0, 0.0]]), 2).tolist() == [[1, 2]]
    # The top-k fast path agrees with a full stable sort on tie-heavy integer scores.
    rng = np.random.default_rng(3)
    s = rng.integers(0, 4, size=(50, 30)).astype(float)
    expected = np.argsort(-s, axis=1, kind="stable")[:, :7]
    assert (top_k_items(s, 7) == expected).all()


def test_graded_relevance_ndcg_and_map():
    # Order by score: items 1, 2, 3, 0. Relevant: item 0 (grade 3) at rank 4, item 2 (grade 1) at 2.
    m = ranking_metrics(np.array([[0.1, 0.4, 0.3, 0.2]]), [{0: 3, 2: 1}], [1, 2, 3]).means()
    dcg = 1 / math.log2(3) + 3 / math.log2(5)
    ideal = 3 / math.log2(2) + 1 / math.log2(3)
    assert m["mrr"] == pytest.approx(0.5)
    assert (m["hit@1"], m["hit@2"], m["hit@3"]) == (0.0, 1.0, 1.0)
    assert m["ndcg"] == pytest.approx(dcg / ideal)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / ideal)
    assert m["map"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert m["map@2"] == pytest.approx((1 / 2) / 2)
    assert m["map@3"] == pytest.approx((1 / 2) / 2)


def test_relevance_formats_agree_and_drop_non_positive_grades():
    scores = np.array([[0.3, 0.2, 0.1], [0.1, 0.2, 0.3]])
    dicts = [{2: 1, 0: 0}, {0: 2}]
    dense = np.array([[0, 0, 1], [2, 0, 0]])
    a = ranking_metrics(scores, dicts, [1]).per_query
    b = ranking_metrics(scores, sp.csr_matrix(dense), [1]).per_query
    c = ranking_metrics(scores, dense, [1]).per_query
    for name in a:
        assert np.array_equal(a[name], b[name]) and np.array_equal(a[name], c[name])
    assert a["mrr"].tolist() == [1 / 3, 1 / 3]


def test_bad_inputs_name_row_and_field():
    with pytest.raises(DataError, match=r"row 1.*NaN|NaN") as err:
        ranking_metrics(np.array([[0.1, 0.2], [np.nan, 0.2]]), [{0: 1}, {0: 1}], [1])
    assert err.value.row == 1 and err.value.field == "item 0"
    with pytest.raises(DataError, match="no relevant item") as err:
        ranking_metrics(np.array([[0.1, 0.2], [0.3, 0.2]]), [{0: 1}, {1: 0}], [1])
    assert err.value.row == 1
    with pytest.raises(DataError, match="outside") as err:
        ranking_metrics(np.array([[0.1, 0.2]]), [{5: 1}], [1])
    assert err.value.field == "item"
    with pytest.raises(DataError, match="2-D"):
        ranking_metrics(np.array([0.1, 0.2]), [{0: 1}], [1])


def test_ece_and_brier_by_hand():
    p = np.array([0.05, 0.15, 0.18, 0.95])
    y = np.array([0, 1, 0, 1])
    cal = calibration_metrics(p, y, n_bins=10)
    # Bins: {0.05} vs 0, {0.15, 0.18} vs 0.5, {0.95} vs 1.
    assert cal.ece == pytest.approx(0.25 * 0.05 + 0.5 * abs(0.165 - 0.5) + 0.25 * 0.05)
    assert cal.brier == pytest.approx((0.05**2 + 0.85**2 + 0.18**2 + 0.05**2) / 4)
    assert cal.bin_counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]
    # p = 1 falls in the last bin; perfectly calibrated extremes give zero error.
    perfect = calibration_metrics(np.array([0.0, 1.0, 1.0]), np.array([0, 1, 1]), n_bins=5)
    assert perfect.ece == 0.0 and perfect.brier == 0.0 and perfect.bin_counts[-1] == 2
    with pytest.raises(DataError, match="not in") as err:
        calibration_metrics(np.array([0.2, 1.2]), np.array([0, 1]), 10)
    assert err.value.row == 1
    with pytest.raises(DataError, match="not 0 or 1"):
        calibration_metrics(np.array([0.2, 0.3]), np.array([0, 2]), 10)


def test_coverage_and_gini_by_hand():
    scores = np.array([[5.0, 1.0, 2.0, 0.0], [3.0, 0.0, 1.0, 2.0], [0.0, 1.0, 4.0, 3.0]])
    div = diversity_metrics(scores, k=1)  # top-1 items: 0, 0, 2
    assert div.counts.tolist() == [2, 0, 1, 0]
    assert div.coverage == 0.5
    assert div.gini == pytest.approx(7 / 12)  # sorted [0,0,1,2]: (1*1 + 3*2) / (4*3)
    assert gini(np.array([3, 3, 3])) == 0.0
    assert gini(np.array([0, 0, 0, 5])) == pytest.approx(3 / 4)
    assert gini(np.zeros(4)) == 0.0
    assert diversity_metrics(scores, k=4).coverage == 1.0


def test_segments_and_json_summary():
    per_query = {"mrr": np.array([1.0, 0.5, 0.25, 1.0])}
    seg = segment_means(per_query, ["a", "b", "a", "b"])
    assert seg == {"a": {"n_queries": 2.0, "mrr": 0.625}, "b": {"n_queries": 2.0, "mrr": 0.75}}
    cfg = EvaluationConfig(cutoffs=[1, 10], coverage_k=2)
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.1]])
    out = evaluate_scores(
        scores,
        [{0: 1}, {2: 1}],
        cfg,
        probabilities=np.array([0.9, 0.2]),
        outcomes=np.array([1, 0]),
        segments=["x", "y"],
    )
    summary = out.summary()
    assert summary["mrr"] == pytest.approx((1 + 1 / 3) / 2)
    assert summary["coverage@2"] == 1.0 and "gini@2" in summary and "ece" in summary
    text = json.dumps(out.to_dict(include_per_query=True))
    assert json.loads(text)["segments"]["y"]["mrr"] == pytest.approx(1 / 3)
