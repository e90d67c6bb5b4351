"""Hybrid vectors: concat keeps the weighted-cosine identity; projection is fixed and unit."""

from __future__ import annotations

import numpy as np
import pytest

from caprank.config import HybridConfig
from caprank.embeddings.hybrid import hybrid_dim, hybrid_embeddings, l2_normalize
from caprank.errors import ConfigError


def _parts(n=40, text_dim=96, graph_dim=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, text_dim)) * 3, rng.normal(size=(n, graph_dim))


def test_concat_cosine_is_the_weighted_sum_of_part_cosines():
    text, graph = _parts()
    cfg = HybridConfig(text_weight=0.3, graph_weight=0.7, method="concat")
    h = hybrid_embeddings(text, graph, cfg, seed=0)
    assert h.shape == (40, hybrid_dim(96, 16, cfg)) == (40, 112)
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1.0, atol=1e-5)
    t, g = l2_normalize(text), l2_normalize(graph)
    np.testing.assert_allclose(h @ h.T, 0.3 * (t @ t.T) + 0.7 * (g @ g.T), atol=1e-5)
    # weights are relative: equal weights mean half and half
    shifted = hybrid_embeddings(text, graph, HybridConfig(text_weight=0.6, graph_weight=1.0), 0)
    other = hybrid_embeddings(text, graph, HybridConfig(text_weight=0.6, graph_weight=0.6), 0)
    assert not np.allclose(shifted, h)
    np.testing.assert_allclose(other @ other.T, 0.5 * (t @ t.T) + 0.5 * (g @ g.T), atol=1e-5)


def test_projection_is_seeded_unit_and_close_to_the_weighted_cosines():
    text, graph = _parts(n=60, text_dim=256, graph_dim=16)
    cfg = HybridConfig(method="projection")
    h = hybrid_embeddings(text, graph, cfg, seed=3)
    assert h.shape == (60, 256)
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(h, hybrid_embeddings(text, graph, cfg, seed=3))
    assert not np.allclose(h, hybrid_embeddings(text, graph, cfg, seed=4))
    t, g = l2_normalize(text), l2_normalize(graph)
    target = 0.3 * (t @ t.T) + 0.7 * (g @ g.T)
    err = np.abs(h @ h.T - target)
    assert err.mean() < 0.05 and err.max() < 0.3  # cross terms are noise of order 1/sqrt(dim)
    wide = hybrid_embeddings(text, graph, HybridConfig(method="projection", projection_dim=64), 3)
    assert wide.shape == (60, 64)


def test_zero_weights_are_a_config_error():
    text, graph = _parts(n=3)
    with pytest.raises(ConfigError, match="text_weight"):
        hybrid_embeddings(text, graph, HybridConfig(text_weight=0.0, graph_weight=0.0), 0)
