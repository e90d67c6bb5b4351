"""feature_repo/: its YAML files say what the library builds in code, and the feast CLI
can drive it end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from caprank.config import CaprankConfig
from caprank.features.stage import build_features, last_snapshot
from tests.feature_data import tiny_dataset

pytest.importorskip("feast")

from feast import FeatureStore
from feast.repo_config import load_repo_config

from caprank.features.store import (
    materialize_incremental,
    online_features,
    redis_connection_string,
    repo_config,
)

ROOT = Path(__file__).resolve().parents[1]
REPO = ROOT / "feature_repo"


def _resolved(repo_path: Path, path: str) -> Path:
    return (repo_path / path).resolve()


def test_embedded_yaml_matches_the_library_default():
    from_yaml = load_repo_config(REPO, REPO / "feature_store.yaml")
    cfg = CaprankConfig()
    cfg.paths.home = ROOT / ".caprank"  # the default home, seen from the project root
    in_code = repo_config(cfg)
    assert from_yaml.project == in_code.project == cfg.features.feast_project
    assert from_yaml.provider == in_code.provider == "local"
    assert from_yaml.registry.registry_type == in_code.registry.registry_type == "file"
    assert _resolved(REPO, from_yaml.registry.path) == Path(in_code.registry.path)
    assert from_yaml.online_store.type == in_code.online_store.type == "sqlite"
    assert _resolved(REPO, from_yaml.online_store.path) == Path(in_code.online_store.path)
    assert from_yaml.offline_store.type == in_code.offline_store.type


def test_production_yaml_matches_the_library_with_redis_and_postgres(monkeypatch):
    cfg = CaprankConfig()
    cfg.services.feast_online_store = "redis"
    cfg.services.redis_url = "redis://:s3cret@redis.caprank:6380/2"
    cfg.services.feast_registry = "postgresql+psycopg://feast:pw@postgres:5432/feast"
    monkeypatch.setenv("CAPRANK_SERVICES__FEAST_REGISTRY", cfg.services.feast_registry)
    monkeypatch.setenv("FEAST_REDIS_CONNECTION", "redis.caprank:6380,db=2,password=s3cret")
    from_yaml = load_repo_config(REPO, REPO / "feature_store.production.yaml")
    in_code = repo_config(cfg)
    assert from_yaml.registry.registry_type == in_code.registry.registry_type == "sql"
    assert from_yaml.registry.path == in_code.registry.path == cfg.services.feast_registry
    assert from_yaml.registry.cache_ttl_seconds == in_code.registry.cache_ttl_seconds
    assert from_yaml.online_store.type == in_code.online_store.type == "redis"
    assert from_yaml.online_store.connection_string == in_code.online_store.connection_string
    assert from_yaml.project == in_code.project


def test_redis_urls_become_feast_connection_strings():
    assert redis_connection_string("redis://127.0.0.1:6379/5") == "127.0.0.1:6379,db=5"
    assert (
        redis_connection_string("rediss://u:p%40ss@h/0")
        == "h:6379,db=0,username=u,password=p@ss,ssl=true"
    )


@pytest.mark.slow
def test_feast_cli_applies_the_repo(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(REPO, project / "feature_repo")
    features = tmp_path / "features"
    built = build_features(tiny_dataset(), CaprankConfig(), features)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPRANK_")}
    env |= {"PYTHONPATH": str(ROOT), "CAPRANK_PATHS__FEATURES": str(features)}
    feast = [sys.executable, "-m", "feast.cli.cli", "-c", str(project / "feature_repo"), "apply"]
    done = subprocess.run(feast, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Created feature view capability_features" in done.stdout
    assert (project / ".caprank" / "feast" / "registry.db").is_file()

    repo = project / "feature_repo"
    store = FeatureStore(
        repo_path=str(repo), config=load_repo_config(repo, repo / "feature_store.yaml")
    )
    materialize_incremental(store, last_snapshot(built.offline_path))
    online = {r["capability_id"]: r for r in online_features(store).to_pylist()}
    table = pq.read_table(built.offline_path)
    latest = table.filter(pc.equal(table["event_timestamp"], pc.max(table["event_timestamp"])))
    assert sorted(online) == sorted(latest["capability_id"].to_pylist())
    for row in latest.to_pylist():
        assert online[row["capability_id"]]["usage_count_total"] == row["usage_count_total"]


def _summary(objects) -> dict:
    """Names and shapes of Feast objects: what a registry comparison needs."""
    from feast import Entity, FeatureService, FeatureView

    out: dict = {"entities": {}, "views": {}, "services": {}}
    for obj in objects:
        if isinstance(obj, Entity):
            out["entities"][obj.name] = obj.join_key
        elif isinstance(obj, FeatureView):
            out["views"][obj.name] = (
                sorted(obj.entities),
                [(f.name, str(f.dtype)) for f in obj.features],
                Path(obj.batch_source.path).name,
                obj.ttl,
            )
        elif isinstance(obj, FeatureService):
            out["services"][obj.name] = sorted(p.name for p in obj.feature_view_projections)
    return out


def test_the_repo_declares_exactly_what_the_library_applies():
    """feature_repo/ (as the Feast CLI reads it) and the library's repo_objects are the
    same entities, views (entities, features, tables, ttl) and services, the tool entity
    and both embedding views included."""
    from feast.repo_operations import parse_repo

    from caprank.features.definitions import repo_objects

    parsed = parse_repo(REPO)
    from_repo = _summary(
        [e for e in parsed.entities if e.name != "__dummy"]
        + parsed.feature_views
        + parsed.feature_services
    )
    from_library = _summary(repo_objects(Path("features"), CaprankConfig().features))
    assert from_repo == from_library
    assert set(from_repo["entities"]) == {"capability", "tool"}
    assert set(from_repo["views"]) == {
        "capability_features",
        "capability_embeddings",
        "tool_embeddings",
    }
    assert from_repo["services"] == {
        "ranker_features": ["capability_embeddings", "capability_features"]
    }
    assert {d.name for d in parsed.data_sources} == {f"{v}_source" for v in from_repo["views"]}


def _embedding_tables(directory: Path) -> Path:
    """Two rows of each embed-stage table, as the embed stage writes them."""
    from datetime import UTC, datetime

    import pyarrow as pa

    from caprank.data.schemas import EMBEDDING_TABLES
    from caprank.files import atomic_write_parquet

    when = datetime(2026, 10, 1, tzinfo=UTC)
    for spec in EMBEDDING_TABLES.values():
        columns = {}
        for fld in spec.schema:
            if pa.types.is_list(fld.type):
                columns[fld.name] = [[1.0, 0.0], [0.0, 1.0]]
            elif pa.types.is_timestamp(fld.type):
                columns[fld.name] = [when, when]
            else:
                columns[fld.name] = [f"{fld.name}-a", f"{fld.name}-b"]
        atomic_write_parquet(pa.table(columns, schema=spec.schema), directory / spec.file)
    return directory


@pytest.mark.slow
def test_feast_cli_apply_keeps_what_the_pipeline_registered(tmp_path):
    """The pipeline registers everything (features and embeddings); `feast apply` on the
    repo afterwards, against the same registry, deletes and changes nothing."""
    from caprank.embeddings.publish import publish_embeddings
    from caprank.features.stage import build_and_publish

    project = tmp_path / "project"
    shutil.copytree(REPO, project / "feature_repo")
    cfg = CaprankConfig()
    cfg.paths.home = project / ".caprank"  # the registry feature_store.yaml names
    cfg.paths.features = tmp_path / "features"
    build_and_publish(tiny_dataset(), cfg, tmp_path / "built")
    published = publish_embeddings(cfg, _embedding_tables(tmp_path / "embed"))
    assert set(published.feature_views) == {
        "capability_features",
        "capability_embeddings",
        "tool_embeddings",
    }
    repo = project / "feature_repo"
    config = load_repo_config(repo, repo / "feature_store.yaml")
    before = FeatureStore(repo_path=str(repo), config=config)
    registered = _summary(
        before.list_entities() + before.list_feature_views() + before.list_feature_services()
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPRANK_")}
    env |= {"PYTHONPATH": str(ROOT), "CAPRANK_PATHS__FEATURES": str(cfg.paths.features)}
    feast = [sys.executable, "-m", "feast.cli.cli", "-c", str(repo), "apply"]
    done = subprocess.run(feast, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Deleted" not in done.stdout, done.stdout
    after = FeatureStore(repo_path=str(repo), config=config)
    assert (
        _summary(after.list_entities() + after.list_feature_views() + after.list_feature_services())
        == registered
    )
    assert {e.name for e in after.list_entities()} >= {"capability", "tool"}
    assert len(after.list_feature_views()) == 3


def test_embeddings_publish_in_a_pod_without_the_feature_steps_disk(tmp_path):
    """On a cluster the embed step runs in its own pod: the feature step's offline table
    reaches it only as the KFP artifact it is passed, and publishing must work from that."""
    from caprank.embeddings.publish import publish_embeddings
    from caprank.features.stage import build_and_publish

    feature_pod, embed_pod = CaprankConfig(), CaprankConfig()
    feature_pod.paths.home = tmp_path / "feature-pod"
    embed_pod.paths.home = tmp_path / "embed-pod"
    registry = f"sqlite:///{tmp_path / 'registry.db'}"  # the one shared Feast registry
    for cfg in (feature_pod, embed_pod):
        cfg.services.feast_registry = registry
    build_and_publish(tiny_dataset(), feature_pod, tmp_path / "features-artifact")
    tables = _embedding_tables(tmp_path / "embed")
    with pytest.raises(FileNotFoundError):
        publish_embeddings(embed_pod, tables)  # the feature step's disk is not there
    published = publish_embeddings(embed_pod, tables, tmp_path / "features-artifact")
    assert "capability_features" in published.feature_views
    assert str(published.offline_path).startswith(str(embed_pod.paths.home))
