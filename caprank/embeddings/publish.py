"""Embeddings as Feast features: arrays of float32 in the offline source and online store.

The embed stage's two tables are copied to the stable offline location Feast's file
sources point at (``cfg.features_dir()``), where the ``capability_embeddings`` view
(joined into the ranker's feature service) and the ``tool_embeddings`` view (keyed by
tool), declared with everything else in ``caprank.features.definitions.repo_objects``,
read them; all views are then materialized together.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from caprank.config import CaprankConfig
from caprank.data.schemas import CAPABILITY_FEATURES_FILE, EMBEDDING_TABLES
from caprank.features.stage import PublishResult, last_snapshot, publish_features
from caprank.files import atomic_write_bytes


def publish_embeddings(
    cfg: CaprankConfig, embed_dir: str | Path, features_dir: str | Path | None = None
) -> PublishResult:
    """Copy the embed stage's tables next to the features, apply and materialize all.

    ``features_dir``: the feature step's artifact, whose table is copied in too: in a pod
    of its own this step has only what KFP passed it, not the feature step's disk."""
    embed_dir = Path(embed_dir)
    stable = Path(cfg.features_dir())
    if features_dir is not None:
        table = Path(features_dir) / CAPABILITY_FEATURES_FILE
        atomic_write_bytes(stable / CAPABILITY_FEATURES_FILE, table.read_bytes())
    newest = []
    for spec in EMBEDDING_TABLES.values():
        target = stable / spec.file
        atomic_write_bytes(target, (embed_dir / spec.file).read_bytes())
        stamps = pq.read_table(target, columns=["event_timestamp"])["event_timestamp"]
        newest.append(pc.max(stamps).as_py())
    features = stable / CAPABILITY_FEATURES_FILE
    end = max([last_snapshot(features), *newest])
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    return publish_features(cfg, features, end)
