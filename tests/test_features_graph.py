"""Graph features on small known graphs (hand values and networkx as the reference)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from networkx.algorithms import bipartite

from caprank.config import FeaturesConfig
from caprank.features.graph import (
    bipartite_adjacency,
    capability_graph_features,
    incidence_matrix,
    pagerank,
    projection_clustering,
)

# a: t1 t2 | b: t2 t3 | c: t1 t3 | d: t4 | e: t4 t5 t5 (repeat) | f: t2
TOOL_LISTS = [["t1", "t2"], ["t2", "t3"], ["t1", "t3"], ["t4"], ["t4", "t5", "t5"], ["t2"]]


def test_incidence_counts_a_repeated_tool_once():
    inc, tools = incidence_matrix(TOOL_LISTS)
    assert tools == ["t1", "t2", "t3", "t4", "t5"]
    assert inc.toarray()[4].tolist() == [0, 0, 0, 1, 1]


def test_clustering_by_hand():
    inc, _ = incidence_matrix(TOOL_LISTS)
    # projection: a-b, a-c, b-c (a triangle), a-f, b-f, d-e
    # a: neighbours b, c, f; linked pairs b-c, b-f of 3 -> 2/3; c: neighbours a, b -> 1
    # d, e: one neighbour -> 0; f: neighbours a, b (linked) -> 1
    np.testing.assert_allclose(projection_clustering(inc), [2 / 3, 2 / 3, 1.0, 0.0, 0.0, 1.0])


def test_pagerank_of_a_star_by_hand():
    # centre 0 with 3 leaves
    star = sp.csr_matrix(np.array([[0, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]]))
    d = 0.85
    ranks = pagerank(star, damping=d, tol=1e-14)
    # centre c and leaf l satisfy c = (1-d)/4 + 3 d l and l = (1-d)/4 + d c / 3
    c = (1 - d) / 4 * (1 + 3 * d) / (1 - d**2)
    assert ranks[0] == pytest.approx(c, rel=1e-10)
    assert ranks[1:] == pytest.approx([(1 - c) / 3] * 3, rel=1e-10)
    assert ranks.sum() == pytest.approx(1.0)


def test_matches_networkx_on_the_bipartite_graph():
    cfg = FeaturesConfig()
    inc, _ = incidence_matrix(TOOL_LISTS)
    pr, cc = capability_graph_features(inc, cfg)
    graph = nx.Graph()
    caps = [f"cap{i}" for i in range(len(TOOL_LISTS))]
    for cap, tl in zip(caps, TOOL_LISTS, strict=True):
        graph.add_edges_from((cap, t) for t in tl)
    ref = nx.pagerank(graph, alpha=cfg.pagerank_damping, tol=1e-13, max_iter=1000)
    n = graph.number_of_nodes()
    np.testing.assert_allclose(pr, [ref[c] * n for c in caps], rtol=1e-8)
    proj = bipartite.projected_graph(graph, caps)
    np.testing.assert_allclose(cc, [nx.clustering(proj, c) for c in caps])


def test_weighted_pagerank_matches_networkx_and_co_usage_shifts_rank():
    cfg = FeaturesConfig(co_usage_weight=2.0)
    inc, _ = incidence_matrix(TOOL_LISTS)
    co = sp.lil_matrix(inc.shape)
    co[3, 0] = 3.0  # d was used three times with t1 in the context, once with t2
    co[3, 1] = 1.0
    pr, cc = capability_graph_features(inc, cfg, co.tocsr())
    plain, plain_cc = capability_graph_features(inc, cfg)
    np.testing.assert_array_equal(cc, plain_cc)  # clustering ignores co-usage
    assert pr[3] > plain[3]  # d gained edges into the large component

    weights = inc.toarray().astype(float)
    weights[3, 0] += 2.0 * 3 / 4
    weights[3, 1] += 2.0 * 1 / 4
    adj = bipartite_adjacency(sp.csr_matrix(weights))
    graph = nx.from_scipy_sparse_array(adj)
    ref = nx.pagerank(graph, alpha=cfg.pagerank_damping, tol=1e-13, max_iter=1000)
    n = graph.number_of_nodes()
    np.testing.assert_allclose(pr, [ref[i] * n for i in range(len(TOOL_LISTS))], rtol=1e-8)


def test_dangling_and_empty_graphs():
    inc, _ = incidence_matrix([["t1"], []])  # the second capability has no tool
    pr, cc = capability_graph_features(inc, FeaturesConfig())
    assert pr.shape == (2,) and np.isfinite(pr).all() and pr[0] > pr[1]
    assert cc.tolist() == [0.0, 0.0]
    assert pagerank(sp.csr_matrix((0, 0))).shape == (0,)
