"""Server-issued identity (issue 13): the server issues every request id, a client's id is
a sanitized correlation field, distinct feedback events are never merged, a changed
outcome is a 409 and never a silent drop, and feedback is attributed to its ranking's
user and session (so opt-out cannot be bypassed by naming another user)."""

from __future__ import annotations

import json

import pytest

from caprank.data.ingest import read_feedback
from caprank.online.feedback import event_id
from tests.serving_fixtures import Served, start_served


@pytest.fixture(scope="module")
def served(tiny_cfg, tiny_dataset, tmp_path_factory):
    s = start_served(tiny_cfg, tiny_dataset, tmp_path_factory.mktemp("serving-id"), publish=False)
    yield s
    s.close()


def _post(served: Served, body: dict):
    return served.call("POST", "/v1/feedback", body)


def _fb(rid: str, cap: str, outcome: str = "success", **extra) -> dict:
    return {"request_id": rid, "selected_capability": cap, "outcome": outcome,
            "execution_time_ms": 10.0, **extra}  # fmt: skip


def _stored(served: Served) -> dict[str, dict]:
    served.call("POST", "/admin/feedback/compact")
    return {r["event_id"]: r for r in read_feedback(served.cfg).to_pylist()}


def test_the_server_issues_the_request_id(served: Served):
    first = served.rank({"intent": "book a hotel in rome", "request_id": "mine", "top_k": 3})
    second = served.rank({"intent": "weather tomorrow", "request_id": "mine", "top_k": 3})
    assert first["client_request_id"] == second["client_request_id"] == "mine"
    assert first["request_id"] != second["request_id"]
    assert "mine" not in (first["request_id"], second["request_id"])
    # the first ranking was not overwritten by the second that reused the client id
    cap = first["rankings"][0]["capability_id"]
    code, out = _post(served, _fb(first["request_id"], cap))
    assert code == 200 and out["status"] == "stored"
    assert _stored(served)[out["event_id"]]["intent_text"] == "book a hotel in rome"
    code, out = _post(served, _fb("mine", cap))  # the client's id names no ranking
    assert code == 404 and "unknown" in out["error"]
    assert served.rank({"intent": "no id"})["client_request_id"] is None


@pytest.mark.parametrize("bad", ["a\r\nx-injected: 1", "tab\there", "nul\x00", "rtl\u202e"])
def test_a_client_request_id_with_control_characters_is_400(served: Served, bad):
    code, out = served.call("POST", "/v1/models/caprank:predict",
                            {"instances": [{"intent": "x", "request_id": bad}]})  # fmt: skip
    assert code == 400 and "instances[0].request_id" in out["error"]
    body = {"id": bad, "inputs": [{"name": "request", "shape": [1], "datatype": "BYTES",
                                   "data": [json.dumps({"intent": "x"})]}]}  # fmt: skip
    code, out = served.call("POST", "/v2/models/caprank/infer", body)
    assert code == 400 and "field 'id'" in out["error"]


def test_the_v2_request_id_is_a_correlation_id(served: Served):
    body = {"id": "v2-corr", "inputs": [{"name": "request", "shape": [1], "datatype": "BYTES",
                                         "data": [json.dumps({"intent": "x"})]}]}  # fmt: skip
    code, out = served.call("POST", "/v2/models/caprank/infer", body)
    assert code == 200 and out["id"] == "v2-corr"
    pred = json.loads(out["outputs"][0]["data"][0])
    assert pred["client_request_id"] == "v2-corr" and pred["request_id"] != "v2-corr"


def test_distinct_events_are_never_merged_and_a_change_is_409(served: Served):
    pred = served.rank({"intent": "translate a document", "top_k": 3})
    rid, cap = pred["request_id"], pred["rankings"][1]["capability_id"]
    a = _post(served, _fb(rid, cap, client_event_id="try-1"))
    b = _post(served, _fb(rid, cap, "failure", client_event_id="try-2"))
    assert a[0] == b[0] == 200 and a[1]["status"] == b[1]["status"] == "stored"
    assert a[1]["event_id"] == event_id(rid, cap, "try-1") != b[1]["event_id"]
    # a retry is a duplicate; the same event with another outcome is refused, not dropped
    assert _post(served, _fb(rid, cap, client_event_id="try-1"))[1]["status"] == "duplicate"
    code, out = _post(served, _fb(rid, cap, "partial", client_event_id="try-1"))
    assert code == 409 and "field 'outcome'" in out["error"] and "'success'" in out["error"]
    code, out = _post(served, _fb(rid, cap, client_event_id="try-1", rating=4))
    assert code == 409 and "field 'rating'" in out["error"]
    # without a client event id the selection is one event: a changed outcome is a 409 too
    other = pred["rankings"][2]["capability_id"]
    assert _post(served, _fb(rid, other))[1]["status"] == "stored"
    code, out = _post(served, _fb(rid, other, "failure"))
    assert code == 409 and "client_event_id" in out["error"]
    stored = _stored(served)
    assert stored[event_id(rid, cap, "try-1")]["outcome"] == "success"
    assert stored[event_id(rid, cap, "try-2")]["outcome"] == "failure"
    assert stored[event_id(rid, other)]["outcome"] == "success"
    assert served.metric("caprank_feedback_events_total", status="conflict") >= 3


def test_feedback_is_attributed_to_the_rankings_user_and_session(served: Served):
    pred = served.rank({"intent": "plan a trip", "user_id": "u-1", "session_id": "s-1"})
    rid, cap = pred["request_id"], pred["rankings"][0]["capability_id"]
    code, out = _post(served, _fb(rid, cap, user_id="u-2"))
    assert code == 422 and "field 'user_id'" in out["error"]
    code, out = _post(served, _fb(rid, cap, session_id="s-2"))
    assert code == 422 and "field 'session_id'" in out["error"]
    code, out = _post(served, _fb(rid, cap, user_id="u-1", session_id="s-1"))
    assert code == 200 and out["status"] == "stored"
    row = _stored(served)[out["event_id"]]
    assert (row["user_id"], row["session_id"]) == ("u-1", "s-1")
    anon = served.rank({"intent": "anonymous"})  # no user: feedback may not add one
    code, out = _post(served, _fb(anon["request_id"], anon["rankings"][0]["capability_id"],
                                  user_id="u-1"))  # fmt: skip
    assert code == 422 and "field 'user_id'" in out["error"]


def test_opt_out_is_checked_against_the_rankings_user(served: Served):
    privacy = served.runtime.cfg.privacy
    privacy.opt_out_users = ["u-gone"]
    try:
        pred = served.rank({"intent": "forget me", "user_id": "u-gone"})
        rid, cap = pred["request_id"], pred["rankings"][0]["capability_id"]
        code, out = _post(served, _fb(rid, cap, user_id="u-still-here"))
        assert code == 422 and "field 'user_id'" in out["error"]  # no bypass by renaming
        assert _post(served, _fb(rid, cap)) == (
            200, {"status": "dropped", "event_id": None,
                  "reason": "privacy policy (opt-out or retention)"},
        )  # fmt: skip
    finally:
        privacy.opt_out_users = []
