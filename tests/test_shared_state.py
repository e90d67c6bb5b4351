"""Shared serving state: the PostgreSQL feedback sink and the Redis served-ranking store,
against the real servers on loopback (CI=true), and what needs no server (always).

Isolation: every test makes its own table (``caprank_fb_<uuid>``, dropped after) and
its own Redis key prefix (``caprank-test:<uuid>:``, deleted after).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from caprank.config import CaprankConfig
from caprank.data.ingest import ingest, read_feedback
from caprank.deploy.guardrails import FeedbackLogQuality
from caprank.errors import ConfigError
from caprank.online.feedback import DUPLICATE, STORED, FeedbackConflict, WalEvents, event_id
from caprank.online.feedback_pg import PostgresEvents, PostgresFeedbackSink, connect
from caprank.online.metrics import ServerMetrics
from caprank.online.request import StoreUnavailable
from caprank.online.routes import ERROR_HANDLERS, ServerState, router
from caprank.online.runtime import Runtime
from caprank.online.served import ServedRanking
from caprank.online.served_redis import RedisRequestStore
from caprank.online.sinks import event_reader

DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
services = pytest.mark.skipif(
    os.environ.get("CI") != "true",
    reason="needs PostgreSQL on 127.0.0.1:5432 (db test) and Redis on 127.0.0.1:6379 (set CI=true)",
)


@pytest.fixture
def table():
    name = f"caprank_fb_{uuid.uuid4().hex[:12]}"
    yield name
    with connect(DSN) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')


@pytest.fixture
def prefix():
    import redis

    name = f"caprank-test:{uuid.uuid4().hex[:12]}:"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=name + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def _row(eid: str, outcome: str = "success", ms: float = 120.0, rating: int | None = 4) -> dict:
    return {
        "event_id": eid,
        "timestamp": datetime.now(UTC).replace(microsecond=0),
        "session_id": "s-1",
        "user_id": "u-1",
        "intent_id": None,
        "intent_text": "send the report",
        "context_tools": ["mail"],
        "candidate_ids": ["a", "b"],
        "selected_capability": "b",
        "rank": 2,
        "outcome": outcome,
        "execution_time_ms": ms,
        "feedback": rating,
        "propensity": 1.0,
        "model_version": "v1",
    }


def _sink(table: str) -> PostgresFeedbackSink:
    return PostgresFeedbackSink(DSN, table, CaprankConfig().privacy).open()


def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ------------------------------------------------------------------- no server needed


def test_postgres_sink_needs_a_dsn(tmp_path):
    cfg = CaprankConfig.model_validate(
        {"paths": {"home": str(tmp_path)}, "serving": {"feedback": {"sink": "postgres"}}}
    )
    with pytest.raises(ConfigError, match=r"services\.feedback_dsn"):
        event_reader(cfg)
    assert isinstance(event_reader(CaprankConfig()), WalEvents)  # the embedded default


def test_unreachable_stores_fail_loudly():
    with pytest.raises(StoreUnavailable, match="did not answer"):
        PostgresEvents("postgresql://postgres@127.0.0.1:1/test", "t").read_events()
    import redis

    with pytest.raises(redis.ConnectionError):
        RedisRequestStore("redis://127.0.0.1:1/0", "p:", size=4, ttl_s=60).open()


def test_redis_down_after_start_is_503_on_lookup_and_never_fails_a_ranking():
    import redis

    store = RedisRequestStore("redis://127.0.0.1:1/0", "p:", size=4, ttl_s=60)
    store._client = redis.Redis.from_url("redis://127.0.0.1:1/0")  # as if Redis went away
    served = ServedRanking("r-1", "text", ("t",), ("a",), "v1", datetime.now(UTC))
    store.put(served)  # logged and counted, the ranking is still answered
    assert store.put_errors == 1 and store.get("r-1") == served  # this replica holds it
    with pytest.raises(StoreUnavailable, match="retry"):
        store.get("r-other")


def test_wal_reader_filters_by_time(tmp_path):
    from caprank.online.feedback import FeedbackLog

    log = FeedbackLog(tmp_path, CaprankConfig().privacy).open()
    old, new = _row("e-old"), _row("e-new")
    old["timestamp"] = new["timestamp"] - timedelta(hours=2)
    assert log.append(old).result(5) == STORED and log.append(new).result(5) == STORED
    log.close()
    reader = WalEvents(tmp_path)
    assert sorted(reader.read_events()["event_id"].to_pylist()) == ["e-new", "e-old"]
    since = new["timestamp"] - timedelta(hours=1)
    assert reader.read_events(since=since)["event_id"].to_pylist() == ["e-new"]
    assert WalEvents(tmp_path / "absent").read_events().num_rows == 0


# ------------------------------------------------------------------ PostgreSQL sink


@services
def test_ack_only_after_commit(table):
    sink = _sink(table)
    try:
        with connect(DSN) as locker:  # holds the table: the writer's INSERT must wait
            locker.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
            fut = sink.append(_row("e-1"))
            time.sleep(0.5)
            assert not fut.done()  # not acknowledged while the transaction cannot commit
        assert fut.result(timeout=10) == STORED
        assert PostgresEvents(DSN, table).read_events()["event_id"].to_pylist() == ["e-1"]

        # a transaction that dies before its commit acknowledges nothing
        with connect(DSN) as admin, connect(DSN) as locker:
            admin.autocommit = True
            locker.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
            lost = sink.append(_row("e-2"))
            query = (
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s"
            )
            like = f'INSERT INTO "{table}"%'
            _wait_for(lambda: admin.execute(query, (like,)).fetchone() is not None)
            (pid,) = admin.execute(query, (like,)).fetchone()
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(StoreUnavailable):
                lost.result(timeout=10)
        assert PostgresEvents(DSN, table).read_events()["event_id"].to_pylist() == ["e-1"]
        assert sink.append(_row("e-2")).result(timeout=10) == STORED  # reconnects; retry ok
        assert len(sink) == 2 and sink.commits == 2
    finally:
        sink.close()


@services
def test_replay_is_idempotent_and_conflicts_refused(table):
    a, b = _sink(table), _sink(table)  # two replicas
    try:
        row = _row("e-1")
        assert a.append(row).result(10) == STORED
        assert a.append(dict(row)).result(10) == DUPLICATE  # a retry to the same replica
        assert b.append(dict(row)).result(10) == DUPLICATE  # ... or to another one
        with pytest.raises(FeedbackConflict, match="outcome") as err:
            b.append(_row("e-1", outcome="failure")).result(10)
        assert err.value.status == 409
        with pytest.raises(FeedbackConflict, match="rating"):
            a.append(_row("e-1", rating=1)).result(10)
        # the same new event sent to both replicas at once is stored exactly once
        results = [a.append(_row("e-2")), b.append(_row("e-2"))]
        assert sorted(f.result(10) for f in results) == [DUPLICATE, STORED]
        table_ = PostgresEvents(DSN, table).read_events()
        assert sorted(table_["event_id"].to_pylist()) == ["e-1", "e-2"]
        stored = table_.to_pylist()[table_["event_id"].to_pylist().index("e-1")]
        assert stored["outcome"] == "success" and stored["feedback"] == 4  # unchanged
        assert stored["context_tools"] == ["mail"] and stored["rank"] == 2
        assert stored["timestamp"] == row["timestamp"]
    finally:
        a.close()
        b.close()


@services
def test_retention_and_erasure_delete_rows(table):
    privacy = CaprankConfig().privacy.model_copy(update={"opt_out_users": ["U-2"]})
    sink = PostgresFeedbackSink(DSN, table, privacy).open()
    try:
        old = _row("e-old")
        old["timestamp"] -= timedelta(days=privacy.retention_days + 1)
        opted = _row("e-opted") | {"user_id": "u-2"}
        for r in (old, opted, _row("e-kept")):
            assert sink.append(r).result(10) == STORED
        assert sink.enforce_retention() == 2
        assert PostgresEvents(DSN, table).read_events()["event_id"].to_pylist() == ["e-kept"]
        assert sink.delete_users([" U-1 "]) == 1  # matched on the normalized id
        assert len(sink) == 0
    finally:
        sink.close()


@services
def test_delete_user_erases_rows_from_the_table(tmp_path, table):
    from caprank.erasure import delete_user

    cfg = CaprankConfig.model_validate(
        {
            "paths": {"home": str(tmp_path)},
            "serving": {"feedback": {"sink": "postgres", "table": table}},
            "services": {"feedback_dsn": DSN},
        }
    )
    sink = PostgresFeedbackSink(DSN, table, cfg.privacy).open()
    try:
        for r in (_row("e-1"), _row("e-2") | {"user_id": "u-2"}):
            assert sink.append(r).result(10) == STORED
    finally:
        sink.close()
    assert delete_user(cfg, "U-1").events_removed == 1
    assert read_feedback(cfg)["event_id"].to_pylist() == ["e-2"]


# ------------------------------------------------------------------------ Redis store


@services
def test_redis_store_shares_rankings_with_expiry(prefix):
    import redis

    now = [1000.0]
    a = RedisRequestStore(REDIS_URL, prefix, 4, ttl_s=60, clock=lambda: now[0]).open()
    b = RedisRequestStore(REDIS_URL, prefix, 4, ttl_s=60, clock=lambda: now[0]).open()
    try:
        served = ServedRanking(
            "r-1", "text", ("t",), ("a", "b"), "v1", datetime.now(UTC), "s", "u", (0.5, 1.0)
        )  # with an explored ranking's propensities
        a.put(served)
        assert b.get("r-1") == served
        assert b.get("r-unknown") is None
        client = redis.Redis.from_url(REDIS_URL)
        assert 0 < client.pttl(prefix + "r-1") <= 60_000  # Redis drops it after retention
        client.close()
        now[0] += 61
        assert RedisRequestStore(REDIS_URL, prefix, 4, 60, clock=lambda: now[0]).open().get(
            "r-1"
        ) is None  # fmt: skip
    finally:
        a.close()
        b.close()


# --------------------------------------------------------- two replicas, one state


def _replica(cfg: CaprankConfig, home) -> tuple[Runtime, TestClient]:
    cfg = cfg.model_copy(deep=True)
    cfg.paths.home = home
    runtime = Runtime(cfg, "dense").start(background_load=False)
    app = FastAPI()
    app.include_router(router)
    for exc, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(exc, handler)
    app.state.caprank = ServerState(runtime, ServerMetrics(runtime, CollectorRegistry()))
    return runtime, TestClient(app)


@services
def test_feedback_reaches_any_replica_and_ingest_reads_it(
    tiny_cfg, tiny_dataset, tmp_path, table, prefix, monkeypatch
):
    monkeypatch.setenv("CAPRANK_SECRET_ID_HASH_KEY", "one-key-for-every-replica")
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.paths.data = tiny_dataset.root
    cfg.serving.feature_refresh_s = cfg.serving.feedback.compact_s = 3600.0
    cfg.serving.feedback.sink = "postgres"
    cfg.serving.feedback.table = table
    cfg.serving.feedback.served_store = "redis"
    cfg.serving.feedback.served_key_prefix = prefix
    cfg.services.feedback_dsn = DSN
    cfg.services.redis_url = REDIS_URL
    a, http_a = _replica(cfg, tmp_path / "a")
    b, http_b = _replica(cfg, tmp_path / "b")
    try:
        posts = []
        for i, outcome in enumerate(("success", "failure", "success")):
            ranked = a.rank({"intent": f"schedule a meeting {i}", "top_k": 3, "user_id": "u-9"})
            cap = ranked.rankings[0]["capability_id"]
            posts.append({"request_id": ranked.request_id, "selected_capability": cap,
                          "outcome": outcome, "execution_time_ms": 10.0 * (i + 1)})  # fmt: skip
        for body in posts:  # every post reaches the replica that did not serve it
            resp = http_b.post("/v1/feedback", json=body)
            assert resp.status_code == 200, resp.text
            eid = event_id(body["request_id"], body["selected_capability"])
            assert resp.json() == {"status": "stored", "event_id": eid}
        again = http_a.post("/v1/feedback", json=posts[0])  # the retry goes back to A
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        changed = http_a.post("/v1/feedback", json=posts[0] | {"outcome": "partial"})
        assert changed.status_code == 409 and "outcome" in changed.json()["error"]
        unknown = http_b.post("/v1/feedback", json=posts[0] | {"request_id": "never-served"})
        assert unknown.status_code == 404 and "any replica" in unknown.json()["error"]
        assert b.status()["feedback"]["events"] == 3
        import redis

        b.engine.requests._client = redis.Redis.from_url("redis://127.0.0.1:1/0")  # Redis gone
        fresh = a.rank({"intent": "book a room", "top_k": 3}).request_id
        down = http_b.post("/v1/feedback", json=posts[0] | {"request_id": fresh})
        assert down.status_code == 503 and down.headers["retry-after"] == "1"

        # the pipeline reads what the replicas acknowledged, through the one reader
        events = read_feedback(cfg)
        assert sorted(events["event_id"].to_pylist()) == sorted(
            event_id(p["request_id"], p["selected_capability"]) for p in posts
        )
        assert set(events["user_id"].to_pylist()) == {a.ids.protect("u-9", "user_id")}
        quality = FeedbackLogQuality(event_reader(cfg))
        assert quality.success_counts("dense", time.time() - 600) == (2, 3)
        result = ingest(cfg, tiny_dataset.root, tmp_path / "ingested")
        assert result.rows["interactions"] == tiny_dataset.interactions.num_rows + 3
        assert f"3 feedback events from PostgreSQL table {table}" in result.source
        assert not (tmp_path / "a" / "feedback" / "wal").exists()  # nothing on local disk
    finally:
        a.close()
        b.close()
