"""Nothing acknowledged is invisible or lost (issue 13): served rankings survive a kill and
a restart (so their feedback is accepted), a clean shutdown compacts the active
write-ahead segment, and ingest reads segments not yet compacted."""

from __future__ import annotations

import signal
from datetime import UTC, datetime

import pytest

from benchmarks.bench_feedback import make_model_dir
from benchmarks.serving_proc import Client, ServerProcess
from caprank.config import CaprankConfig
from caprank.data.ingest import read_feedback
from caprank.deploy.guardrails import FeedbackLogQuality
from caprank.online.feedback import WAL_DIR, FeedbackLog
from caprank.online.served import DurableRequestStore, ServedRanking


def _served(rid: str, text: str = "mail jane@example.com", user: str | None = "u") -> ServedRanking:
    return ServedRanking(rid, text, ("t",), ("a", "b"), "v1", datetime.now(UTC), "s", user)


def test_served_rankings_are_replayed_after_a_crash(tmp_path):
    now = [1000.0]
    store = DurableRequestStore(tmp_path, size=8, ttl_s=100, clock=lambda: now[0], scrub=str.upper)
    store.open()
    for i in range(3):
        store.put(_served(f"r{i}"))
    # no close(): a killed process leaves the log as it is
    again = DurableRequestStore(tmp_path, size=8, ttl_s=100, clock=lambda: now[0]).open()
    got = again.get("r1")
    assert got is not None and got.shown == ("a", "b") and got.user_id == "u"
    assert got.intent_text == "MAIL JANE@EXAMPLE.COM"  # stored as scrubbed, never raw
    now[0] += 101  # past the retention window: not replayed, and its segment goes
    third = DurableRequestStore(tmp_path, size=8, ttl_s=100, clock=lambda: now[0]).open()
    assert third.get("r1") is None and len(third) == 0
    assert third.segment_paths == [third.segment_paths[-1]]
    for s in (store, again, third):
        s.close()


def test_served_log_is_bounded_and_stops_at_a_torn_line(tmp_path):
    store = DurableRequestStore(tmp_path, size=8, ttl_s=1e6).open()
    for i in range(40):
        store.put(_served(f"r{i}"))
    store.close()
    # segments of size // 4 rankings; those wholly evicted by newer ones are deleted
    assert len(store.segment_paths) <= 6
    last = store.segment_paths[-2]
    with open(last, "ab") as fh:
        fh.write(b'0badc0de {"request_id": "torn')
    again = DurableRequestStore(tmp_path, size=8, ttl_s=1e6).open()
    assert again.get("r39") is not None and again.get("r0") is None and len(again) == 8
    again.close()


def _row(i: int) -> dict:
    return {
        "event_id": f"e{i}", "timestamp": datetime.now(UTC), "session_id": "s", "user_id": None,
        "intent_id": None, "intent_text": "t", "context_tools": [], "candidate_ids": ["a"],
        "selected_capability": "a", "rank": 1, "outcome": "success", "execution_time_ms": 1.0,
        "feedback": None, "propensity": 1.0, "model_version": "v",
    }  # fmt: skip


def test_ingest_reads_segments_and_close_compacts_the_active_one(tmp_path):
    cfg = CaprankConfig.model_validate({"paths": {"home": str(tmp_path)}})
    log = FeedbackLog(cfg.feedback_dir(), cfg.privacy).open()
    assert [log.append(_row(i)).result() for i in range(3)] == ["stored"] * 3
    log.compact(rotate=True)  # e0..e2 in a part
    assert log.append(_row(3)).result() == "stored"  # e3 only in the active segment
    assert sorted(read_feedback(cfg)["event_id"].to_pylist()) == ["e0", "e1", "e2", "e3"]
    # the rollout's quality guardrail counts it from its acknowledgement as well
    assert FeedbackLogQuality(cfg.feedback_dir()).success_counts("v", 0.0) == (4, 4)
    log.close()
    assert not list((cfg.feedback_dir() / WAL_DIR).glob("seg-*.log"))  # all compacted
    assert sorted(read_feedback(cfg)["event_id"].to_pylist()) == ["e0", "e1", "e2", "e3"]


@pytest.mark.slow
@pytest.mark.e2e
def test_feedback_after_kill_9_and_restart_is_accepted_and_sigterm_compacts(tmp_path):
    cfg = CaprankConfig.model_validate({"paths": {"home": str(tmp_path)}})
    model_dir = make_model_dir(cfg, tmp_path)
    servers = [ServerProcess(model_dir, tmp_path).start()]
    try:
        client = Client(servers[0].port)
        code, body = client.post(f"/v1/models/{servers[0].model_name}:predict",
                                 {"instances": [{"intent": "track my package", "top_k": 3,
                                                 "user_id": "u-7"}]})  # fmt: skip
        assert code == 200, body
        pred = body["predictions"][0]
        client.close()
        servers[0].kill(signal.SIGKILL)
        servers.append(ServerProcess(model_dir, tmp_path, port=servers[0].port).start())
        client = Client(servers[1].port)
        post = {"request_id": pred["request_id"], "outcome": "success",
                "execution_time_ms": 9.0,
                "selected_capability": pred["rankings"][1]["capability_id"]}  # fmt: skip
        code, ack = client.post("/v1/feedback", post)
        client.close()
        assert code == 200 and ack["status"] == "stored", ack
        servers[1].kill(signal.SIGTERM)
        assert servers[1].proc.returncode == 0
    finally:
        for server in servers:
            server.kill()
    assert not list((cfg.feedback_dir() / WAL_DIR).glob("seg-*.log"))  # compacted at exit
    rows = {r["event_id"]: r for r in read_feedback(cfg).to_pylist()}
    row = rows[ack["event_id"]]
    assert row["user_id"] == "u-7" and row["intent_text"] == "track my package" and row["rank"] == 2
