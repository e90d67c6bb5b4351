"""Issue 13's findings on the control plane and on abuse, one test each, over HTTP.

Control: the admin routes need the bearer token (404 when none is configured, 401 on a
wrong one), models load only from the registry or an allow-listed root with one answer
for missing and forbidden paths, KServe's model-repository extension is off unless
configured, and the probes fail once the model is gone. Abuse: bounded instances, a
queue with a deadline that cached requests skip, per-client rate limits, and every
accepted-wrongly input a 4xx naming its field; 5xx never carry exception text.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from caprank.online.admission import Admission
from caprank.online.guards import TokenBuckets
from caprank.online.models import save_dense_model
from tests.serving_fixtures import Served, kserve_server, start_served

PREDICT = "/v1/models/caprank:predict"
UNLOAD = "/v2/repository/models/caprank/unload"


@pytest.fixture(scope="module")
def served(tiny_cfg, tiny_dataset, tmp_path_factory):
    s = start_served(tiny_cfg, tiny_dataset, tmp_path_factory.mktemp("serving-sec"), publish=False)
    yield s
    s.close()


def _bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


# ---------------------------------------------------------------- control plane


def test_admin_routes_are_404_without_a_configured_token(served: Served, monkeypatch):
    monkeypatch.setattr(served.cfg.serving, "admin_token_env", "CAPRANK_NO_SUCH_TOKEN_VAR")
    monkeypatch.delenv("CAPRANK_NO_SUCH_TOKEN_VAR", raising=False)
    calls = [("GET", "/admin/status"), ("POST", "/admin/feedback/compact"),
             ("POST", "/admin/canary/promote"), ("DELETE", "/admin/canary")]  # fmt: skip
    for method, path in calls:
        assert served.call(method, path)[0] == 404, path


def test_admin_routes_need_the_bearer_token(served: Served):
    assert served.call("GET", "/admin/status", headers={"authorization": None})[0] == 401
    assert served.call("GET", "/admin/status", headers=_bearer("wrong"))[0] == 401
    code, _ = served.call("POST", "/admin/models/primary", {"ref": "dense", "version": "x"},
                          headers={"authorization": "Basic dXNlcjpwdw=="})  # fmt: skip
    assert code == 401 and served.rank({"intent": "who serves"})["model_version"] == "dense"
    assert served.call("GET", "/admin/status")[0] == 200  # the fixture sends the right one


def test_admin_loads_only_from_the_registry_or_an_allowed_root(served: Served, tmp_path):
    model_dir = save_dense_model(tmp_path / "m", served.cfg.embedding.text_model)
    answers = {}
    for ref in (str(model_dir), "/etc", "/no/such/dir", "../../..", "~"):
        code, out = served.call("POST", "/admin/models/primary", {"ref": ref})
        assert code == 400 and "field 'ref'" in out["error"], (ref, out)
        answers[ref] = out["error"].replace(ref, "<ref>")
    assert len(set(answers.values())) == 1  # one answer: nothing says which paths exist
    try:
        served.cfg.serving.model_roots = [str(tmp_path)]
        body = {"ref": str(model_dir), "version": "from-root"}
        code, out = served.call("POST", "/admin/models/primary", body)
        assert (code, out) == (200, {"primary": "from-root"})
        code, out = served.call("POST", "/admin/models/primary", {"ref": str(tmp_path / "none")})
        assert code == 400 and "field 'ref'" in out["error"]
    finally:
        served.cfg.serving.model_roots = []
        served.runtime.swap("dense", "dense")


def test_admin_load_failure_hides_the_reason(served: Served):
    code, out = served.call("POST", "/admin/models/primary", {"ref": "no-such-alias"})
    assert code == 422 and out["error"] == (
        "could not load model 'no-such-alias' (the server log has the reason)"
    )


def test_model_repository_extension_is_off_by_default(served: Served):
    assert served.call("POST", UNLOAD)[0] == 404
    assert served.call("POST", UNLOAD, headers=_bearer("test-admin-token-0123456789"))[0] == 404
    assert served.call("POST", "/v2/repository/models/caprank/load")[0] == 404
    assert served.rank({"intent": "still served"})["model_version"] == "dense"
    assert served.call("GET", "/v2/health/ready")[0] == 200


def test_repository_rpcs_are_refused_when_off(served: Served):
    """The extension object itself refuses (what gRPC's RPCs reach, with no token)."""
    extension = kserve_server()[0].model_repository_extension
    with pytest.raises(NotImplementedError):
        asyncio.run(extension.unload("caprank"))
    assert served.rank({"intent": "still here"})["model_version"] == "dense"


def test_repository_extension_cannot_be_on_with_grpc(capsys):
    from serving.__main__ import main

    with pytest.raises(SystemExit):
        main(["--enable_grpc", "true", "--set", "serving.model_repository=true"])
    assert "gRPC carries no admin token" in capsys.readouterr().err


def test_unloaded_model_fails_readiness_and_liveness(served: Served):
    server, model = kserve_server()[0], served.model
    served.cfg.serving.model_repository = True
    try:
        assert served.call("POST", UNLOAD)[0] == 401  # on, but still behind the token
        code, _ = served.call("POST", UNLOAD, headers=_bearer("test-admin-token-0123456789"))
        assert code == 200
        assert served.call("GET", "/v2/health/ready")[0] == 503
        assert served.call("GET", "/v2/health/live")[0] == 503  # Kubernetes restarts it
        assert served.call("GET", "/v2/models/caprank/ready")[0] == 503
        assert served.call("POST", PREDICT, {"instances": [{"intent": "x"}]})[0] >= 400
    finally:
        served.cfg.serving.model_repository = False
        cfg = served.cfg.serving
        model.predictor.admission = Admission(cfg.worker_threads, cfg.max_queued_requests, 10.0)
        model.load()
        server.register_model(model)
    assert served.call("GET", "/v2/health/ready")[0] == 200
    assert served.call("GET", "/v2/health/live")[0] == 200


# ------------------------------------------------------------------------ abuse


def test_instances_per_request_are_bounded_by_config(served: Served):
    n = served.cfg.serving.max_instances + 1
    code, out = served.call("POST", PREDICT, {"instances": [{"intent": "x"}] * n})
    assert code == 400 and "instances" in out["error"] and "serving.max_instances" in out["error"]
    texts = [json.dumps({"intent": "x"})] * n
    body = {"inputs": [{"name": "request", "datatype": "BYTES", "shape": [n], "data": texts}]}
    code, out = served.call("POST", "/v2/models/caprank/infer", body)
    assert code == 400 and "serving.max_instances" in out["error"]


class SlowEncode:
    """The real encoder behind a delay: a cache miss that takes ``delay_s``."""

    def __init__(self, encoder, delay_s: float):
        self.encoder, self.delay_s, self.saved = encoder, delay_s, None

    def __enter__(self):
        enc = self.encoder
        self.saved = (enc._encode, enc._batching)
        real = enc._encode

        def slow(texts, model):
            time.sleep(self.delay_s)
            return real(texts, model)

        enc._encode, enc._batching = slow, False
        return self

    def __exit__(self, *exc):
        self.encoder._encode, self.encoder._batching = self.saved


def _wait_idle(admission: Admission, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while admission.pending and time.monotonic() < deadline:
        time.sleep(0.02)


def test_cache_hits_answer_while_misses_fill_the_queue(served: Served):
    model, engine = served.model, served.runtime.engine
    served.rank({"intent": "a cached intent"})
    saved, model.predictor.admission = model.predictor.admission, Admission(1, 1, 10.0)
    results = {}
    try:
        with SlowEncode(engine.encoder, 1.5):
            miss = {"instances": [{"intent": "an uncached heavy intent"}]}
            heavy = threading.Thread(
                target=lambda: results.setdefault("heavy", served.call("POST", PREDICT, miss))
            )
            heavy.start()
            deadline = time.monotonic() + 5
            while model.predictor.admission.pending < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            code, out = served.call("POST", PREDICT, {"instances": [{"intent": "another miss"}]})
            assert code == 503 and "serving.max_queued_requests" in out["error"]
            t0 = time.perf_counter()
            pred = served.rank({"intent": "a cached intent"})
            assert time.perf_counter() - t0 < 0.5 and pred["cache_hit"] is True
            heavy.join(10)
        assert results["heavy"][0] == 200
    finally:
        _wait_idle(model.predictor.admission)
        model.predictor.admission.close()
        model.predictor.admission = saved


def test_a_request_past_its_deadline_is_503(served: Served):
    model = served.model
    saved, model.predictor.admission = model.predictor.admission, Admission(1, 4, 0.3)
    try:
        with SlowEncode(served.runtime.engine.encoder, 1.0):
            code, out = served.call("POST", PREDICT, {"instances": [{"intent": "too slow"}]})
            assert code == 503 and "serving.request_timeout_s" in out["error"]
            _wait_idle(model.predictor.admission)
    finally:
        model.predictor.admission.close()
        model.predictor.admission = saved


def test_rate_limits_per_client_on_predict_and_feedback(served: Served):
    limits = served.cfg.serving.rate_limit
    limits.predict_per_s, limits.predict_burst = 0.5, 2
    limits.feedback_per_s, limits.feedback_burst = 0.5, 1
    limits.client_header = "x-forwarded-for"
    me = {"x-forwarded-for": "203.0.113.7"}
    body = {"instances": [{"intent": "rate me"}]}
    try:
        assert [served.call("POST", PREDICT, body, headers=me)[0] for _ in range(2)] == [200, 200]
        code, out = served.call("POST", PREDICT, body, headers=me)
        assert code == 429 and "serving.rate_limit.predict_per_s" in out["error"]
        other = {"x-forwarded-for": "198.51.100.9, 10.0.0.1"}
        assert served.call("POST", PREDICT, body, headers=other)[0] == 200  # its own bucket
        fb = {"request_id": "nope", "selected_capability": "x", "outcome": "success",
              "execution_time_ms": 1.0}  # fmt: skip
        assert served.call("POST", "/v1/feedback", fb, headers=me)[0] == 404
        code, out = served.call("POST", "/v1/feedback", fb, headers=me)
        assert code == 429 and "serving.rate_limit.feedback_per_s" in out["error"]
    finally:
        limits.predict_per_s = limits.feedback_per_s = 0.0
        limits.client_header = ""


def test_token_bucket_refills_and_says_when():
    now = [0.0]
    buckets = TokenBuckets(lambda: now[0])
    assert [buckets.take(("p", "a"), 2.0, 2, 10) for _ in range(2)] == [0.0, 0.0]
    assert buckets.take(("p", "a"), 2.0, 2, 10) == pytest.approx(0.5)
    now[0] = 0.5
    assert buckets.take(("p", "a"), 2.0, 2, 10) == 0.0
    for i in range(5):  # past max_keys the least recently seen client is forgotten
        buckets.take(("p", f"c{i}"), 2.0, 2, 3)
    assert len(buckets._buckets) == 3


ACCEPTED_WRONGLY = [
    (PREDICT, {"instances": [{"intent": "x"}], "extra": 1}, "extra"),
    (PREDICT, {"instances": [{"intent": "\u200b\u200c\u200d\u2060\ufeff"}]}, "instances[0].intent"),
    (PREDICT, {"instances": [{"intent": "x", "request_id": "a\r\nSet-Cookie: x"}]},
     "instances[0].request_id"),
    (PREDICT, {"instances": [{"intent": "x", "user_id": "u\n1"}]}, "instances[0].user_id"),
    ("/v2/models/caprank/infer", {"id": "r\r\n1", "inputs": [{"name": "request",
     "datatype": "BYTES", "shape": [1], "data": ['{"intent": "x"}']}]}, "'id'"),
    ("/v2/models/caprank/infer", {"inputs": [{"name": "request", "datatype": "BYTES",
     "shape": [5], "data": ['{"intent": "x"}']}]}, "inputs[0].shape"),
]  # fmt: skip


@pytest.mark.parametrize("path,body,field", ACCEPTED_WRONGLY)
def test_accepted_wrongly_is_now_400_naming_the_field(served: Served, path, body, field):
    code, out = served.call("POST", path, body)
    assert code == 400 and field in out["error"], out


def test_huge_top_k_gets_the_range_message(served: Served):
    raw = b'{"instances": [{"intent": "x", "top_k": 1180591620717411303424}]}'
    code, out = served.call("POST", PREDICT, raw=raw)
    assert code == 400 and "instances[0].top_k" in out["error"], out
    assert "between 1 and" in out["error"]


def test_feedback_execution_time_is_bounded(served: Served):
    pred = served.rank({"intent": "time me"})
    body = {"request_id": pred["request_id"], "outcome": "success", "execution_time_ms": 1e308,
            "selected_capability": pred["rankings"][0]["capability_id"]}  # fmt: skip
    code, out = served.call("POST", "/v1/feedback", body)
    assert code == 400 and "execution_time_ms" in out["error"]
    code, out = served.call("POST", "/v1/feedback", {**body, "request_id": "a\rb"})
    assert code == 400 and "request_id" in out["error"]


def test_get_on_predict_is_405(served: Served):
    code, out = served.call("GET", PREDICT)
    assert code == 405 and "does not exist" not in out["error"]
    assert served.call("GET", "/v2/models/caprank/infer")[0] == 405


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "inf"])
def test_bad_window_param_is_400(served: Served, value):
    code, out = served.call("GET", f"/admin/canary/metrics?version=dense&window_s={value}")
    assert code == 400 and "window_s" in out["error"]


def test_unhandled_error_is_500_without_its_text(served: Served, monkeypatch):
    def boom():
        raise RuntimeError("secret detail /var/lib/caprank")

    monkeypatch.setattr(served.runtime, "status", boom)
    code, out = served.call("GET", "/admin/status")
    assert code == 500 and "secret" not in json.dumps(out) and "RuntimeError" not in json.dumps(out)
