"""The predictor over HTTP: V1/V2 ranking (also through KServe's own client), bad input,
model errors, hot swap, canary split, shadow, cache, features and staleness."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest

from caprank.online.models import LoadedModel
from tests.serving_fixtures import FailingRanker, Served, start_served


@pytest.fixture(scope="module")
def served(tiny_cfg, tiny_dataset, tmp_path_factory):
    s = start_served(tiny_cfg, tiny_dataset, tmp_path_factory.mktemp("serving-api"))
    yield s
    s.close()


def _ids(served: Served) -> list[str]:
    return list(served.runtime.engine.catalog.ids)


def test_v1_rank_with_kserve_client(served: Served):
    client = InferenceRESTClient(RESTConfig(protocol="v1"))
    cands = _ids(served)[:20]
    body = {"instances": [{"intent": "book a hotel room in rome", "candidate_ids": cands,
                           "top_k": 5}]}  # fmt: skip
    out = asyncio.run(client.infer(served.url, body, model_name="caprank"))
    pred = out["predictions"][0]
    assert len(pred["rankings"]) == 5
    assert {r["capability_id"] for r in pred["rankings"]} <= set(cands)
    scores = [r["score"] for r in pred["rankings"]]
    assert scores == sorted(scores, reverse=True)
    assert pred["model_version"] == "dense" and pred["arm"] == "primary"
    assert pred["request_id"] and pred["latency_ms"] > 0 and pred["fallback"] is None


def test_v2_rank_with_kserve_client(served: Served):
    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    texts = [json.dumps({"intent": "translate a document", "top_k": 3}),
             json.dumps({"intent": "weather forecast", "top_k": 2})]  # fmt: skip
    req = InferRequest("caprank", [InferInput("request", [2], "BYTES", texts)], request_id="r-v2")
    resp = asyncio.run(client.infer(served.url, req, model_name="caprank"))
    out = [json.loads(t) for t in resp.outputs[0].data]
    assert resp.outputs[0].name == "response" and [len(o["rankings"]) for o in out] == [3, 2]
    assert {o["model_version"] for o in out} == {"dense"} and resp.id == "r-v2"
    code, meta = served.call("GET", "/v2/models/caprank")
    assert code == 200 and meta["inputs"][0]["name"] == "request"


def test_health_readiness_and_metadata(served: Served):
    assert served.call("GET", "/v2/health/live")[0] == 200
    assert served.call("GET", "/v2/health/ready") == (200, {"ready": True})
    assert served.call("GET", "/v1/models/caprank")[1]["ready"] is True
    assert served.call("GET", "/v2/models/nope/ready")[0] == 404


def test_ready_waits_for_the_model_while_the_fallback_answers(served: Served):
    engine = served.runtime.engine
    loaded = engine.routing.primary
    engine.set_primary(None)  # as before the background load has finished
    try:
        assert served.call("GET", "/v2/health/ready")[0] == 503
        assert served.call("GET", "/v2/health/live")[0] == 200
        pred = served.rank({"intent": "while the model loads"})
        assert (pred["arm"], pred["fallback"]) == ("fallback", "not_loaded")
        assert served.metric("caprank_model_ready") == 0
    finally:
        engine.set_primary(loaded)
    assert served.call("GET", "/v2/health/ready") == (200, {"ready": True})
    assert served.metric("caprank_model_ready") == 1


def test_rank_all_when_no_candidates_and_context_rule(served: Served):
    pred = served.rank({"intent": "send an email", "top_k": 100})
    assert len(pred["rankings"]) == len(_ids(served))
    catalog = served.runtime.engine.catalog
    tools = sorted(catalog.tools[0])
    pred = served.rank({"intent": "send an email", "top_k": 100, "context_tools": tools})
    got = [r["capability_id"] for r in pred["rankings"]]
    assert catalog.ids[0] in got
    assert all(catalog.tool_sets[catalog.position[c]] <= set(tools) for c in got)
    top = pred["rankings"][0]["score"]
    pred = served.rank({"intent": "send an email", "min_score": top})
    assert all(r["score"] >= top for r in pred["rankings"])


# fmt: off
BAD = [
    ("/v1/models/caprank:predict", b"{not json", 400, "Unrecognized request format"),
    ("/v1/models/caprank:predict", {"instances": {}}, 400, "instances"),
    ("/v1/models/caprank:predict", {"instances": [{"top_k": 3}]}, 400, "instances[0].intent"),
    ("/v1/models/caprank:predict", {"instances": [{"intent": 5}]}, 400, "instances[0].intent"),
    ("/v1/models/caprank:predict", {"instances": [{"intent": "x", "candidate_ids": ["nope"]}]},
     400, "unknown capability ids"),
    ("/v1/models/caprank:predict", {"instances": [{"intent": "x", "candidate_ids": []}]},
     400, "candidate_ids"),
    ("/v1/models/caprank:predict", {"instances": [{"intent": "x", "top_k": 0}]}, 400, "top_k"),
    ("/v1/models/caprank:predict", {"instances": [{"intent": "x", "top_k": 101}]}, 400, "top_k"),
    ("/v1/models/caprank:predict", {"instances": [{"intent": "x", "top_k": "3"}]}, 400, "top_k"),
    ("/v1/models/caprank:predict", {"instances": [{"intent": "x" * 2001}]}, 400, "2000"),
    ("/v1/models/caprank:predict", {"instances": [{"intent": "x", "bogus": 1}]}, 400, "bogus"),
    ("/v2/models/caprank/infer", b"{not json", 400, "field"),
    ("/v2/models/caprank/infer", {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1],
     "data": ["{}"]}]}, 400, "inputs"),
    ("/v2/models/caprank/infer", {"inputs": [{"name": "request", "datatype": "BYTES",
     "shape": [1], "data": ["{oops"]}]}, 400, "inputs[0].data[0]"),
    ("/v2/models/caprank/infer", {"inputs": [{"name": "request", "datatype": "BYTES",
     "shape": [1], "data": [json.dumps({"intent": "x", "top_k": -1})]}]}, 400,
     "inputs[0].data[0].top_k"),
]
# fmt: on


@pytest.mark.parametrize(("path", "body", "status", "says"), BAD)
def test_bad_input_is_4xx_naming_the_field(served: Served, path, body, status, says):
    raw = body if isinstance(body, bytes) else None
    code, out = served.call("POST", path, None if raw else body, raw=raw)
    assert code == status, out
    assert says in out["error"]
    assert served.rank({"intent": "still serving"})["rankings"]


def test_duplicate_candidates_and_oversized_payload(served: Served):
    ids = _ids(served)
    code, out = served.call(
        "POST", "/v1/models/caprank:predict",
        {"instances": [{"intent": "x", "candidate_ids": [ids[0], ids[1], ids[0]]}]},
    )  # fmt: skip
    assert code == 400 and "duplicate" in out["error"] and ids[0] in out["error"]
    big = b'{"instances": [{"intent": "' + b"a" * 1_100_000 + b'"}]}'
    code, out = served.call("POST", "/v1/models/caprank:predict", raw=big)
    assert code == 413 and "max_payload_bytes" in out["error"]
    assert served.metric("caprank_rank_rejected_total", field="candidate_ids") >= 1
    assert served.rank({"intent": "still serving"})["rankings"]


def _with_primary(served: Served, ranker, version: str) -> LoadedModel:
    engine = served.runtime.engine
    old = engine.routing.primary
    engine.set_primary(replace(old, ranker=ranker, version=version))
    return old


def test_model_error_is_500_with_request_id_and_counted(served: Served):
    cfg = served.runtime.cfg
    old = _with_primary(served, FailingRanker(), "broken")
    errors = served.metric("caprank_rank_requests_total", status="error")
    try:
        cfg.serving.fallback_on_error = False
        code, out = served.call(
            "POST", "/v1/models/caprank:predict",
            {"instances": [{"intent": "x", "request_id": "req-boom"}]},
        )  # fmt: skip
        assert code == 500 and "req-boom" in out["error"]
        assert "scoring exploded" not in out["error"]  # 5xx never echo exception text
        assert served.metric("caprank_rank_requests_total", status="error") == errors + 1
        cfg.serving.fallback_on_error = True
        pred = served.rank({"intent": "x"})
        assert pred["arm"] == "fallback" and pred["fallback"] == "model_error"
        assert pred["model_version"] == "fallback-dense"
        assert served.metric("caprank_fallbacks_total", reason="model_error") >= 1
        assert served.runtime.engine.stats.window("broken", 60)[1] == 1.0
    finally:
        cfg.serving.fallback_on_error = True
        served.runtime.engine.set_primary(old)
    assert served.rank({"intent": "x"})["model_version"] == "dense"


def test_a_fallback_answer_counts_as_the_failing_versions_error(served: Served):
    """A canary that raises on every request must not look healthy: the fallback answers,
    but /metrics counts the request as an error of the version that failed."""
    old = _with_primary(served, FailingRanker(), "broken-canary")
    ok = served.metric("caprank_rank_requests_total", status="ok")
    try:
        for _ in range(3):
            assert served.rank({"intent": "x"})["fallback"] == "model_error"
        assert (
            served.metric(
                "caprank_rank_requests_total", status="error", model_version="broken-canary"
            )
            == 3
        )
        assert served.metric("caprank_rank_requests_total", status="ok") == ok
        assert served.runtime.engine.stats.window("broken-canary", 60)[:2] == (3, 1.0)
    finally:
        served.runtime.engine.set_primary(old)


class NanRanker(FailingRanker):
    """A diverged model: it scores, but every score is NaN."""

    def score(self, query, candidate_idx):
        n = 3 if candidate_idx is None else len(candidate_idx)
        return np.full(n, np.nan, dtype=np.float32)


def test_a_model_scoring_nan_is_a_model_error_not_an_arbitrary_ranking(served: Served):
    old = _with_primary(served, NanRanker(), "diverged")
    try:
        body = served.rank({"intent": "x"})
        assert body["fallback"] == "model_error" and body["model_version"] != "diverged"
        assert served.runtime.engine.stats.window("diverged", 60)[:2] == (1, 1.0)
    finally:
        served.runtime.engine.set_primary(old)


def test_hot_swap_under_load_fails_nothing(served: Served):
    failures, versions = [], set()
    stop = threading.Event()

    def load():
        while not stop.is_set():
            code, body = served.call(
                "POST", "/v1/models/caprank:predict", {"instances": [{"intent": "swap me"}]}
            )
            if code != 200:
                failures.append(body)
            else:
                versions.add(body["predictions"][0]["model_version"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for v in ("v-a", "v-b", "v-c"):
            code, out = served.call("POST", "/admin/models/primary", {"ref": "dense", "version": v})
            assert code == 200 and out["primary"] == v
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert {"v-a", "v-b", "v-c"} <= versions
    served.call("POST", "/admin/models/primary", {"ref": "dense", "version": "dense"})


def test_canary_split_share_and_determinism(served: Served):
    code, _ = served.call("PUT", "/admin/canary", {"ref": "dense", "version": "canary-1",
                                                     "percent": 30, "mode": "split"})  # fmt: skip
    assert code == 200
    try:
        arms = []
        for i in range(1000):
            pred = served.runtime.rank({"intent": "canary traffic", "request_id": f"c-{i}"})
            arms.append(pred.arm)
        share = arms.count("canary") / len(arms)
        assert abs(share - 0.30) <= 0.05
        again = served.rank({"intent": "canary traffic", "request_id": "c-7"})
        assert again["arm"] == arms[7]
        assert again["model_version"] == ("canary-1" if arms[7] == "canary" else "dense")
        code, m = served.call("GET", "/admin/canary/metrics?window_s=600")
        assert m["version"] == "canary-1" and m["requests"] >= arms.count("canary")
        assert m["error_rate"] == 0.0
    finally:
        served.call("DELETE", "/admin/canary")
    assert served.rank({"intent": "canary traffic", "request_id": "c-7"})["arm"] == "primary"


def test_a_user_stays_in_one_arm_whatever_the_request(served: Served):
    """Experiments need sticky assignment: the split hashes the user (else the session),
    not the request, so every request of a user gets the same arm on every replica."""
    code, _ = served.call("PUT", "/admin/canary", {"ref": "dense", "version": "canary-2",
                                                     "percent": 50, "mode": "split"})  # fmt: skip
    assert code == 200
    try:
        rank = served.runtime.rank
        for user in ("u-1", "u-2", "u-3", "u-4"):
            arms = {rank({"intent": "x", "user_id": user, "request_id": f"r-{i}"}).arm
                    for i in range(20)}  # fmt: skip
            assert len(arms) == 1, user
        by_user = {rank({"intent": "x", "user_id": f"u-{i}"}).arm for i in range(60)}
        assert by_user == {"primary", "canary"}  # users do spread over both arms
        sessions = {rank({"intent": "x", "session_id": "s-9", "request_id": f"q-{i}"}).arm
                    for i in range(20)}  # fmt: skip
        assert len(sessions) == 1
    finally:
        served.call("DELETE", "/admin/canary")


def test_shadow_mode_answers_with_primary_and_logs_shadow(served: Served):
    engine = served.runtime.engine
    engine.shadow_results.clear()
    served.call("PUT", "/admin/canary", {"ref": "dense", "version": "shadow-1", "percent": 100,
                                         "mode": "shadow"})  # fmt: skip
    try:
        preds = [served.rank({"intent": f"shadow {i}", "top_k": 3}) for i in range(5)]
        assert {p["model_version"] for p in preds} == {"dense"}
        deadline = time.time() + 10
        while len(engine.shadow_results) < 5 and time.time() < deadline:
            time.sleep(0.05)
        rec = list(engine.shadow_results)
        assert len(rec) == 5 and {r["shadow_version"] for r in rec} == {"shadow-1"}
        assert all(r["overlap"] == 1.0 for r in rec)  # same dense model: same ranking
        assert engine.stats.window("shadow-1", 60)[0] == 5
        assert served.metric("caprank_model_info", role="shadow", version="shadow-1") == 100
    finally:
        served.call("DELETE", "/admin/canary")


def test_promote_canary_over_admin_api(served: Served):
    served.call("PUT", "/admin/canary", {"ref": "dense", "version": "next", "percent": 10})
    code, out = served.call("POST", "/admin/canary/promote")
    assert code == 200 and out["primary"] == "next"
    assert served.rank({"intent": "after promote"})["model_version"] == "next"
    assert served.call("POST", "/admin/canary/promote")[0] == 409
    served.call("POST", "/admin/models/primary", {"ref": "dense", "version": "dense"})


def test_intent_cache_hits_and_misses(served: Served):
    hits = served.metric("caprank_intent_cache_lookups_total", result="hit")
    misses = served.metric("caprank_intent_cache_lookups_total", result="miss")
    first = served.rank({"intent": "a brand new intent for the cache"})
    second = served.rank({"intent": "a brand new intent for the cache"})
    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert served.metric("caprank_intent_cache_lookups_total", result="hit") == hits + 1
    assert served.metric("caprank_intent_cache_lookups_total", result="miss") == misses + 1
    assert first["rankings"] == second["rankings"]


def test_feature_refresh_and_staleness(served: Served):
    cfg = served.runtime.cfg
    try:
        cfg.features.max_staleness_hours = 1e6
        code, snap = served.call("POST", "/admin/features/refresh")
        assert code == 200 and snap["available"] and snap["stale_capabilities"] == 0
        pred = served.rank({"intent": "fresh features"})
        assert pred["features_stale"] is False and pred["feature_age_hours"] > 0
        assert served.metric("caprank_feature_stale_capabilities") == 0
        cfg.features.max_staleness_hours = 1e-6
        code, snap = served.call("POST", "/admin/features/refresh")
        assert snap["stale_capabilities"] == len(_ids(served))
        assert served.rank({"intent": "stale features"})["features_stale"] is True
        assert served.metric("caprank_feature_stale_capabilities") == len(_ids(served))
    finally:
        cfg.features.max_staleness_hours = 48.0
    assert served.metric("caprank_feature_refreshes") >= 2
