"""Graph features of capabilities: PageRank and a clustering coefficient.

The graph is the capability-tool bipartite graph of the catalog (an edge joins a
capability to each tool it composes). Optionally, past interactions add weighted
capability-tool "co-usage" edges (the tools in the context when the capability was
selected); those only feed PageRank.

PageRank runs on the undirected, weighted bipartite graph and is reported multiplied by
the node count, so 1.0 means "as central as the average node" whatever the catalog size.

A bipartite graph has no triangles, so its ordinary clustering coefficient is always 0.
We use the clustering coefficient of the *capability projection*: two capabilities are
linked when they share at least one catalog tool, and a capability's coefficient is the
share of pairs of its neighbours that are linked too (Watts-Strogatz local clustering).
High values mean the capability sits in a tight family of interchangeable compositions;
low values mean it bridges otherwise unrelated families. Co-usage edges are left out of
it on purpose: context tools are shared by most events and would make the projection
nearly complete.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from caprank.config import FeaturesConfig

log = logging.getLogger(__name__)


def incidence_matrix(
    tool_lists: Sequence[Sequence[str]], tool_index: dict[str, int] | None = None
) -> tuple[sp.csr_matrix, list[str]]:
    """Capability x tool 0/1 matrix (a tool repeated in a composition counts once)."""
    if tool_index is None:
        tool_index = {t: i for i, t in enumerate(sorted({t for ts in tool_lists for t in ts}))}
    rows = np.repeat(np.arange(len(tool_lists)), [len(ts) for ts in tool_lists])
    cols = np.fromiter((tool_index[t] for ts in tool_lists for t in ts), dtype=np.int64)
    mat = sp.csr_matrix(
        (np.ones(len(cols)), (rows, cols)), shape=(len(tool_lists), len(tool_index))
    )
    mat.data[:] = 1.0  # duplicates were summed; a repeated tool is still one edge
    return mat, sorted(tool_index, key=tool_index.__getitem__)


def bipartite_adjacency(incidence: sp.spmatrix) -> sp.csr_matrix:
    """Symmetric adjacency of the bipartite graph: capabilities first, then tools."""
    inc = sp.csr_matrix(incidence)
    return sp.bmat([[None, inc], [inc.T, None]], format="csr")


def pagerank(
    adjacency: sp.spmatrix, damping: float = 0.85, tol: float = 1e-10, max_iter: int = 1000
) -> np.ndarray:
    """Weighted PageRank by power iteration; sums to 1 (dangling mass spread uniformly).

    Stops when the L1 change falls below ``n * tol`` (the criterion networkx uses).
    """
    adj = sp.csr_matrix(adjacency, dtype=np.float64)
    n = adj.shape[0]
    if n == 0:
        return np.zeros(0)
    out_weight = np.asarray(adj.sum(axis=1)).ravel()
    dangling = out_weight == 0
    inv = np.divide(1.0, out_weight, out=np.zeros(n), where=~dangling)
    transition_t = (sp.diags(inv) @ adj).T.tocsr()  # column-stochastic for non-dangling
    rank = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        spread = damping * rank[dangling].sum() + (1.0 - damping)
        new = damping * (transition_t @ rank) + spread / n
        delta = np.abs(new - rank).sum()
        rank = new
        if delta < n * tol:
            break
    else:
        log.warning("PageRank stopped after %d iterations (change %.3g)", max_iter, delta)
    return rank / rank.sum()


def projection_clustering(incidence: sp.spmatrix) -> np.ndarray:
    """Local clustering coefficient of each capability in the capability projection."""
    inc = sp.csr_matrix(incidence)
    inc.data[:] = 1.0
    linked = (inc @ inc.T).tocsr()
    linked.setdiag(0)
    linked.eliminate_zeros()
    linked.data[:] = 1.0
    degree = np.asarray(linked.sum(axis=1)).ravel()
    triangles = np.asarray((linked @ linked).multiply(linked).sum(axis=1)).ravel() / 2.0
    pairs = degree * (degree - 1) / 2.0
    return np.divide(triangles, pairs, out=np.zeros_like(triangles), where=pairs > 0)


def capability_graph_features(
    incidence: sp.spmatrix, cfg: FeaturesConfig, co_usage: sp.spmatrix | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(pagerank_score, clustering_coefficient) for each row (capability) of ``incidence``.

    ``co_usage`` (same shape: capability x tool counts from past events) is row-normalized
    and scaled so each used capability adds ``cfg.co_usage_weight`` of edge weight.
    Tools without any edge are not part of the graph.
    """
    inc = sp.csr_matrix(incidence, dtype=np.float64)
    n_caps = inc.shape[0]
    weights = inc.copy()
    if co_usage is not None and cfg.co_usage_weight > 0:
        co = sp.csr_matrix(co_usage, dtype=np.float64)
        if co.shape != inc.shape:
            raise ValueError(f"co_usage shape {co.shape} differs from incidence {inc.shape}")
        totals = np.asarray(co.sum(axis=1)).ravel()
        scale = np.divide(cfg.co_usage_weight, totals, out=np.zeros(n_caps), where=totals > 0)
        weights = weights + sp.diags(scale) @ co
    used_tools = np.flatnonzero(np.asarray(weights.sum(axis=0)).ravel() > 0)
    weights = weights[:, used_tools]
    ranks = pagerank(
        bipartite_adjacency(weights),
        damping=cfg.pagerank_damping,
        tol=cfg.pagerank_tol,
        max_iter=cfg.pagerank_max_iter,
    )
    n_nodes = n_caps + len(used_tools)
    return ranks[:n_caps] * n_nodes, projection_clustering(inc)
