"""Cache hits answered before the app's routing (``caprank.online.hits``): the same answer,
metrics, served-ranking record and errors as the full path, which still answers every
miss and every call out of the ordinary (issue 16's hit path)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

import pytest

from tests.serving_fixtures import Served, start_served

PREDICT = "/v1/models/caprank:predict"


@pytest.fixture(scope="module")
def served(tiny_cfg, tiny_dataset, tmp_path_factory):
    s = start_served(tiny_cfg, tiny_dataset, tmp_path_factory.mktemp("serving-hits"))
    yield s
    s.close()


@pytest.fixture
def full_path(served: Served, monkeypatch) -> list:
    """The payloads that reached KServe's ``Model.__call__`` (the full path)."""
    seen: list = []
    predict = served.model.predict

    async def counted(payload, headers=None, response_headers=None):
        seen.append(payload)
        return await predict(payload, headers, response_headers)

    monkeypatch.setattr(served.model, "predict", counted)
    return seen


def _metrics(served: Served) -> tuple[float, ...]:
    return (
        served.metric("caprank_rank_requests_total", status="ok"),
        served.metric("caprank_intent_cache_lookups_total", result="hit"),
        served.metric("caprank_rank_stage_seconds_count", stage="total"),
        served.metric("request_predict_seconds_count", model_name="caprank"),
        served.metric("request_preprocess_seconds_count", model_name="caprank"),
        served.metric("request_postprocess_seconds_count", model_name="caprank"),
    )


def _raw(served: Served, body: bytes, headers: dict, chunked: bool = False):
    url = urlparse(served.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        data = iter([body[:7], body[7:]]) if chunked else body
        conn.request("POST", PREDICT, body=data, headers=headers, encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_a_hit_skips_the_app_and_answers_as_the_full_path(served: Served, full_path):
    ids = list(served.runtime.engine.catalog.ids)[:12]
    inst = {"intent": "answered before the router", "candidate_ids": ids, "top_k": 4}
    miss = served.rank(inst)
    assert len(full_path) == 1 and not miss["cache_hit"]
    before = _metrics(served)
    code, out = served.call("POST", PREDICT, {"instances": [inst, {**inst, "top_k": 2}]})
    assert code == 200 and len(full_path) == 1  # answered without KServe's model call
    hit = out["predictions"][0]
    assert (
        hit.keys() == miss.keys() and hit["cache_hit"] and hit["request_id"] != miss["request_id"]
    )
    assert [r["capability_id"] for r in hit["rankings"]] == [
        r["capability_id"] for r in miss["rankings"]
    ]
    assert [r["score"] for r in hit["rankings"]] == pytest.approx(
        [r["score"] for r in miss["rankings"]], abs=2e-6
    )
    assert len(out["predictions"][1]["rankings"]) == 2
    after = _metrics(served)  # two rankings, one KServe request, as the full path counts
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2, 2, 1, 1, 1]
    code, fb = served.call(
        "POST", "/v1/feedback",
        {"request_id": hit["request_id"], "outcome": "success", "execution_time_ms": 5,
         "selected_capability": hit["rankings"][0]["capability_id"]},
    )  # fmt: skip
    assert code == 200 and fb["status"] == "stored"  # the served-ranking store has it


def test_hit_response_bytes_headers_and_correlation_id(served: Served, full_path):
    body = json.dumps({"instances": [{"intent": "bytes on the wire", "top_k": 3}]}).encode()
    headers = {"content-type": "application/json", "x-request-id": "corr-7"}
    miss = _raw(served, body, headers)
    hit = _raw(served, body, headers, chunked=True)  # a chunked body is read whole too
    assert len(full_path) == 1 and miss[0] == hit[0] == 200
    assert miss[1]["content-type"] == hit[1]["content-type"] == "application/json"
    assert int(hit[1]["content-length"]) == len(hit[2])
    a, b = json.loads(miss[2])["predictions"][0], json.loads(hit[2])["predictions"][0]
    assert a["client_request_id"] == b["client_request_id"] == "corr-7"
    assert (a["rankings"], a["cache_hit"], b["cache_hit"]) == (b["rankings"], False, True)


BAD_HIT = [
    ({"instances": [{"intent": "cached", "extra": 1}]}, {}, "extra"),
    ({"instances": [{"intent": "cached"}], "more": 1}, {}, "more"),
    ({"instances": []}, {}, "instances"),
    ({"instances": [{"intent": "cached"}]}, {"x-request-id": "a\tb"}, "x-request-id"),
]


@pytest.mark.parametrize(("body", "headers", "field"), BAD_HIT)
def test_a_bad_call_with_cached_intents_is_refused_by_the_full_path_once(
    served: Served, full_path, body, headers, field
):
    served.rank({"intent": "cached"})
    rejected, n = served.metric("caprank_rank_rejected_total"), len(full_path)
    code, out = served.call("POST", PREDICT, body, headers=headers)
    assert code == 400 and field in out["error"], out
    assert len(full_path) == n + 1  # the full path answered it, as before
    assert served.metric("caprank_rank_rejected_total") == rejected + 1  # counted once


def test_unknown_candidates_on_a_hit_get_kserves_400(served: Served, full_path):
    ids = [*list(served.runtime.engine.catalog.ids)[:3], "no-such-cap"]
    full = served.call(
        "POST", PREDICT, {"instances": [{"intent": "not cached", "candidate_ids": ids}]}
    )
    served.rank({"intent": "refused while ranking"})  # cached from now on
    rejected, n = (
        served.metric("caprank_rank_rejected_total", field="candidate_ids"),
        len(full_path),
    )
    hit = served.call(
        "POST", PREDICT, {"instances": [{"intent": "refused while ranking", "candidate_ids": ids}]}
    )
    assert len(full_path) == n and full == hit  # answered here, as KServe's handler does
    assert hit[0] == 400 and "no-such-cap" in hit[1]["error"]
    assert hit[1]["error"].startswith("field 'instances[0].candidate_ids'")
    after = served.metric("caprank_rank_rejected_total", field="candidate_ids")
    assert after == rejected + 1


def test_unusual_calls_take_the_full_path(served: Served, full_path):
    body = json.dumps({"instances": [{"intent": "unusual"}]}).encode()
    assert _raw(served, body, {"content-type": "application/json"})[0] == 200  # cached now
    n = len(full_path)
    code, _, _ = _raw(served, body, {"content-type": "text/plain"})
    assert code == 400 and len(full_path) == n + 1  # KServe hands the raw body over
    ce = {"content-type": "application/json", "ce-specversion": "1.0", "ce-source": "t",
          "ce-type": "t", "ce-id": "1"}  # fmt: skip
    code, _, _ = _raw(served, body, ce)
    assert code == 200 and len(full_path) == n + 2  # a CloudEvent: KServe unwraps it
    v2 = {"inputs": [{"name": "request", "datatype": "BYTES", "shape": [1],
                      "data": [json.dumps({"intent": "unusual"})]}]}  # fmt: skip
    assert served.call("POST", "/v2/models/caprank/infer", v2)[0] == 200
    assert len(full_path) == n + 3  # V2 is not answered here
    served.model.ready = False  # stopped (unloaded): KServe's own answer
    try:
        assert served.call("POST", PREDICT, {"instances": [{"intent": "unusual"}]})[0] == 503
    finally:
        served.model.ready = True
    assert served.call("POST", "/v1/models/other:predict", {"instances": [{}]})[0] == 404
