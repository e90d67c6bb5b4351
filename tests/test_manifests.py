"""Kustomize overlays render, validate against Kubernetes 1.32 schemas (kind's version)
and KServe's typed models, and place the predictor as each environment needs."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from k8s_typed import to_model
from kserve_schema import crd_errors, kserve_errors, vendored, webhook_errors

from caprank.config import load_config

ROOT = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.32.0"  # kindest/node:v1.32.2 in kind-cluster.yaml
OVERLAYS = ("kind", "gpu", "kind-canary", "gpu-canary")
PIPELINE_ENV = "pipeline-env"  # manifests/pipeline-env: what every pipeline pod reads
KSERVE_MODELS = {
    "InferenceService": "V1beta1InferenceService",
    "ServingRuntime": "V1alpha1ServingRuntime",
}
CFG = load_config()
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize) not installed")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Render each overlay from a copy whose secret env files come from the examples,
    exactly as docs/cluster.md tells a user to do."""
    work = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(ROOT / "manifests", work)
    for example in work.rglob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    out = {}
    for name in (*OVERLAYS, PIPELINE_ENV):
        where = work / name if name == PIPELINE_ENV else work / "overlays" / name
        res = subprocess.run(
            [KUBECTL, "kustomize", str(where)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, f"{name}: {res.stderr}"
        out[name] = [d for d in yaml.safe_load_all(res.stdout) if d]
    return out


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(rendered, overlay):
    docs = rendered[overlay]
    kinds = {d["kind"] for d in docs}
    assert {"InferenceService", "ServingRuntime", "Deployment", "Role", "Secret"} <= kinds
    for doc in docs:
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "PrometheusRule":  # the Prometheus Operator's CRD: test_alerts.py
            assert doc["metadata"].get("namespace") == CFG.services.kube_namespace, where
            continue
        if doc["kind"] in KSERVE_MODELS:
            model = to_model(doc, KSERVE_MODELS[doc["kind"]], where)
            assert model.metadata.name and model.spec is not None
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == CFG.services.kube_namespace, where


def _isvc(docs):
    return one(docs, "InferenceService", CFG.services.inference_service)


def test_gpu_overlay_puts_the_predictor_on_the_gpu_pool(rendered):
    pred = _isvc(rendered["gpu"])["spec"]["predictor"]
    assert pred["nodeSelector"] == CFG.pipeline.gpu_node_selector
    assert {
        "key": CFG.pipeline.gpu_toleration_key,
        "operator": "Exists",
        "effect": CFG.pipeline.gpu_toleration_effect,
    } in pred["tolerations"]
    limits = pred["model"]["resources"]["limits"]
    assert limits[CFG.pipeline.gpu_accelerator] == "1"
    assert (
        _isvc(rendered["gpu"])["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        == "Knative"  # KServe 0.21's name; "Serverless" is deprecated
    )
    runtime = one(rendered["gpu"], "ServingRuntime", "caprank-ranker")
    assert runtime["spec"]["containers"][0]["image"].endswith("-gpu")


@pytest.mark.parametrize("overlay", ["kind", "kind-canary"])
def test_kind_overlay_is_cpu_only(rendered, overlay):
    isvc = _isvc(rendered[overlay])
    text = yaml.safe_dump(rendered[overlay])
    assert "nvidia.com/gpu" not in text
    assert "nodeSelector" not in isvc["spec"]["predictor"]
    assert "tolerations" not in isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    names = {d["metadata"]["name"] for d in rendered[overlay]}
    assert {"minio", "redis", "postgres", "minio-buckets"} <= names


def test_probes_and_autoscaling_bounds(rendered):
    for overlay in OVERLAYS:
        docs = rendered[overlay]
        container = one(docs, "ServingRuntime", "caprank-ranker")["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert container["securityContext"]["runAsNonRoot"] is True
        pred = _isvc(docs)["spec"]["predictor"]
        assert 1 <= pred["minReplicas"] <= pred["maxReplicas"]
        assert pred["scaleMetric"] and pred["scaleTarget"] > 0
        for dep in (d for d in docs if d["kind"] == "Deployment"):
            for c in dep["spec"]["template"]["spec"]["containers"]:
                assert "readinessProbe" in c and "livenessProbe" in c, dep["metadata"]["name"]


def test_admin_token_comes_from_an_optional_secret(rendered):
    """The predictor reads the admin token from the Secret caprank-admin; without it the
    pod still starts (optional) and the admin routes stay off (docs/security.md)."""
    for overlay in OVERLAYS:
        container = one(rendered[overlay], "ServingRuntime", "caprank-ranker")["spec"][
            "containers"
        ][0]
        env = {e["name"]: e for e in container["env"]}
        ref = env[CFG.serving.admin_token_env]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "caprank-admin", "key": "token", "optional": True}
        assert not any(d["kind"] == "Secret" and d["metadata"]["name"] == "caprank-admin"
                       for d in rendered[overlay])  # fmt: skip


def test_canary_forms_match_what_the_controller_patches(rendered):
    percent = CFG.canary.traffic_percent
    serverless = _isvc(rendered["gpu-canary"])["spec"]
    assert serverless["predictor"]["canaryTrafficPercent"] == percent
    assert "canary" not in serverless
    standard = _isvc(rendered["kind-canary"])["spec"]
    entry = standard["canary"][0]
    assert entry["trafficPercent"] == percent
    stable, candidate = standard["predictor"], entry["predictor"]
    assert candidate["name"] and candidate["name"] != stable.get("name")
    assert candidate["model"]["storageUri"] != stable["model"]["storageUri"]
    assert candidate["model"]["runtime"] == stable["model"]["runtime"]
    assert candidate["serviceAccountName"] == stable["serviceAccountName"]
    # the declarative form is exactly what the controller builds from the same predictor
    from caprank.deploy.kserve import canary_predictor

    uri = candidate["model"]["storageUri"]
    assert candidate == canary_predictor(stable, candidate["name"], uri)


def test_s3_secret_wiring_and_rbac(rendered):
    docs = rendered["kind"]
    sa = one(docs, "ServiceAccount", "caprank-serving")
    assert _isvc(docs)["spec"]["predictor"]["serviceAccountName"] == "caprank-serving"
    secret_name = sa["secrets"][0]["name"]
    secret = one(docs, "Secret", secret_name)
    notes = secret["metadata"]["annotations"]
    assert notes["serving.kserve.io/s3-endpoint"].endswith(":9000")
    assert {"serving.kserve.io/s3-usehttps", "serving.kserve.io/s3-region"} <= set(notes)
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["data"])
    role = one(docs, "Role", "caprank-rollout")
    rule = next(r for r in role["rules"] if "inferenceservices" in r["resources"])
    assert {"get", "patch"} <= set(rule["verbs"]) and rule["apiGroups"] == ["serving.kserve.io"]
    binding = one(docs, "RoleBinding", "caprank-rollout")
    subjects = {(s["namespace"], s["name"]) for s in binding["subjects"]}
    assert ("kubeflow", "pipeline-runner") in subjects


def test_no_credentials_are_committed():
    tracked = subprocess.run(
        ["git", "ls-files", "manifests"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert not [f for f in tracked if f.endswith(".env")]
    assert any(f.endswith("s3.env.example") for f in tracked)
    assert any(f.endswith("pipeline-env/secrets/credentials.env.example") for f in tracked)
    for path in tracked:
        for doc in yaml.safe_load_all((ROOT / path).read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                pytest.fail(f"{path} holds a Secret object")
    for env_file in ("base/secrets/s3.env", "pipeline-env/secrets/credentials.env"):
        ignored = subprocess.run(["git", "check-ignore", "-q", f"manifests/{env_file}"], cwd=ROOT)
        assert ignored.returncode == 0, env_file


def test_kind_cluster_has_the_labelled_and_tainted_gpu_worker():
    cluster = yaml.safe_load((ROOT / "kind-cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster" and cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in cluster["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 2
    gpu = [
        n
        for n in cluster["nodes"]
        if all(n.get("labels", {}).get(k) == v for k, v in CFG.pipeline.gpu_node_selector.items())
    ]
    assert len(gpu) == 1 and gpu[0]["role"] == "worker"
    join = [yaml.safe_load(p) for p in gpu[0]["kubeadmConfigPatches"]]
    taints = [
        t for p in join if p["kind"] == "JoinConfiguration" for t in p["nodeRegistration"]["taints"]
    ]
    assert {
        "key": CFG.pipeline.gpu_toleration_key,
        "value": "present",
        "effect": CFG.pipeline.gpu_toleration_effect,
    } in taints
    others = [n for n in cluster["nodes"] if n is not gpu[0]]
    assert all("kubeadmConfigPatches" not in n for n in others)
    images = {n["image"] for n in cluster["nodes"]}
    assert images == {f"kindest/node:v{K8S_VERSION[:-2]}.2"}


def test_controller_patches_are_valid_kserve_objects(rendered):
    """The Standard-mode canary the controller builds from the kind overlay's predictor,
    and the predictor it promotes, pass KServe's CRD schema and webhook rules and read
    as typed ISVCs."""
    from fake_kserve import merge_patch

    from caprank.deploy.kserve import canary_predictor, canary_predictor_name, promoted_predictor

    isvc = copy.deepcopy(_isvc(rendered["kind"]))
    stable = isvc["spec"]["predictor"]
    assert {"maxReplicas", "scaleMetric", "scaleTarget"} <= set(stable)
    canary = canary_predictor(stable, canary_predictor_name(CFG.canary, "s3://m/v2"), "s3://m/v2")
    with_canary = merge_patch(
        isvc, {"spec": {"canary": [{"trafficPercent": 10, "predictor": canary}]}}
    )
    assert kserve_errors(with_canary) == []
    assert to_model(with_canary, "V1beta1InferenceService").spec.canary[0].traffic_percent == 10
    promoted = merge_patch(
        with_canary, {"spec": {"predictor": promoted_predictor(canary), "canary": None}}
    )
    assert kserve_errors(promoted) == []
    assert promoted["spec"]["predictor"]["maxReplicas"] == stable["maxReplicas"]
    assert promoted["spec"]["predictor"]["model"]["storageUri"] == "s3://m/v2"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kserve_accepts_every_overlay(rendered, overlay):
    """Against the vendored KServe CRD schemas (tests/data/kserve) with unknown fields
    refused, KServe's canary webhook rules, and no deprecated deployment mode."""
    for doc in rendered[overlay]:
        if doc["kind"] in ("InferenceService", "ServingRuntime"):
            assert kserve_errors(doc) == [], f"{overlay}: {doc['kind']}"


def test_kserve_checks_reject_what_kserve_rejects(rendered):
    """The checks can fail: the canary as components/canary-standard used to build it
    (a plain copy of the predictor), a misspelt field, a deprecated mode."""
    isvc = copy.deepcopy(_isvc(rendered["kind"]))
    plain_copy = dict(isvc["spec"]["predictor"], name="candidate")
    isvc["spec"]["canary"] = [{"trafficPercent": 10, "predictor": plain_copy}]
    errors = "\n".join(kserve_errors(isvc))
    for fragment in ("'name' is a required property", "maxReplicas", "scaleMetric"):
        assert fragment in errors
    typo = copy.deepcopy(_isvc(rendered["kind"]))
    typo["spec"]["predictor"]["canaryTraficPercent"] = 10
    assert any("canaryTraficPercent" in e for e in crd_errors(typo))
    stable_named = copy.deepcopy(_isvc(rendered["kind"]))
    stable_named["spec"]["predictor"]["model"]["name"] = "kserve-container"
    assert "not allowed in standard predictor" in "".join(kserve_errors(stable_named))
    old_mode = copy.deepcopy(_isvc(rendered["gpu"]))
    old_mode["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Serverless"
    assert kserve_errors(old_mode) == ["deploymentMode 'Serverless' is deprecated"]
    knative_canary = copy.deepcopy(_isvc(rendered["kind-canary"]))
    knative_canary["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Knative"
    assert "only supported in Standard" in "".join(webhook_errors(knative_canary))


def _sdk_fields(model_name: str) -> set[str]:
    import kserve

    return set(getattr(kserve, model_name).attribute_map.values())


def test_vendored_crd_is_the_pinned_kserve_less_three_newer_fields():
    """The vendored schema (kserve main after v0.20, see tests/data/kserve/README.md)
    against the pinned kserve 0.21 SDK: identical but for three fields our manifests do
    not use. Re-vendoring from the v0.21.0 tag makes this fail, on purpose."""
    schema = vendored("InferenceService")["versions"]["v1beta1"]["properties"]["spec"]
    predictor = schema["properties"]["predictor"]
    assert _sdk_fields("V1beta1InferenceServiceSpec") - set(schema["properties"]) == {"tracing"}
    assert _sdk_fields("V1beta1PredictorSpec") - set(predictor["properties"]) == {
        "ephemeralContainers",
        "schedulingGroup",
    }
    assert set(schema["properties"]) <= _sdk_fields("V1beta1InferenceServiceSpec")
    assert set(predictor["properties"]) <= _sdk_fields("V1beta1PredictorSpec")
    canary = schema["properties"]["canary"]["items"]
    assert set(canary["properties"]) == _sdk_fields("V1beta1CanarySpec")


def test_typed_reader_catches_misspelled_fields():
    bad = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "x"},
        "spec": {"predictor": {"canaryTraficPercent": 10}},
    }
    with pytest.raises(AssertionError, match="canaryTraficPercent"):
        to_model(bad, "V1beta1InferenceService")
    wrong_type = {
        "apiVersion": "v",
        "kind": "InferenceService",
        "metadata": {"name": "x"},
        "spec": {"predictor": {"minReplicas": "1"}},
    }
    with pytest.raises(AssertionError, match="expected int"):
        to_model(wrong_type, "V1beta1InferenceService")


def test_pipeline_env_holds_every_key_the_tasks_read(rendered):
    """The compiled pipeline attaches pipeline.config_map / pipeline.secret (not
    optional): both exist in the namespace KFP runs pods in, with every key the tasks
    read, and the endpoints they hold resolve as caprank config."""
    from caprank.config import resolve

    docs = rendered[PIPELINE_ENV]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    runner_ns = {
        s["namespace"]
        for s in one(rendered["kind"], "RoleBinding", "caprank-rollout")["subjects"]
        if s["name"] == "pipeline-runner"
    }
    cm = one(docs, "ConfigMap", CFG.pipeline.config_map)
    secret = one(docs, "Secret", CFG.pipeline.secret)
    assert {cm["metadata"]["namespace"], secret["metadata"]["namespace"]} == runner_ns
    assert set(CFG.pipeline.config_map_keys) <= set(cm["data"])
    assert set(CFG.pipeline.secret_keys) <= set(secret["data"])
    env = {k: v for k, v in cm["data"].items() if k.startswith("CAPRANK_")}
    services = resolve(environ=env).config.services
    assert services.mlflow_tracking_uri.startswith("http://mlflow.")
    assert services.feast_online_store == "redis"
    assert (
        services.kube_namespace == one(rendered["kind"], "Namespace", "caprank")["metadata"]["name"]
    )
    # cluster-wide names: the pods run in another namespace than the services
    for value in env.values():
        if "://" in value:
            assert ".svc.cluster.local" in value, value
