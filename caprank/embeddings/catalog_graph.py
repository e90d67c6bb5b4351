"""The graph Node2Vec walks: tools and capabilities as nodes.

Edges:

* **membership** (weight 1): a capability and each tool it composes (the catalog's
  bipartite graph);
* **co-selection** (weight ``coselection_weight * log(1 + n)``): two capabilities selected
  one after the other in the same session ``n`` times, counted from training-period
  interactions only: events strictly before ``train_until`` (when given), with an outcome
  other than failure, and never an event whose intent carries a valid or test label, so
  no held-out answer leaks into the vectors that the ranker will be evaluated with.

Nodes are numbered tools first (in table order), then capabilities, so ids shared by a
tool and a capability never clash.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from caprank.config import Node2VecConfig
from caprank.data.dataset import Dataset
from caprank.embeddings.node2vec import Graph

HELD_OUT_SPLITS = ("valid", "test")


@dataclass
class CatalogGraph:
    """The graph plus what each node is."""

    tool_ids: list[str]
    capability_ids: list[str]
    graph: Graph
    stats: dict = field(default_factory=dict)

    @property
    def num_tools(self) -> int:
        return len(self.tool_ids)

    def tool_rows(self) -> slice:
        return slice(0, self.num_tools)

    def capability_rows(self) -> slice:
        return slice(self.num_tools, self.num_tools + len(self.capability_ids))


def training_interactions(ds: Dataset, train_until: datetime | None = None) -> pa.Table:
    """Interactions that may shape the graph: before ``train_until``, no held-out intent."""
    events = ds.interactions
    if events.num_rows == 0:
        return events
    keep = pc.not_equal(events["outcome"], "failure")
    if train_until is not None:
        cutoff = pa.scalar(train_until, type=events.schema.field("timestamp").type)
        keep = pc.and_(keep, pc.less(events["timestamp"], cutoff))
    labels = ds.labels
    if labels.num_rows:
        held = pc.is_in(labels["split"], pa.array(HELD_OUT_SPLITS))
        held_intents = pc.unique(labels.filter(held)["intent_id"])
        if len(held_intents):
            leaked = pc.fill_null(pc.is_in(events["intent_id"], held_intents), False)
            keep = pc.and_(keep, pc.invert(leaked))
    return events.filter(keep)


def coselection_counts(events: pa.Table) -> Counter:
    """Unordered pairs of distinct capabilities selected back to back within a session."""
    counts: Counter = Counter()
    if events.num_rows == 0:
        return counts
    ordered = events.select(["session_id", "timestamp", "event_id", "selected_capability"])
    ordered = ordered.sort_by(
        [("session_id", "ascending"), ("timestamp", "ascending"), ("event_id", "ascending")]
    )
    sessions = ordered["session_id"].to_pylist()
    caps = ordered["selected_capability"].to_pylist()
    for i in range(1, len(caps)):
        if sessions[i] == sessions[i - 1] and caps[i] != caps[i - 1]:
            a, b = sorted((caps[i - 1], caps[i]))
            counts[(a, b)] += 1
    return counts


def build_catalog_graph(
    ds: Dataset, cfg: Node2VecConfig, train_until: datetime | None = None
) -> CatalogGraph:
    """Membership edges from the catalog plus co-selection edges from training logs."""
    tool_ids = ds.tools["tool_id"].to_pylist()
    cap_ids = ds.capabilities["capability_id"].to_pylist()
    tool_row = {t: i for i, t in enumerate(tool_ids)}
    cap_row = {c: len(tool_ids) + i for i, c in enumerate(cap_ids)}
    member = {
        (cap_row[c], tool_row[t])
        for c, tools in zip(cap_ids, ds.capabilities["tool_ids"].to_pylist(), strict=True)
        for t in tools or []
        if t in tool_row
    }
    src = [a for a, _ in sorted(member)]
    dst = [b for _, b in sorted(member)]
    weight = [1.0] * len(src)

    events = training_interactions(ds, train_until)
    pairs = coselection_counts(events)
    used = unknown = 0
    if cfg.coselection_weight > 0:
        for (a, b), n in sorted(pairs.items()):
            if a not in cap_row or b not in cap_row:
                unknown += 1
                continue
            src.append(cap_row[a])
            dst.append(cap_row[b])
            weight.append(cfg.coselection_weight * math.log1p(n))
            used += 1
    graph = Graph.from_edges(
        len(tool_ids) + len(cap_ids),
        np.asarray(src, dtype=np.int64),
        np.asarray(dst, dtype=np.int64),
        np.asarray(weight, dtype=np.float64),
    )
    stats = {
        "nodes": graph.num_nodes,
        "edges": graph.num_edges,
        "membership_edges": len(member),
        "coselection_edges": used,
        "coselection_pairs_unknown_capability": unknown,
        "interactions_used": events.num_rows,
        "interactions_total": ds.interactions.num_rows,
        "isolated_nodes": int((graph.degree() == 0).sum()),
        "train_until": train_until.isoformat() if train_until else None,
    }
    return CatalogGraph(tool_ids, cap_ids, graph, stats)
