"""A FAKE of the KServe InferenceService REST API (and Prometheus's query API, and a pod
list) on loopback.

This is not KServe: it stores one InferenceService, applies JSON merge patches the way
the API server does (generation bumps on spec changes), admits a patched object only if
KServe's CRD schema and canary webhook rules accept it (``kserve_schema``, 422
otherwise, as the API server answers), and on each GET plays a tiny
reconciler that marks a new generation ready after a few polls, or never, or failed,
depending on the model URI. The real kubernetes client talks to it over HTTP, so the
rollout controller's requests, patches and status reading are exercised end to end.
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kserve_schema import crd_errors, webhook_errors
from kubernetes import client as k8s

PREFIX = "/apis/serving.kserve.io/v1beta1/namespaces/"


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Scenario:
    """How the fake cluster behaves for a given model URI."""

    ready_after_polls: int = 2
    failing_uris: set[str] = field(default_factory=set)  # model load fails
    stuck_uris: set[str] = field(default_factory=set)  # never becomes ready
    prometheus: dict[str, float | None] = field(default_factory=dict)


def inference_service(name: str, namespace: str, uri: str, mode: str) -> dict:
    """A ready InferenceService serving ``uri`` (as the cluster would report it)."""
    annotations = {"serving.kserve.io/deploymentMode": mode}
    obj = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generation": 1,
            "annotations": annotations,
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 4,  # as manifests/base: what a canary must not copy
                "scaleMetric": "concurrency",
                "scaleTarget": 8,
                "model": {
                    "modelFormat": {"name": "caprank"},
                    "runtime": "caprank-ranker",
                    "storageUri": uri,
                },
            }
        },
        "status": {},
    }
    return obj


class FakeCluster:
    """One InferenceService behind a loopback HTTP server speaking the k8s API."""

    def __init__(self, isvc: dict, scenario: Scenario | None = None):
        self.obj = copy.deepcopy(isvc)
        self.scenario = scenario or Scenario()
        self.lock = threading.Lock()
        self.patches: list[dict] = []
        self.rejected: list[list[str]] = []  # what admission refused, per refused patch
        self.content_types: list[str] = []
        self.queries: list[str] = []
        self.pods: list[tuple[str, str]] = []  # (name, IP) listed as Running predictor pods
        self.pod_selectors: list[str] = []
        self.revision = 1
        self.polls_since_change = 0
        self.stable_revision = self._rev_name(1)
        self._reconcile(force=True)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> FakeCluster:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def api(self) -> k8s.CustomObjectsApi:
        conf = k8s.Configuration()
        conf.host = self.url
        return k8s.CustomObjectsApi(k8s.ApiClient(conf))

    @property
    def spec_patches(self) -> list[dict]:
        return [p["spec"] for p in self.patches if "spec" in p]

    # ----------------------------------------------------------------- reconciler
    def _rev_name(self, n: int) -> str:
        return f"{self.obj['metadata']['name']}-predictor-{n:05d}"

    def _mode(self) -> str:
        mode = self.obj["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
        return "standard" if mode in ("Standard", "RawDeployment") else "serverless"

    def _healthy(self, uri: str | None) -> str:
        if uri in self.scenario.failing_uris:
            return "failed"
        if uri in self.scenario.stuck_uris:
            return "stuck"
        return "ok"

    def _reconcile(self, force: bool = False) -> None:
        meta, status = self.obj["metadata"], self.obj.setdefault("status", {})
        if not force and status.get("observedGeneration") == meta["generation"]:
            return
        self.polls_since_change += 1
        if not force and self.polls_since_change < self.scenario.ready_after_polls:
            return
        spec = self.obj["spec"]
        predictor = spec["predictor"]
        uri = predictor.get("model", {}).get("storageUri")
        health = self._healthy(uri)
        status["observedGeneration"] = meta["generation"]
        status["deploymentMode"] = "Standard" if self._mode() == "standard" else "Knative"
        ready = health == "ok"
        canary_statuses = []
        if self._mode() == "standard":
            for entry in spec.get("canary") or []:
                c_health = self._healthy(entry["predictor"]["model"]["storageUri"])
                item = {
                    "name": entry["predictor"]["name"],
                    "ready": c_health == "ok",
                    "trafficPercent": entry["trafficPercent"],
                }
                if c_health == "failed":
                    item["modelStatus"] = {
                        "transitionStatus": "BlockedByFailedLoad",
                        "lastFailureInfo": {"message": "model failed to load"},
                    }
                canary_statuses.append(item)
            status["canaryStatuses"] = canary_statuses
        else:
            pred = status.setdefault("components", {}).setdefault("predictor", {})
            if pred.get("_uri") != uri:
                self.revision += 1 if pred.get("_uri") is not None else 0
                pred["_uri"] = uri
            latest = self._rev_name(self.revision)
            pred["latestCreatedRevision"] = latest
            if ready:
                pred["latestReadyRevision"] = latest
                if predictor.get("canaryTrafficPercent") is None:
                    self.stable_revision = latest
            pred["latestRolledoutRevision"] = self.stable_revision
        status["modelStatus"] = (
            {
                "transitionStatus": "BlockedByFailedLoad",
                "lastFailureInfo": {"message": "model failed to load"},
            }
            if health == "failed"
            else {"transitionStatus": "UpToDate" if ready else "InProgress"}
        )
        flag = "True" if ready else "False"
        status["conditions"] = [
            {"type": "PredictorReady", "status": flag, "message": "" if ready else "waiting"},
            {"type": "Ready", "status": flag},
        ]

    def _public(self) -> dict:
        obj = copy.deepcopy(self.obj)
        obj.get("status", {}).get("components", {}).get("predictor", {}).pop("_uri", None)
        return obj

    # ----------------------------------------------------------------- HTTP
    def _handler(self):
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _target(self) -> bool:
                meta = cluster.obj["metadata"]
                want = f"{PREFIX}{meta['namespace']}/inferenceservices/{meta['name']}"
                return self.path.split("?")[0] == want

            def do_GET(self) -> None:
                parsed = urllib.parse.urlparse(self.path)
                if parsed.path == "/api/v1/query":
                    query = urllib.parse.parse_qs(parsed.query)["query"][0]
                    self._send(200, cluster._prometheus(query))
                    return
                ns = cluster.obj["metadata"]["namespace"]
                if parsed.path == f"/api/v1/namespaces/{ns}/pods":
                    selector = urllib.parse.parse_qs(parsed.query).get("labelSelector", [""])[0]
                    cluster.pod_selectors.append(selector)
                    self._send(200, cluster._pod_list())
                    return
                if not self._target():
                    self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return
                with cluster.lock:
                    cluster._reconcile()
                    self._send(200, cluster._public())

            def do_PATCH(self) -> None:
                if not self._target():
                    self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return
                ctype = self.headers.get("Content-Type", "")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if ctype != "application/merge-patch+json":
                    self._send(415, {"kind": "Status", "code": 415, "message": ctype})
                    return
                with cluster.lock:
                    cluster.content_types.append(ctype)
                    cluster.patches.append(body)
                    before = copy.deepcopy(cluster.obj["spec"])
                    patched = merge_patch(cluster.obj, body)
                    admitted = {k: v for k, v in patched.items() if k != "status"}
                    errors = crd_errors(admitted) + webhook_errors(admitted)
                    if errors:
                        cluster.rejected.append(errors)
                        message = "admission webhook denied the request: " + "; ".join(errors)
                        self._send(422, {"kind": "Status", "code": 422, "message": message})
                        return
                    patched["status"] = cluster.obj.get("status", {})
                    cluster.obj = patched
                    if patched["spec"] != before:
                        patched["metadata"]["generation"] += 1
                        cluster.polls_since_change = 0
                    self._send(200, cluster._public())

        return Handler

    def _pod_list(self) -> dict:
        items = [
            {"metadata": {"name": name}, "status": {"phase": "Running", "podIP": ip}}
            for name, ip in self.pods
        ]
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}

    def core(self) -> k8s.CoreV1Api:
        conf = k8s.Configuration()
        conf.host = self.url
        return k8s.CoreV1Api(k8s.ApiClient(conf))

    def _prometheus(self, query: str) -> dict:
        self.queries.append(query)
        if "histogram_quantile" in query:
            value = self.scenario.prometheus.get("p99_latency_ms")
        elif 'status="error"' in query:
            value = self.scenario.prometheus.get("error_rate")
        else:
            value = self.scenario.prometheus.get("requests")
        result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}
