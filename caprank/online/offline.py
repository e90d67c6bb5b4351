"""Ranking outside the server exactly as the server ranks: the MLflow pyfunc's engine.

The same model loader (``load_model_dir``), catalog (the model's own), text runtime
(``serving.intents.backend``: ONNX by default, not training's torch), rules
(``apply_rules`` with ``serving.boost`` and ``serving.penalty``) and one encoder call per
intent, as the server makes. Features: the rows the bundle was trained with
(``features.parquet``, each capability's latest snapshot) where the server reads the
same rows from Feast's online store; a bundle without them ranks with neutral features,
as the server does without a feature store. Intents and a model directory in, the
server's ranking out: ``tests/test_pyfunc_parity.py`` holds the two side by side.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from caprank.config import CaprankConfig
from caprank.online.catalog import load_catalog
from caprank.online.features import TIMESTAMP, FeatureSnapshot
from caprank.online.intents import default_encode, serving_backend
from caprank.online.models import find_model_root, load_model_dir
from caprank.online.rules import apply_rules, rule_adjustments


def reference_snapshot(model_root: Path, ids: tuple[str, ...]) -> FeatureSnapshot | None:
    """The bundle's training feature rows aligned to ``ids`` as a snapshot that never
    goes stale (they are the model's own); None when the bundle has none."""
    from caprank.model.features import REFERENCE_FILE

    path = model_root / REFERENCE_FILE
    if not path.is_file():
        return None
    table = pq.read_table(path)
    pos = {c: i for i, c in enumerate(table["capability_id"].to_pylist())}
    rows = [pos.get(c) for c in ids]
    aligned = table.take(pa.array(rows, pa.int64()))  # a null row: no features (neutral)
    now = datetime.now(UTC)
    stamps = pa.array([None if r is None else now for r in rows], pa.timestamp("us", "UTC"))
    return FeatureSnapshot(ids, aligned.append_column(TIMESTAMP, stamps), now, math.inf)


class OfflineRanker:
    """The server's ranking of a model directory, without a server."""

    def __init__(self, model_dir: str | Path, cfg: CaprankConfig):
        root = find_model_root(model_dir)
        self.cfg = cfg
        self.catalog = load_catalog(cfg, root)
        features = reference_snapshot(root, self.catalog.ids)
        self.model = load_model_dir(root, cfg, self.catalog, features)
        self.encode = default_encode(cfg.embedding.device, serving_backend(cfg))
        self.adjust = rule_adjustments(self.catalog.ids, cfg.serving.boost, cfg.serving.penalty)
        self.all_rows = np.arange(len(self.catalog), dtype=np.int64)

    def rank(self, text: str, top_k: int) -> list[tuple[str, float]]:
        """(capability id, score) of ``text``'s top ``top_k``, best first, as served."""
        ranker = self.model.ranker
        vec = np.ascontiguousarray(self.encode([text], ranker.text_model)[0], dtype=np.float32)
        scores = ranker.score(ranker.query(vec, text), None)
        rows, adjusted = apply_rules(
            self.all_rows,
            scores,
            tool_sets=self.catalog.tool_sets,
            context_tools=None,
            adjustments=self.adjust,
            min_score=None,
            top_k=top_k,
        )
        ids = self.catalog.ids
        return [(ids[r], float(s)) for r, s in zip(rows.tolist(), adjusted.tolist(), strict=True)]
