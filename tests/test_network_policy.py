"""The ranker's NetworkPolicy (manifests/base/networkpolicy.yaml), read as plain YAML so
the check runs without kubectl: it selects the InferenceService's pods by the label
KServe puts on them, admits only the predictor's port, and only from the namespace, the
ingress and the pipeline's deploy step."""

from __future__ import annotations

from pathlib import Path

import yaml

from caprank.config import load_config

BASE = Path(__file__).resolve().parents[1] / "manifests" / "base"
ISVC_LABEL = "serving.kserve.io/inferenceservice"  # KServe labels predictor pods with it


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]


def _policy() -> dict:
    docs = _docs("networkpolicy.yaml")
    assert len(docs) == 1
    return docs[0]


def test_network_policy_selects_the_inference_service_pods():
    policy = _policy()
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["kind"] == "NetworkPolicy"
    (isvc,) = [d for d in _docs("inferenceservice.yaml") if d["kind"] == "InferenceService"]
    name = isvc["metadata"]["name"]
    assert name == load_config().services.inference_service
    assert policy["spec"]["podSelector"] == {"matchLabels": {ISVC_LABEL: name}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert "networkpolicy.yaml" in kustomization["resources"]


def test_network_policy_admits_only_the_serving_port_from_known_sources():
    (rule,) = _policy()["spec"]["ingress"]
    (runtime,) = [d for d in _docs("servingruntime.yaml") if d["kind"] == "ServingRuntime"]
    container = runtime["spec"]["containers"][0]
    port = container["ports"][0]["containerPort"]
    assert f"--http_port={port}" in container["args"]
    assert port == load_config().canary.metrics_port  # the controller scrapes that port
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]
    sources = rule["from"]
    assert {"podSelector": {}} in sources  # the namespace itself
    (by_namespace,) = [s for s in sources if "namespaceSelector" in s]
    assert set(by_namespace) == {"namespaceSelector"}  # not "any pod in those namespaces" AND
    (expr,) = by_namespace["namespaceSelector"]["matchExpressions"]
    assert expr["key"] == "kubernetes.io/metadata.name" and expr["operator"] == "In"
    assert "kubeflow" in expr["values"]  # the deploy step reads the pods' /metrics
    assert {"knative-serving", "istio-system"} <= set(expr["values"])  # the ingress
    assert all(not s.get("ipBlock") for s in sources)  # nothing from outside the cluster


def test_the_rollout_role_may_list_pods_for_their_metrics():
    (role,) = [d for d in _docs("rbac.yaml") if d["kind"] == "Role"]
    pods = [r for r in role["rules"] if r["resources"] == ["pods"]]
    assert pods == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
