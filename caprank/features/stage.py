"""The pipeline's feature stage: compute snapshots, write them, publish them to Feast.

``build_features`` writes the offline Parquet (the Feast file source) atomically and
records in its metadata what it was built from: the content hash of the input tables,
the hash of the feature settings and the code version. ``publish_features`` registers
the definitions and materializes the new snapshots into the online store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from caprank import __version__
from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.data.schemas import CAPABILITY_FEATURES_FILE, capability_features_schema
from caprank.errors import DataError
from caprank.features.compute import (
    compute_capability_features,
    default_snapshot_times,
    epoch_us,
    to_epoch_us,
)
from caprank.files import atomic_write_bytes, atomic_write_parquet, text_hash

if TYPE_CHECKING:  # Feast takes seconds to import; only publishing needs it
    pass

METADATA_PREFIX = "caprank."


@dataclass
class FeatureBuildResult:
    """What ``build_features`` wrote and what it was built from."""

    offline_path: Path
    rows: int
    capabilities: int
    snapshots: int
    input_hash: str
    config_hash: str
    summary: dict = field(default_factory=dict)


@dataclass
class PublishResult:
    """Where the published features live."""

    project: str
    registry: str
    online_store: str
    offline_path: Path
    feature_views: list[str]
    materialized_until: datetime


def table_content_hash(*tables: pa.Table) -> str:
    """SHA-256 of the tables' contents (independent of chunking and schema metadata)."""
    digest = hashlib.sha256()
    for table in tables:
        plain = table.replace_schema_metadata(None).combine_chunks()
        plain = plain.cast(pa.schema([f.remove_metadata() for f in plain.schema]))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, plain.schema) as writer:
            writer.write_table(plain)
        digest.update(sink.getvalue())
    return digest.hexdigest()


def _summary(features: pa.Table, ds: Dataset, cfg: CaprankConfig) -> dict:
    stamps = features.column("event_timestamp")
    last = pc.max(stamps)
    latest = features.filter(pc.equal(stamps, last))
    events = epoch_us(ds.interactions.column("timestamp"))
    numeric = [
        f.name
        for f in features.schema
        if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
    ]
    return {
        "rows": features.num_rows,
        "capabilities": int(pc.count_distinct(features.column("capability_id")).as_py()),
        "snapshots": int(pc.count_distinct(stamps).as_py()),
        "first_snapshot": pc.min(stamps).as_py().isoformat(),
        "last_snapshot": last.as_py().isoformat(),
        "events_total": len(events),
        "events_used": int(np.count_nonzero(events < to_epoch_us(last.as_py()))),
        "feature_version": cfg.features.feature_version,
        "windows_days": list(cfg.features.windows_days),
        "latest_means": {
            name: round(float(pc.mean(latest.column(name)).as_py() or 0.0), 6) for name in numeric
        },
    }


def build_features(
    ds: Dataset, cfg: CaprankConfig, out_dir: Path, as_of: datetime | None = None
) -> FeatureBuildResult:
    """Compute daily snapshots up to ``as_of`` (default: end of the log) and write them.

    Events at or after ``as_of`` are ignored, so a training run can cut its features at
    the training period's end. Writes ``<out_dir>/capability_features.parquet``.
    """
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)  # naive times are UTC throughout caprank
    snapshots = default_snapshot_times(ds, end=as_of)
    features = compute_capability_features(ds, cfg, snapshots)
    input_hash = table_content_hash(ds.capabilities, ds.interactions)
    config_hash = text_hash(json.dumps(cfg.features.model_dump(mode="json"), sort_keys=True))
    summary = _summary(features, ds, cfg)
    meta = {
        "input_hash": input_hash,
        "config_hash": config_hash,
        "code_version": __version__,
        "as_of": (as_of or snapshots[-1]).astimezone(UTC).isoformat(),
        "summary": json.dumps(summary, sort_keys=True),
    }
    features = features.replace_schema_metadata(
        {f"{METADATA_PREFIX}{k}": v for k, v in meta.items()}
    )
    path = atomic_write_parquet(features, Path(out_dir) / CAPABILITY_FEATURES_FILE)
    return FeatureBuildResult(
        offline_path=path,
        rows=features.num_rows,
        capabilities=summary["capabilities"],
        snapshots=summary["snapshots"],
        input_hash=input_hash,
        config_hash=config_hash,
        summary=summary,
    )


def last_snapshot(offline_path: Path) -> datetime:
    """The newest snapshot time in an offline feature table (the natural publish ``end``)."""
    stamps = pq.read_table(offline_path, columns=["event_timestamp"]).column("event_timestamp")
    if len(stamps) == 0:
        raise DataError(str(offline_path), "the feature table has no rows", field="event_timestamp")
    return pc.max(stamps).as_py()


def _check_offline_table(offline_path: Path, cfg: CaprankConfig) -> None:
    if not offline_path.is_file():
        raise DataError(str(offline_path), "offline feature table not found")
    found = pq.read_schema(offline_path)
    for fld in capability_features_schema(cfg.features.windows_days):
        if fld.name not in found.names:
            raise DataError(
                str(offline_path),
                "column missing (built with other features.windows_days?)",
                field=fld.name,
            )
        if not found.field(fld.name).type.equals(fld.type):
            raise DataError(
                str(offline_path),
                f"wrong type: expected {fld.type}, found {found.field(fld.name).type}",
                field=fld.name,
            )


def publish_features(
    cfg: CaprankConfig,
    offline_path: Path,
    end: datetime,
) -> PublishResult:
    """Apply every Feast definition (``repo_objects``) over the tables beside
    ``offline_path`` and materialize, up to ``end`` (inclusive), the views whose table
    is there (the embedding views once the embed stage has copied its tables in)."""
    from caprank.features.store import (
        apply_definitions,
        materialize_incremental,
        online_store_location,
        open_store,
        registry_location,
    )

    offline_path = Path(offline_path)
    _check_offline_table(offline_path, cfg)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    store = open_store(cfg)
    views = apply_definitions(store, cfg, offline_path)
    materialize_incremental(store, end, views)
    return PublishResult(
        project=cfg.features.feast_project,
        registry=registry_location(cfg),
        online_store=online_store_location(cfg),
        offline_path=offline_path.resolve(),
        feature_views=views,
        materialized_until=end,
    )


@dataclass
class FeatureStepResult:
    """The pipeline's feature step: what was built and where Feast serves it from."""

    build: FeatureBuildResult
    publish: PublishResult

    def to_markdown(self) -> str:
        b, p = self.build, self.publish
        return (
            "## Build features\n\n"
            f"{b.rows:,} snapshot rows for {b.capabilities:,} capabilities "
            f"({b.snapshots} snapshots), input hash `{b.input_hash[:16]}`.  \n"
            f"Feast offline source: `{p.offline_path}`  \n"
            f"Feast registry: `{p.registry}`  \n"
            f"Feast online store: `{p.online_store}`, materialized until "
            f"{p.materialized_until.isoformat()}\n"
        )


def build_and_publish(ds: Dataset, cfg: CaprankConfig, out_dir: Path) -> FeatureStepResult:
    """Build into ``out_dir`` (the run's artifact), then publish from the stable offline
    location ``cfg.features_dir()`` that Feast's file source points at."""
    built = build_features(ds, cfg, Path(out_dir))
    offline = Path(cfg.features_dir()) / CAPABILITY_FEATURES_FILE
    atomic_write_bytes(offline, built.offline_path.read_bytes())
    published = publish_features(cfg, offline, last_snapshot(offline))
    return FeatureStepResult(build=built, publish=published)
