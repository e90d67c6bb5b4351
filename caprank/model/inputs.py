"""A catalog turned into model inputs: tool and capability vectors, features, edges.

Training and serving both go through ``catalog_graph``: the same catalog gives the same
tensors, so a bundle scores a capability identically wherever it is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from caprank.errors import DataError
from caprank.model.shgat import Graph, Intents


@dataclass
class CatalogInputs:
    """Row ``i`` of every capability array is ``capability_ids[i]``; tools likewise."""

    capability_ids: list[str]
    tool_ids: list[str]
    capability_tools: list[list[int]]  # rows into tool_ids
    tool_vectors: np.ndarray  # (T, tool_dim) hybrid embeddings
    capability_text: np.ndarray  # (C, text_dim) unit text embeddings
    capability_features: np.ndarray  # (C, F) standardized

    def __post_init__(self) -> None:
        c, t = len(self.capability_ids), len(self.tool_ids)
        if self.capability_text.shape[0] != c or self.capability_features.shape[0] != c:
            raise ValueError("capability arrays disagree with capability_ids")
        if self.tool_vectors.shape[0] != t:
            raise ValueError("tool_vectors disagree with tool_ids")
        for i, tools in enumerate(self.capability_tools):
            if not tools:
                raise DataError(
                    "capabilities", "a capability needs at least one tool", row=i, field="tool_ids"
                )


def catalog_graph(
    inputs: CatalogInputs,
    tool_rows: Mapping[str, int],
    id_rows: Mapping[str, int],
    evidence: Mapping[str, float],
) -> Graph:
    """Tensors for ``inputs``; tools/capabilities absent from the learned tables get -1,
    capabilities absent from ``evidence`` (training positives) get 0: prior only."""
    edge_tool = [t for tools in inputs.capability_tools for t in tools]
    edge_cap = [i for i, tools in enumerate(inputs.capability_tools) for _ in tools]
    return Graph(
        tool_x=torch.from_numpy(np.ascontiguousarray(inputs.tool_vectors, dtype=np.float32)),
        tool_id=torch.tensor([tool_rows.get(t, -1) for t in inputs.tool_ids], dtype=torch.long),
        cap_text=torch.from_numpy(np.ascontiguousarray(inputs.capability_text, dtype=np.float32)),
        cap_feat=torch.from_numpy(
            np.ascontiguousarray(inputs.capability_features, dtype=np.float32)
        ),
        cap_id=torch.tensor([id_rows.get(c, -1) for c in inputs.capability_ids], dtype=torch.long),
        edge_tool=torch.tensor(edge_tool, dtype=torch.long),
        edge_cap=torch.tensor(edge_cap, dtype=torch.long),
        cap_evidence=torch.tensor(
            [float(evidence.get(c, 0.0)) for c in inputs.capability_ids], dtype=torch.float32
        ),
    )


def intent_batch(dense: np.ndarray, bags: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Intents:
    idx, off, w = bags
    return Intents(
        torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)),
        torch.from_numpy(idx),
        torch.from_numpy(off),
        torch.from_numpy(w),
    )


def select_bags(
    bags: tuple[np.ndarray, np.ndarray, np.ndarray], rows: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bags of ``rows`` from precomputed bags of a whole intent table."""
    idx, off, w = bags
    ends = np.append(off[1:], len(idx))
    rows = np.asarray(rows, dtype=np.int64)
    starts, stops = off[rows], ends[rows]
    lengths = stops - starts
    new_off = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    take = (
        np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)])
        if len(rows)
        else np.zeros(0, dtype=np.int64)
    )
    take = take.astype(np.int64)
    return idx[take], new_off, w[take]
