"""Combine a text vector and a graph vector of different sizes into one unit vector.

Seed 002 §1.1 weighs text 0.3 and graph 0.7 and normalizes. Two methods
(``cfg.embedding.hybrid.method``):

* ``concat`` (default): ``[sqrt(w_t) t, sqrt(w_g) g]`` of the L2-normalized parts, with
  ``w_t + w_g`` scaled to 1. The result has unit norm and, exactly,
  ``cos(h1, h2) = w_t cos(t1, t2) + w_g cos(g1, g2)``: the weights mean what they say.
* ``projection``: each part is mapped to a common dimension (default: the text's) by a
  fixed, seeded random matrix with orthonormal columns, then ``sqrt(w_t) P_t t +
  sqrt(w_g) P_g g`` is normalized. It gives one fixed width (1024 for bge-m3, as the
  seed's schema has), but the two parts share the space, so cosines carry a cross term of
  order ``1/sqrt(dim)`` that is noise.
"""

from __future__ import annotations

import numpy as np

from caprank.config import HybridConfig
from caprank.errors import ConfigError


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero and fail validation later)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def hybrid_weights(cfg: HybridConfig) -> tuple[float, float]:
    """(text, graph) weights scaled to sum to 1."""
    total = cfg.text_weight + cfg.graph_weight
    if total <= 0:
        raise ConfigError("embedding.hybrid.text_weight", "text_weight + graph_weight must be > 0")
    return cfg.text_weight / total, cfg.graph_weight / total


def hybrid_dim(text_dim: int, graph_dim: int, cfg: HybridConfig) -> int:
    if cfg.method == "concat":
        return text_dim + graph_dim
    return cfg.projection_dim or text_dim


def random_isometry(in_dim: int, out_dim: int, rng: np.random.Generator) -> np.ndarray:
    """An ``[out_dim, in_dim]`` matrix with orthonormal columns (rows when out < in,
    scaled so that unit vectors keep unit length on average)."""
    gauss = rng.standard_normal((max(in_dim, out_dim), min(in_dim, out_dim)))
    q, r = np.linalg.qr(gauss)
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # fix the signs: one well-defined basis
    if out_dim >= in_dim:
        return q.astype(np.float32)
    return (q.T * np.sqrt(in_dim / out_dim)).astype(np.float32)


def hybrid_embeddings(
    text: np.ndarray, graph: np.ndarray, cfg: HybridConfig, seed: int
) -> np.ndarray:
    """One unit hybrid vector per row of ``text`` and ``graph`` (same rows, any widths)."""
    text, graph = l2_normalize(text), l2_normalize(graph)
    if text.shape[0] != graph.shape[0]:
        raise ValueError(f"{text.shape[0]} text rows but {graph.shape[0]} graph rows")
    w_text, w_graph = hybrid_weights(cfg)
    if cfg.method == "concat":
        combined = np.hstack([np.sqrt(w_text) * text, np.sqrt(w_graph) * graph])
    else:
        dim = hybrid_dim(text.shape[1], graph.shape[1], cfg)
        rng = np.random.default_rng(seed)
        p_text = random_isometry(text.shape[1], dim, rng)
        p_graph = random_isometry(graph.shape[1], dim, rng)
        combined = np.sqrt(w_text) * text @ p_text.T + np.sqrt(w_graph) * graph @ p_graph.T
    return l2_normalize(combined)
