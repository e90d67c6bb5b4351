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
