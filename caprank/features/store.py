"""A Feast ``FeatureStore`` built from the caprank config (no hand-edited YAML).

Embedded default: local provider, file registry and SQLite online store under
``<home>/feast``. Production (``services.feast_online_store=redis``): Redis online store
at ``services.redis_url`` and, when ``services.feast_registry`` is set, a SQL registry
(PostgreSQL SQLAlchemy URL). The offline store is always the Parquet files the feature
stage writes.

Reads for serving go through ``online_features``: one batched ``get_online_features``
call for all capabilities (Feast costs ~0.2 ms per entity row from Python, so the server
reads everything once into memory and refreshes it, rather than per request).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView, RepoConfig
from feast.types import from_feast_to_pyarrow_type

from caprank.config import CaprankConfig
from caprank.errors import ConfigError
from caprank.features.definitions import (
    CAPABILITY_FEATURES_VIEW,
    CAPABILITY_KEY,
    RANKER_SERVICE,
    TIMESTAMP_FIELD,
    repo_objects,
)

ROW_ID = "__caprank_row"
TIMESTAMP_POSTFIX = "__ts"  # what Feast appends to a feature name for its event time


def redis_connection_string(url: str) -> str:
    """Feast's ``host:port,db=N,...`` form of a ``redis://[user:pass@]host:port/db`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError("services.redis_url", f"not a redis:// URL: {mask_url(url)}")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigError("services.redis_url", f"database must be a number, got '{db}'")
    items = [f"{parts.hostname}:{parts.port or 6379}", f"db={db}"]
    if parts.username:
        items.append(f"username={unquote(parts.username)}")
    if parts.password:
        items.append(f"password={unquote(parts.password)}")
    if parts.scheme == "rediss":
        items.append("ssl=true")
    return ",".join(items)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to log and report."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _sql_url(url: str) -> str:
    """Feast standardizes on psycopg 3; say so explicitly instead of relying on a rewrite."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def repo_settings(cfg: CaprankConfig) -> dict[str, Any]:
    """The ``feature_store.yaml`` content for this config, as a mapping."""
    svc = cfg.services
    feast_dir = cfg.feast_dir().resolve()
    if svc.feast_registry:
        registry: dict[str, Any] = {
            "registry_type": "sql",
            "path": _sql_url(svc.feast_registry),
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
        }
    else:
        registry = {"registry_type": "file", "path": str(feast_dir / "registry.db")}
    if svc.feast_online_store == "redis":
        online: dict[str, Any] = {
            "type": "redis",
            "connection_string": redis_connection_string(svc.redis_url),
        }
    else:
        online = {"type": "sqlite", "path": str(feast_dir / "online_store.db")}
    return {
        "project": cfg.features.feast_project,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }


def repo_config(cfg: CaprankConfig) -> RepoConfig:
    feast_dir = cfg.feast_dir().resolve()
    return RepoConfig(repo_path=feast_dir, **repo_settings(cfg))


def open_store(cfg: CaprankConfig) -> FeatureStore:
    """A FeatureStore for this config; creates ``<home>/feast`` for the embedded files."""
    cfg.feast_dir().mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(cfg.feast_dir().resolve()), config=repo_config(cfg))


def registry_location(cfg: CaprankConfig) -> str:
    settings = repo_settings(cfg)["registry"]
    return mask_url(settings["path"]) if settings["registry_type"] == "sql" else settings["path"]


def online_store_location(cfg: CaprankConfig) -> str:
    online = repo_settings(cfg)["online_store"]
    if online["type"] == "redis":
        return mask_url(cfg.services.redis_url)
    return online["path"]


def apply_definitions(
    store: FeatureStore, cfg: CaprankConfig, offline_path: str | Path
) -> list[str]:
    """Register every entity, source, view and the service (``repo_objects``, what
    ``feature_repo/`` declares) over the tables beside ``offline_path``; returns the
    names of the views whose offline table exists there (the ones to materialize)."""
    directory = Path(offline_path).resolve().parent
    objects = repo_objects(directory, cfg.features)
    store.apply(objects)
    return [o.name for o in objects if isinstance(o, FeatureView) and _has_table(o)]


def materialize_incremental(
    store: FeatureStore, end: datetime, views: Sequence[str] | None = None
) -> None:
    """Load snapshots with event_timestamp in (last materialized end, ``end``] online.

    The first run starts ``features.ttl_days`` before now. ``end`` is inclusive.
    ``views`` default to every registered view whose offline table exists.
    """
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    if views is None:
        views = [v.name for v in store.list_feature_views() if _has_table(v)]
    if not views:
        return
    with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress; keep stdout clean
        store.materialize_incremental(end_date=end, feature_views=list(views))


def _has_table(view: FeatureView) -> bool:
    return Path(view.batch_source.path).is_file()


def _present_refs(store: FeatureStore, service: str) -> list[str]:
    """``view:feature`` references of ``service`` whose view's offline table exists.

    Every view is always registered (``repo_objects``); the embedding tables appear only
    once the embed stage has run, and Feast's file store fails on a missing file.
    """
    refs = []
    for projection in store.get_feature_service(service).feature_view_projections:
        if _has_table(store.get_feature_view(projection.name)):
            refs += [f"{projection.name_to_use()}:{f.name}" for f in projection.features]
    return refs


def historical_features(
    store: FeatureStore,
    entity_df: pd.DataFrame,
    features: str | Sequence[str] = RANKER_SERVICE,
) -> pd.DataFrame:
    """Point-in-time join for training: each row gets the newest snapshot at or before it.

    ``entity_df`` needs ``capability_id`` and ``event_timestamp`` (other columns pass
    through). Rows come back in the input order, one per input row; a row with no
    snapshot at or before its time gets nulls (Feast's file store would drop it).
    ``features`` is a feature service name (its views whose offline table exists) or a
    list of ``view:feature`` references.
    """
    missing = {CAPABILITY_KEY, TIMESTAMP_FIELD} - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df lacks columns {sorted(missing)}")
    if len(entity_df) == 0:
        raise ValueError("entity_df is empty")
    frame = entity_df.copy()
    frame[TIMESTAMP_FIELD] = pd.to_datetime(frame[TIMESTAMP_FIELD], utc=True)
    frame[ROW_ID] = range(len(frame))
    refs: Any = _present_refs(store, features) if isinstance(features, str) else features
    joined = store.get_historical_features(entity_df=frame, features=refs).to_df()
    added = [c for c in joined.columns if c not in frame.columns]
    result = frame.merge(joined[[ROW_ID, *added]], on=ROW_ID, how="left")
    return result.sort_values(ROW_ID).drop(columns=ROW_ID).reset_index(drop=True)


def offline_capability_ids(store: FeatureStore) -> list[str]:
    """Distinct capability ids in the capability view's offline Parquet, sorted."""
    view = store.get_feature_view(CAPABILITY_FEATURES_VIEW)
    path = view.batch_source.path
    ids = pq.read_table(path, columns=[CAPABILITY_KEY]).column(CAPABILITY_KEY)
    return sorted(set(ids.to_pylist()))


def online_features(
    store: FeatureStore,
    capability_ids: Sequence[str] | None = None,
    service: str = RANKER_SERVICE,
) -> pa.Table:
    """Online features of many capabilities in one batched read.

    ``capability_ids`` default to every capability in the offline table. The result has
    one row per id, in order, typed from the feature views (nulls where the online store
    has nothing), plus ``event_timestamp``: the snapshot time (whole seconds) of the
    capability view's values, for staleness checks.
    """
    ids = list(capability_ids) if capability_ids is not None else offline_capability_ids(store)
    feature_service = store.get_feature_service(service)
    types = {CAPABILITY_KEY: pa.string()}
    for projection in feature_service.feature_view_projections:
        for feature in projection.features:
            types[feature.name] = from_feast_to_pyarrow_type(feature.dtype)
    if ids:
        response = store.get_online_features(
            features=feature_service, entity_rows={CAPABILITY_KEY: ids}
        )
        data = response.to_dict(include_event_timestamps=True)
    else:
        data = {name: [] for name in types}
    # every capability view row has feature_version; its time is the snapshot's
    seconds = data.get(f"feature_version{TIMESTAMP_POSTFIX}", [0] * len(ids))
    columns = {
        name: pa.array(values, type=types.get(name))
        for name, values in data.items()
        if not name.endswith(TIMESTAMP_POSTFIX)
    }
    when = [datetime.fromtimestamp(s, UTC) if s else None for s in seconds]
    columns[TIMESTAMP_FIELD] = pa.array(when, pa.timestamp("us", "UTC"))
    order = [CAPABILITY_KEY, TIMESTAMP_FIELD, *(n for n in types if n != CAPABILITY_KEY)]
    return pa.table({name: columns[name] for name in order if name in columns})
