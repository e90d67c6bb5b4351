"""Node2Vec: the CSR graph, p/q-biased walks against theory, determinism, block recovery."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from caprank.config import Node2VecConfig
from caprank.embeddings.node2vec import Graph, node2vec_embeddings, random_walks


def test_graph_from_edges_symmetrizes_merges_and_sorts():
    g = Graph.from_edges(4, np.array([2, 0, 0, 1, 3]), np.array([0, 2, 1, 1, 0]), None)
    # 0-2 given twice (merged, weight 2), 1-1 self loop dropped, 3-0 kept
    assert g.num_edges == 3
    assert g.rowptr.tolist() == [0, 3, 4, 5, 6]
    assert g.col.tolist() == [1, 2, 3, 0, 0, 0]
    assert g.weight.tolist() == [1.0, 2.0, 1.0, 1.0, 2.0, 1.0]
    assert Graph.from_edges(3, np.array([0]), np.array([1])).weight is None
    with pytest.raises(ValueError, match="endpoints"):
        Graph.from_edges(2, np.array([0]), np.array([5]))
    with pytest.raises(ValueError, match="weights"):
        Graph.from_edges(2, np.array([0]), np.array([1]), np.array([0.0]))


@pytest.mark.parametrize(("p", "q"), [(0.5, 2.0), (4.0, 0.25)])
def test_walk_transitions_match_node2vec_theory(p, q):
    # t=0 -- v=1; a=2 neighbours both t and v; b=3 and c=4 hang off v; v-b weighs 3.
    g = Graph.from_edges(
        5, np.array([0, 0, 1, 1, 1]), np.array([1, 2, 2, 3, 4]), np.array([1, 1, 1, 3.0, 1])
    )
    gen = torch.Generator().manual_seed(0)
    walks = random_walks(g, torch.zeros(60_000, dtype=torch.long), 3, p, q, gen)
    assert walks[:, 0].eq(0).all()
    # first step from t: uniform over its neighbours v and a (both weigh 1)
    assert abs(float(walks[:, 1].eq(1).double().mean()) - 0.5) < 0.01
    via_v = walks[walks[:, 1] == 1][:, 2]
    observed = torch.bincount(via_v, minlength=5).double() / via_v.numel()
    # from v, having come from t: weight * (1/p back to t, 1 to t's neighbour a, 1/q away)
    unnorm = np.array([1 / p, 0.0, 1.0, 3.0 / q, 1.0 / q])
    expected = unnorm / unnorm.sum()
    np.testing.assert_allclose(observed.numpy(), expected, atol=0.01)


def test_walks_follow_edges_and_isolated_nodes_stay():
    g = Graph.from_edges(6, np.array([0, 1, 2, 3]), np.array([1, 2, 3, 0]))  # 4-cycle; 4, 5 alone
    walks = random_walks(g, torch.tensor([0, 1, 4, 5]), 8, 0.5, 2.0, torch.Generator())
    assert walks[2].eq(4).all() and walks[3].eq(5).all()
    rows = np.repeat(np.arange(6), g.degree().numpy()).tolist()
    keys = set(zip(rows, g.col.tolist(), strict=True))
    for w in walks[:2].tolist():
        assert all(pair in keys for pair in itertools.pairwise(w))


def _sbm(n_per_block: int = 40, blocks: int = 5, p_in: float = 0.25, p_out: float = 0.01):
    rng = np.random.default_rng(3)
    label = np.repeat(np.arange(blocks), n_per_block)
    prob = np.where(label[:, None] == label[None, :], p_in, p_out)
    src, dst = np.nonzero(np.triu(rng.random(prob.shape) < prob, 1))
    return Graph.from_edges(label.size, src, dst), label


SMALL = Node2VecConfig(dim=16, walks_per_node=10, epochs=2, batch_size=64, lr=0.05)


def test_embeddings_are_deterministic_for_a_seed():
    g, _ = _sbm(n_per_block=12)
    a = node2vec_embeddings(g, SMALL, seed=5)
    b = node2vec_embeddings(g, SMALL, seed=5)
    c = node2vec_embeddings(g, SMALL, seed=6)
    assert a.vectors.shape == (60, 16) and a.vectors.dtype == np.float32
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert a.epoch_losses == b.epoch_losses
    assert not np.allclose(a.vectors, c.vectors)


def test_planted_partition_blocks_are_recovered():
    g, label = _sbm()
    res = node2vec_embeddings(g, SMALL, seed=1)
    assert res.epoch_losses[-1] < res.epoch_losses[0]
    assert res.walks_per_epoch == 200 * 10 and res.isolated_nodes == 0
    vecs = res.vectors / np.linalg.norm(res.vectors, axis=1, keepdims=True)
    found = KMeans(5, n_init=10, random_state=0).fit_predict(vecs)
    assert normalized_mutual_info_score(label, found) >= 0.9
