"""The Feast objects of caprank, built from a given offline directory.

``repo_objects`` is the one declaration of every entity, source, view and service the
pipeline uses: ``feature_repo/definitions.py`` (what ``feast -c feature_repo apply``
reads) declares exactly these, and the library applies exactly these, so neither the
Feast CLI nor a pipeline step deletes or rewrites what the other registered. Feature
views are derived from the pyarrow schemas in ``caprank.data.schemas`` (the one source
of truth for column names and types), so a view can never disagree with the Parquet
table it reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import (
    Array,
    Bool,
    Bytes,
    FeastType,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    UnixTimestamp,
)

from caprank.config import FeaturesConfig
from caprank.data.schemas import (
    CAPABILITY_EMBEDDINGS,
    CAPABILITY_FEATURES_FILE,
    EMBEDDING_TABLES,
    TOOL_EMBEDDINGS,
    capability_features_schema,
)

CAPABILITY_ENTITY = "capability"
CAPABILITY_KEY = "capability_id"
TOOL_ENTITY = "tool"
TOOL_KEY = "tool_id"
CAPABILITY_FEATURES_VIEW = "capability_features"
CAPABILITY_EMBEDDINGS_VIEW = "capability_embeddings"
TOOL_EMBEDDINGS_VIEW = "tool_embeddings"
RANKER_SERVICE = "ranker_features"
TIMESTAMP_FIELD = "event_timestamp"
CREATED_FIELD = "computed_at"

_SCALARS: dict[pa.DataType, FeastType] = {
    pa.string(): String,
    pa.large_string(): String,
    pa.bool_(): Bool,
    pa.int8(): Int32,
    pa.int16(): Int32,
    pa.int32(): Int32,
    pa.int64(): Int64,
    pa.float32(): Float32,
    pa.float64(): Float64,
    pa.binary(): Bytes,
}


def feast_dtype(typ: pa.DataType) -> FeastType:
    """The Feast type of a pyarrow column type (scalars, timestamps, lists of scalars)."""
    if pa.types.is_timestamp(typ):
        return UnixTimestamp
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        return Array(feast_dtype(typ.value_type))
    if typ in _SCALARS:
        return _SCALARS[typ]
    raise TypeError(f"no Feast type for pyarrow type {typ}")


def feast_fields(schema: pa.Schema, exclude: Iterable[str] = ()) -> list[Field]:
    """Feast fields for the columns of ``schema`` (descriptions from the field docs)."""
    skip = set(exclude)
    return [
        Field(
            name=f.name,
            dtype=feast_dtype(f.type),
            description=(f.metadata or {}).get(b"doc", b"").decode(),
        )
        for f in schema
        if f.name not in skip
    ]


def capability_entity() -> Entity:
    return Entity(
        name=CAPABILITY_ENTITY,
        join_keys=[CAPABILITY_KEY],
        value_type=ValueType.STRING,
        description="a capability: an ordered composition of tools",
    )


def tool_entity() -> Entity:
    return Entity(
        name=TOOL_ENTITY,
        join_keys=[TOOL_KEY],
        value_type=ValueType.STRING,
        description="a tool: one API a capability calls",
    )


def parquet_source(name: str, path: str | Path) -> FileSource:
    """A Parquet offline source with caprank's timestamp conventions."""
    return FileSource(
        name=name,
        path=str(path),
        timestamp_field=TIMESTAMP_FIELD,
        created_timestamp_column=CREATED_FIELD,
    )


def parquet_feature_view(
    name: str,
    path: str | Path,
    schema: pa.Schema,
    ttl_days: int,
    entity: Entity | None = None,
    description: str = "",
) -> FeatureView:
    """A feature view over a Parquet table with the given schema, keyed by capability.

    Every column except the key and the timestamps becomes a feature.
    """
    entity = entity or capability_entity()
    keys = {entity.join_key}
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=timedelta(days=ttl_days),
        schema=feast_fields(schema, exclude=keys | {TIMESTAMP_FIELD, CREATED_FIELD}),
        source=parquet_source(f"{name}_source", path),
        online=True,
        description=description,
        tags={"owner": "caprank"},
    )


def capability_feature_view(offline_path: str | Path, cfg: FeaturesConfig) -> FeatureView:
    return parquet_feature_view(
        CAPABILITY_FEATURES_VIEW,
        offline_path,
        capability_features_schema(cfg.windows_days),
        cfg.ttl_days,
        description="daily per-capability snapshots (usage, success, latency, graph)",
    )


def ranker_feature_service(views: Sequence[FeatureView]) -> FeatureService:
    return FeatureService(
        name=RANKER_SERVICE,
        features=list(views),
        description="everything the ranker reads per capability",
    )


def embedding_views(features_dir: str | Path, cfg: FeaturesConfig) -> list[FeatureView]:
    """The capability and tool embedding views over the embed stage's Parquet tables in
    ``features_dir`` (the tool view is keyed by the ``tool`` entity)."""
    directory = Path(features_dir)
    return [
        parquet_feature_view(
            CAPABILITY_EMBEDDINGS_VIEW,
            directory / EMBEDDING_TABLES[CAPABILITY_EMBEDDINGS_VIEW].file,
            CAPABILITY_EMBEDDINGS,
            cfg.ttl_days,
            description="text, Node2Vec and hybrid vectors of each capability",
        ),
        parquet_feature_view(
            TOOL_EMBEDDINGS_VIEW,
            directory / EMBEDDING_TABLES[TOOL_EMBEDDINGS_VIEW].file,
            TOOL_EMBEDDINGS,
            cfg.ttl_days,
            entity=tool_entity(),
            description="text, Node2Vec and hybrid vectors of each tool",
        ),
    ]


def feature_views(features_dir: str | Path, cfg: FeaturesConfig) -> list[FeatureView]:
    """Every view, reading ``<features_dir>/<table>.parquet`` (features, then embeddings)."""
    directory = Path(features_dir)
    capability = capability_feature_view(directory / CAPABILITY_FEATURES_FILE, cfg)
    return [capability, *embedding_views(directory, cfg)]


def repo_objects(features_dir: str | Path, cfg: FeaturesConfig) -> list:
    """Everything the pipeline registers: both entities, every source and view, and the
    ``ranker_features`` service over the capability-keyed views."""
    views = feature_views(features_dir, cfg)
    # The ranker's service joins on capability_id only; tool-keyed views stay outside it.
    by_capability = [v for v in views if CAPABILITY_ENTITY in v.entities]
    return [
        capability_entity(),
        tool_entity(),
        *(v.batch_source for v in views),
        *views,
        ranker_feature_service(by_capability),
    ]
