"""The production Feast variant against the real Redis and PostgreSQL (CI=true).

Isolation: Redis database 13 and a Feast project of our own (its keys carry the project
name, removed by ``teardown``); a PostgreSQL database created for the test and dropped.
"""

from __future__ import annotations

import os
import uuid

import pytest

from caprank.config import CaprankConfig
from caprank.features.stage import build_features, last_snapshot, publish_features
from tests.feature_data import at, tiny_dataset

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(
        os.environ.get("CI") != "true",
        reason="needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (set CI=true)",
    ),
]

PG = "postgres@127.0.0.1:5432"
REDIS_DB = 13


@pytest.fixture
def database():
    psycopg = pytest.importorskip("psycopg")
    name = f"caprank_features_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"postgresql://{PG}/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(f"postgresql://{PG}/test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_redis_online_store_and_postgres_registry(tmp_path, database):
    import psycopg
    import redis

    from caprank.features.definitions import CAPABILITY_EMBEDDINGS_VIEW, TOOL_EMBEDDINGS_VIEW
    from caprank.features.store import online_features, open_store

    cfg = CaprankConfig()
    cfg.paths.home = tmp_path / "home"
    cfg.services.feast_online_store = "redis"
    cfg.services.redis_url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    cfg.services.feast_registry = f"postgresql://{PG}/{database}"
    cfg.features.feast_project = f"caprank_test_{uuid.uuid4().hex[:8]}"
    project_key = cfg.features.feast_project.encode()
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)

    store = None
    try:
        first = build_features(tiny_dataset(), cfg, tmp_path / "out", as_of=at(1))
        published = publish_features(cfg, first.offline_path, last_snapshot(first.offline_path))
        assert published.online_store == cfg.services.redis_url
        assert published.registry == f"postgresql+psycopg://{PG}/{database}"
        assert not (cfg.feast_dir() / "registry.db").exists()  # nothing embedded was used

        ours = [k for k in client.scan_iter(count=1000) if k.endswith(project_key)]
        assert len(ours) == 3  # c1, c2, c4 (c3 is created on day 2)

        store = open_store(cfg)  # a fresh reader, as a server would be
        online = {r["capability_id"]: r for r in online_features(store).to_pylist()}
        assert online["c1"]["usage_count_total"] == 2 and online["c1"]["event_timestamp"] == at(1)

        full = build_features(tiny_dataset(), cfg, tmp_path / "out")
        publish_features(cfg, full.offline_path, last_snapshot(full.offline_path))
        store = open_store(cfg)
        online = {r["capability_id"]: r for r in online_features(store).to_pylist()}
        assert online["c1"]["usage_count_total"] == 4 and "c3" in online

        with psycopg.connect(f"postgresql://{PG}/{database}") as conn:
            rows = conn.execute(
                "SELECT feature_view_name FROM feature_views WHERE project_id = %s",
                (cfg.features.feast_project,),
            ).fetchall()
        # every view the repo declares (feature_repo/ is the source of truth), once each
        assert sorted(r[0] for r in rows) == sorted(
            ["capability_features", CAPABILITY_EMBEDDINGS_VIEW, TOOL_EMBEDDINGS_VIEW]
        )
    finally:
        (store or open_store(cfg)).teardown()
        leftover = [k for k in client.scan_iter(count=1000) if k.endswith(project_key)]
        client.close()
    assert leftover == []
