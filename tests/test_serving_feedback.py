"""Feedback over HTTP (validation, PII, opt-out, retries, Parquet parts the ingest reads),
the write-ahead log's crash handling, and the local rollout backend under the controller."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest

from caprank.config import CanaryConfig
from caprank.data.ingest import read_feedback
from caprank.data.schemas import INTERACTIONS
from caprank.deploy import run_rollout
from caprank.deploy.local import LocalBackend
from caprank.deploy.state import RolloutState, rollout_state_path
from caprank.online.feedback import FeedbackLog, event_id, read_segment
from caprank.online.intents import IntentCache
from caprank.online.models import save_dense_model
from caprank.online.request import RequestError, parse_rank_request
from caprank.online.rules import apply_rules, rule_adjustments
from tests.serving_fixtures import FailingRanker, Served, start_served


@pytest.fixture(scope="module")
def served(tiny_cfg, tiny_dataset, tmp_path_factory):
    s = start_served(tiny_cfg, tiny_dataset, tmp_path_factory.mktemp("serving-fb"), publish=False)
    yield s
    s.close()


def _post(served: Served, body: dict):
    return served.call("POST", "/v1/feedback", body)


def test_feedback_is_stored_once_in_contract_parts(served: Served):
    pred = served.rank({"intent": "mail me at jane.doe@example.com", "top_k": 5,
                        "context_tools": None, "session_id": "s-1", "user_id": "u-1"})  # fmt: skip
    rid, shown = pred["request_id"], [r["capability_id"] for r in pred["rankings"]]
    body = {"request_id": rid, "selected_capability": shown[2], "outcome": "partial",
            "execution_time_ms": 250.0, "rating": 3}  # fmt: skip
    assert _post(served, body) == (200, {"status": "stored", "event_id": event_id(rid, shown[2])})
    assert _post(served, body)[1]["status"] == "duplicate"  # a retry is not stored twice
    code, out = served.call("POST", "/admin/feedback/compact")
    assert code == 200 and out["parts"]
    part = pq.read_table(out["parts"][0])
    assert part.schema.names == INTERACTIONS.names
    table = read_feedback(served.cfg)
    rows = [r for r in table.to_pylist() if r["event_id"] == event_id(rid, shown[2])]
    assert len(rows) == 1
    row = rows[0]
    assert row["intent_text"] == "mail me at [EMAIL]"
    assert row["rank"] == 3 and row["candidate_ids"] == shown and row["outcome"] == "partial"
    assert row["model_version"] == "dense" and row["session_id"] == "s-1"
    assert row["user_id"] == "u-1" and row["feedback"] == 3 and row["propensity"] == 1.0
    assert served.metric("caprank_feedback_events_total", status="duplicate") >= 1
    # stored outcomes per serving version: the cluster canary's quality guardrail reads them
    assert (
        served.metric("caprank_feedback_outcomes_total", model_version="dense", outcome="partial")
        == 1
    )


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"selected_capability": "c", "outcome": "success", "execution_time_ms": 1}, 400,
         "request_id"),
        ({"request_id": "r", "selected_capability": "c", "outcome": "great",
          "execution_time_ms": 1}, 400, "outcome"),
        ({"request_id": "r", "selected_capability": "c", "outcome": "success",
          "execution_time_ms": -5}, 400, "execution_time_ms"),
        ({"request_id": "r", "selected_capability": "c", "outcome": "success",
          "execution_time_ms": 5, "rating": 6}, 400, "rating"),
        ({"request_id": "no-such-request", "selected_capability": "c", "outcome": "success",
          "execution_time_ms": 5}, 404, "unknown or expired"),
    ],
)  # fmt: skip
def test_feedback_validation(served: Served, body, status, field):
    code, out = _post(served, body)
    assert code == status and field in out["error"]


def test_feedback_for_a_capability_not_shown_is_422(served: Served):
    pred = served.rank({"intent": "anything", "top_k": 2})
    hidden = next(c for c in served.runtime.engine.catalog.ids
                  if c not in {r["capability_id"] for r in pred["rankings"]})  # fmt: skip
    code, out = _post(served, {"request_id": pred["request_id"], "selected_capability": hidden,
                               "outcome": "success", "execution_time_ms": 1})  # fmt: skip
    assert code == 422 and "was not in the ranking" in out["error"]


def test_opted_out_user_is_acknowledged_as_dropped(served: Served):
    privacy = served.runtime.cfg.privacy
    privacy.opt_out_users = ["u-gone"]
    try:
        pred = served.rank({"intent": "please forget me", "user_id": "u-gone", "top_k": 1})
        cap = pred["rankings"][0]["capability_id"]
        code, out = _post(served, {"request_id": pred["request_id"], "selected_capability": cap,
                                   "outcome": "success", "execution_time_ms": 3})  # fmt: skip
        assert code == 200 and out["status"] == "dropped"
        served.call("POST", "/admin/feedback/compact")
        assert event_id(pred["request_id"], cap) not in set(
            read_feedback(served.cfg)["event_id"].to_pylist()
        )
    finally:
        privacy.opt_out_users = []


def test_pii_ids_are_hashed_in_served_rankings_and_stored_feedback(served: Served):
    ids = served.runtime.ids
    pred = served.rank({"intent": "hello", "top_k": 1, "user_id": "Jane.Doe@Example.com",
                        "session_id": "+44 20 7946 0958"})  # fmt: skip
    rid, cap = pred["request_id"], pred["rankings"][0]["capability_id"]
    kept = served.runtime.engine.requests.get(rid)
    assert kept.user_id == ids.hash("jane.doe@example.com")
    assert kept.session_id == ids.hash("+44 20 7946 0958")
    body = {"request_id": rid, "selected_capability": cap, "outcome": "success",
            "execution_time_ms": 1, "user_id": "jane.doe@example.com"}  # fmt: skip
    assert _post(served, body)[1]["status"] == "stored"
    served.call("POST", "/admin/feedback/compact")
    row = next(
        r for r in read_feedback(served.cfg).to_pylist() if r["event_id"] == event_id(rid, cap)
    )
    assert row["user_id"] == kept.user_id and row["session_id"] == kept.session_id
    assert "jane" not in str(row).lower() and "7946" not in str(row)


def test_pii_ids_rejected_when_configured(served: Served):
    runtime = served.runtime
    runtime.ids = replace(runtime.ids, mode="reject")
    try:
        pred = served.rank({"intent": "hello", "top_k": 1})
        cap = pred["rankings"][0]["capability_id"]
        code, out = _post(served, {"request_id": pred["request_id"], "outcome": "success",
                                   "selected_capability": cap, "execution_time_ms": 1,
                                   "user_id": "jane@example.com"})  # fmt: skip
        assert code == 400 and "user_id" in out["error"] and "personal data" in out["error"]
        with pytest.raises(RequestError, match="session_id"):
            runtime.rank({"intent": "hello", "session_id": "192.168.0.7"})
    finally:
        runtime.ids = replace(runtime.ids, mode="hash")


def test_opt_out_matches_a_normalized_id(served: Served):
    privacy = served.runtime.cfg.privacy
    privacy.opt_out_users = ["  U-Gone-Again "]
    try:
        pred = served.rank({"intent": "forget me", "user_id": "u-gone-again", "top_k": 1})
        code, out = _post(served, {"request_id": pred["request_id"], "outcome": "success",
                                   "selected_capability": pred["rankings"][0]["capability_id"],
                                   "execution_time_ms": 3})  # fmt: skip
        assert code == 200 and out["status"] == "dropped"
    finally:
        privacy.opt_out_users = []


def _row(i: int) -> dict:
    return {
        "event_id": f"e{i}", "timestamp": datetime.now(UTC), "session_id": "s", "user_id": None,
        "intent_id": None, "intent_text": "t", "context_tools": [], "candidate_ids": ["a"],
        "selected_capability": "a", "rank": 1, "outcome": "success", "execution_time_ms": 1.0,
        "feedback": None, "propensity": 1.0, "model_version": "v",
    }  # fmt: skip


def test_wal_torn_tail_and_idempotent_recovery(tmp_path, tiny_cfg):
    log = FeedbackLog(tmp_path, tiny_cfg.privacy, segment_events=1000).open()
    assert [log.append(_row(i)).result() for i in range(3)] == ["stored"] * 3
    segment = log._active
    log._queue.put(("stop", type(log.append(_row(0)))()))  # stop the writer, no compaction
    log._thread.join()
    with open(segment, "ab") as fh:
        fh.write(b'deadbeef {"event_id": "torn')  # a crash in the middle of a write
    assert [r["event_id"] for r in read_segment(segment)] == ["e0", "e1", "e2"]
    again = FeedbackLog(tmp_path, tiny_cfg.privacy).open()  # recovery compacts the segment
    assert not segment.exists() and len(again) == 3
    assert again.append(_row(1)).result() == "duplicate"
    again.close()
    table = pq.read_table(tmp_path / "interactions")
    assert sorted(table["event_id"].to_pylist()) == ["e0", "e1", "e2"]


def test_rules_and_cache_units():
    ids = ["a", "b", "c", "d"]
    adj = rule_adjustments(ids, {"c": 1.0}, {"a": 0.5})
    tool_sets = [frozenset({"x"}), frozenset({"x", "y"}), frozenset({"z"}), frozenset({"x"})]
    rows, scores = apply_rules(
        [0, 1, 2, 3], [0.9, 0.8, 0.1, 0.2], tool_sets=tool_sets, context_tools=["x", "z"],
        adjustments=adj, min_score=0.15, top_k=2,
    )  # fmt: skip
    assert rows.tolist() == [2, 0] and scores.tolist() == pytest.approx([1.1, 0.4])
    now = [0.0]
    cache = IntentCache(2, ttl_s=10, clock=lambda: now[0])
    cache.put("m", "a", 1)
    cache.put("m", "b", 2)
    cache.put("m", "c", 3)  # evicts a
    assert cache.get("m", "a") is None and cache.get("m", "c") == 3
    now[0] = 11.0
    assert cache.get("m", "c") is None and (cache.hits, cache.misses) == (1, 2)


def test_rank_request_defaults(tiny_cfg):
    req = parse_rank_request({"intent": "hi"}, tiny_cfg.serving)
    assert req.top_k == tiny_cfg.serving.default_top_k and req.candidate_ids is None


def _traffic(served: Served, n: int):
    for i in range(n):
        served.runtime.rank({"intent": f"rollout {i % 5}"})


def test_local_backend_promotes_a_healthy_canary(served: Served, tmp_path):
    rt = served.runtime
    cfg = CanaryConfig(
        traffic_percent=50, window_s=3, poll_s=1, min_requests=10, allow_unmeasured=["success_rate"]
    )  # fmt: skip  (no outcomes posted)
    backend = LocalBackend(rt.engine, lambda uri, v: rt.load(uri, v), tmp_path / "s.json", "split")
    uri = str(save_dense_model(tmp_path / "new", rt.cfg.embedding.text_model))
    result = run_rollout(backend, uri, "v-new", cfg, sleep=lambda s: (_traffic(served, 40),
                         __import__("time").sleep(s))[1])  # fmt: skip
    assert result.outcome == "promoted", result.reason
    assert rt.engine.routing.primary.version == "v-new" and rt.engine.routing.second is None
    assert backend.get_state().phase == "promoted"
    rt.swap("dense", "dense")


def test_local_backend_rolls_back_a_failing_canary(served: Served, tmp_path):
    rt = served.runtime
    primary = rt.engine.routing.primary

    def load(uri, version):
        return replace(rt.load(uri, version), ranker=FailingRanker())

    cfg = CanaryConfig(traffic_percent=50, window_s=3, poll_s=1, min_requests=10)
    backend = LocalBackend(rt.engine, load, tmp_path / "s.json", "split")
    uri = str(save_dense_model(tmp_path / "bad", rt.cfg.embedding.text_model))
    result = run_rollout(backend, uri, "v-bad", cfg, sleep=lambda s: (_traffic(served, 40),
                         __import__("time").sleep(s))[1])  # fmt: skip
    assert result.outcome == "rolled_back" and "error rate" in result.reason
    assert rt.engine.routing.primary is primary and rt.engine.routing.second is None


def test_rollout_over_the_admin_api_keeps_the_one_rollout_record(served: Served, tmp_path):
    rt = served.runtime
    saved = rt.cfg.canary
    rt.cfg.canary = CanaryConfig(traffic_percent=50, window_s=2, poll_s=0.5, min_requests=10,
                                 allow_unmeasured=["success_rate"])  # fmt: skip
    uri = str(save_dense_model(tmp_path / "next", rt.cfg.embedding.text_model))
    try:
        assert served.call("POST", "/admin/rollout", {"uri": uri, "version": "v-http"})[0] == 400
        rt.cfg.serving.model_roots = [str(tmp_path)]  # a directory loads only from a root
        assert served.call("POST", "/admin/rollout", {"version": "v-http"})[0] == 400
        code, out = served.call("POST", "/admin/rollout", {"uri": uri, "version": "v-http"})
        assert (code, out) == (200, {"started": uri})
        assert served.call("POST", "/admin/rollout", {"uri": uri})[0] == 409
        deadline = time.monotonic() + 60
        while (result := served.call("GET", "/admin/rollout")[1])["result"] is None:
            assert time.monotonic() < deadline, result
            _traffic(served, 10)
            time.sleep(0.1)
        assert result["result"]["outcome"] == "promoted", result
        assert result["primary"] == "v-http" and result["state"]["phase"] == "promoted"
        record = RolloutState.from_json(rollout_state_path(rt.cfg).read_text(), "record")
        assert record.new_uri == uri and record.phase == "promoted"
    finally:
        rt.cfg.canary = saved
        rt.cfg.serving.model_roots = []
        rt.swap("dense", "dense")
