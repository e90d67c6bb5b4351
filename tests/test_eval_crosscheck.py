"""Every ranking metric equals trec_eval (via ir-measures/pytrec_eval) and ranx to 1e-6,
per query and in the mean, on real ToolLens runs: BM25 over capability text (many tied
scores) and MiniLM cosine, with the benchmark's binary labels and with graded labels
(shared tools between a capability and the query's relevant tools).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import ir_measures
import numpy as np
import pytest
import ranx
import scipy.sparse as sp
from ir_measures import AP, RR, Success, nDCG
from rank_bm25 import BM25Okapi

from caprank.config import EvaluationConfig
from caprank.data.toollens import import_toollens
from caprank.embeddings.text import encode_texts
from caprank.evaluation.metrics import metric_names, ranking_metrics
from caprank.evaluation.queries import queries_from_labels

TOOLLENS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "toollens"
pytestmark = [
    pytest.mark.skipif(not TOOLLENS.exists(), reason=f"ToolLens not at {TOOLLENS}"),
    pytest.mark.slow,
]
N_QUERIES = 300  # seeded sample of the official test split (MiniLM on 2 CPU cores is slow)
KS = EvaluationConfig().cutoffs
TOL = 1e-6


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _graded_relevance(queries, ds) -> sp.csr_matrix:
    """Grade = number of the capability's tools among the query's relevant tools."""
    relevant_tools = defaultdict(set)
    for line in (TOOLLENS / "query_tool_test.txt").read_text().splitlines():
        if line.strip():
            q, t = line.split()
            relevant_tools[q].add(t)
    cap_tools = [set(t) for t in ds.capabilities["tool_ids"].to_pylist()]
    dense = np.zeros((len(queries), queries.n_items))
    for i, q in enumerate(queries.query_ids):
        for j, tools in enumerate(cap_tools):
            dense[i, j] = len(tools & relevant_tools[q])
    dense = np.maximum(dense, queries.relevance.toarray())  # the labelled capability counts
    return sp.csr_matrix(dense)


@pytest.fixture(scope="session")
def toollens_runs():
    ds = import_toollens(TOOLLENS)
    queries = queries_from_labels(ds, "test")
    rows = np.sort(np.random.default_rng(0).choice(len(queries), N_QUERIES, replace=False))
    queries = queries.take(rows)
    tools = {
        tid: f"{name} {desc}"
        for tid, name, desc in zip(
            ds.tools["tool_id"].to_pylist(),
            ds.tools["name"].to_pylist(),
            ds.tools["description"].to_pylist(),
            strict=True,
        )
    }
    cap_desc = ds.capabilities["description"].to_pylist()
    cap_text = [
        d + " " + " ".join(tools[t] for t in tids)
        for d, tids in zip(cap_desc, ds.capabilities["tool_ids"].to_pylist(), strict=True)
    ]
    bm25 = BM25Okapi([_tokens(t) for t in cap_text])
    # Summation order leaves equal BM25 scores differing by ~1e-16, which trec_eval does not
    # tell apart; rounding makes them the exact ties they are meant to be.
    bm25_scores = np.round(np.stack([bm25.get_scores(_tokens(t)) for t in queries.texts]), 9)
    model = "all-MiniLM-L6-v2"
    cosine = encode_texts(list(queries.texts), model) @ encode_texts(cap_desc, model).T
    return {
        "runs": {"bm25": bm25_scores, "minilm": cosine},
        "qrels": {"binary": queries.relevance, "graded": _graded_relevance(queries, ds)},
    }


def _trec_eval(scores: np.ndarray, qrels: sp.csr_matrix) -> dict[str, np.ndarray]:
    """trec_eval orders ties by document id descending; naming item i as the zero-padded
    (n_items - 1 - i) makes that the same order as ours (lower index first)."""
    n_q, n_items = scores.shape

    def doc(i: int) -> str:
        return f"{n_items - 1 - i:06d}"

    coo = qrels.tocoo()
    qrel_rows = [
        ir_measures.Qrel(str(q), doc(i), int(g))
        for q, i, g in zip(coo.row, coo.col, coo.data, strict=True)
    ]
    run = [
        ir_measures.ScoredDoc(str(q), doc(i), float(scores[q, i]))
        for q in range(n_q)
        for i in range(n_items)
    ]
    measures = {"mrr": RR, "ndcg": nDCG, "map": AP}
    for k in KS:
        measures |= {f"hit@{k}": Success @ k, f"ndcg@{k}": nDCG @ k, f"map@{k}": AP @ k}
    by_name = {str(m): name for name, m in measures.items()}
    out = {name: np.full(n_q, np.nan) for name in measures}
    for res in ir_measures.pytrec_eval.iter_calc(list(measures.values()), qrel_rows, run):
        out[by_name[str(res.measure)]][int(res.query_id)] = res.value
    return out


def _ranx(scores: np.ndarray, qrels: sp.csr_matrix) -> dict[str, np.ndarray]:
    """ranx breaks ties in no documented order, so it gets the ranking as distinct scores
    (a stable sort of -scores, i.e. our tie rule); trec_eval checks the raw ties."""
    n_q, n_items = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    qids = [f"q{q:05d}" for q in range(n_q)]
    run = ranx.Run(
        {
            qid: {f"d{i}": float(n_items - pos) for pos, i in enumerate(order[q])}
            for q, qid in enumerate(qids)
        }
    )
    rel = qrels.tolil()
    qr = ranx.Qrels(
        {
            qid: {f"d{i}": int(g) for i, g in zip(rel.rows[q], rel.data[q], strict=True)}
            for q, qid in enumerate(qids)
        }
    )
    names = {"mrr": "mrr", "ndcg": "ndcg", "map": "map"}
    for k in KS:
        names |= {f"hit@{k}": f"hit_rate@{k}", f"ndcg@{k}": f"ndcg@{k}", f"map@{k}": f"map@{k}"}
    ranx.evaluate(qr, run, list(names.values()))
    return {
        ours: np.array([run.scores[theirs][qid] for qid in qids]) for ours, theirs in names.items()
    }


@pytest.mark.parametrize("library", ["trec_eval", "ranx"])
@pytest.mark.parametrize("grading", ["binary", "graded"])
@pytest.mark.parametrize("ranker", ["bm25", "minilm"])
def test_metrics_match_independent_library(toollens_runs, ranker, grading, library):
    scores = toollens_runs["runs"][ranker]
    qrels = toollens_runs["qrels"][grading]
    ours = ranking_metrics(scores, qrels, KS).per_query
    theirs = (_trec_eval if library == "trec_eval" else _ranx)(scores, qrels)
    assert set(theirs) == set(metric_names(KS)) == set(ours)
    for name, ref in theirs.items():
        assert not np.isnan(ref).any(), name
        worst = np.abs(ours[name] - ref).max()
        assert worst < TOL, f"{name}: per-query difference {worst}"
        assert abs(ours[name].mean() - ref.mean()) < TOL, name


def test_runs_exercise_ties_and_grades(toollens_runs):
    """The cross-check is only as strong as its data: BM25 ties relevant items with others,
    and the graded labels hold several relevant capabilities and grades above 1."""
    bm25 = toollens_runs["runs"]["bm25"]
    binary = toollens_runs["qrels"]["binary"].tocoo()
    own = bm25[binary.row, binary.col]
    tied = (bm25[binary.row] == own[:, None]).sum(axis=1) > 1
    assert tied.sum() >= 20, tied.sum()
    graded = toollens_runs["qrels"]["graded"]
    assert graded.data.max() >= 2
    assert (np.diff(graded.indptr) > 1).mean() > 0.5
    means = ranking_metrics(toollens_runs["runs"]["minilm"], binary.tocsr(), KS).means()
    assert 0.1 < means["mrr"] < 0.6  # a real ranker: far above chance (~0.015)
