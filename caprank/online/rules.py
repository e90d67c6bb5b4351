"""Business rules applied to model scores before the top-k is cut.

In order:

1. **context tools** (when the request gives ``context_tools``): keep only capabilities
   all of whose tools are in that list; a capability needing a tool the caller does not
   have cannot run. An empty list therefore keeps nothing; omit the field to skip the rule.
2. **boost / penalty** (``serving.boost``, ``serving.penalty``): a fixed amount added to
   or subtracted from a capability's model score.
3. **min_score**: drop what scores below it after step 2.
4. sort by adjusted score (ties by catalog order) and keep ``top_k``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def rule_adjustments(
    ids: Sequence[str], boost: Mapping[str, float], penalty: Mapping[str, float]
) -> np.ndarray | None:
    """Per-row score offsets for a catalog, or None when no rule touches it."""
    if not boost and not penalty:
        return None
    out = np.zeros(len(ids), dtype=np.float32)
    for i, c in enumerate(ids):
        out[i] = boost.get(c, 0.0) - penalty.get(c, 0.0)
    return out if out.any() else None


def apply_rules(
    candidate_idx: np.ndarray,
    scores: np.ndarray,
    *,
    tool_sets: Sequence[frozenset[str]],
    context_tools: Sequence[str] | None,
    adjustments: np.ndarray | None,
    min_score: float | None,
    top_k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, adjusted scores) of the top ``top_k`` candidates that pass the rules."""
    idx = np.asarray(candidate_idx, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float32)
    if context_tools is not None:
        have = frozenset(context_tools)
        keep = np.fromiter((tool_sets[i] <= have for i in idx), dtype=bool, count=len(idx))
        idx, s = idx[keep], s[keep]
    if adjustments is not None:
        s = s + adjustments[idx]
    if min_score is not None:
        keep = s >= min_score
        idx, s = idx[keep], s[keep]
    k = min(top_k, len(idx))
    if k == 0:
        return idx[:0], s[:0]
    if k < len(idx):
        part = np.argpartition(-s, k - 1)[:k]
        idx, s = idx[part], s[part]
    order = np.lexsort((idx, -s))
    return idx[order], s[order]
