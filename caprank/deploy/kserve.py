"""KServe InferenceService as a rollout backend, through the kubernetes client.

Two canary forms, picked from the InferenceService's deployment mode:

- Serverless (Knative): ``spec.predictor.canaryTrafficPercent`` plus the new
  ``storageUri``; KServe splits traffic between the last rolled-out revision and the
  new one. Promote removes the percent; rollback sets it to 0, restores the old URI,
  and removes the percent once the restored revision is ready.
- Standard (formerly RawDeployment): a ``spec.canary`` entry holding a named copy of
  the predictor with the new URI (``canary_predictor``: without the autoscaling fields
  KServe forbids on a canary, with the ``model.name`` its CRD requires there); promote
  moves that predictor into ``spec.predictor`` (same name, so no restart; ``model.name``
  dropped, which KServe forbids on the stable predictor) and drops the entry; rollback
  drops the entry.

KServe 0.21 names the modes ``Knative`` and ``Standard``; the old names ``Serverless``
and ``RawDeployment`` are deprecated aliases, read here as the same modes.

Every write is one JSON merge patch that also carries the rollout record in the
``caprank.io/rollout`` annotation, so the change and its record never disagree.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from caprank.config import CanaryConfig, CaprankConfig
from caprank.deploy.backend import (
    CanaryMetrics,
    LiveModel,
    Readiness,
    ReadyCheck,
)
from caprank.deploy.guardrails import PrometheusClient, prometheus_metrics
from caprank.deploy.scrape import PodScraper, scraped_metrics
from caprank.deploy.state import RolloutState
from caprank.errors import CaprankError

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
STATE_ANNOTATION = "caprank.io/rollout"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
FAILED_TRANSITIONS = frozenset({"BlockedByFailedLoad", "InvalidSpec"})
STANDARD_NAMES = frozenset({"standard", "rawdeployment", "raw"})
# KServe's container name (constants.InferenceServiceContainerName): the model.name a
# canary predictor must carry
CONTAINER_NAME = "kserve-container"
# KServe's webhook rejects these on a canary predictor: a canary runs fixed replicas
CANARY_FORBIDDEN = frozenset(
    {"maxReplicas", "scaleMetric", "scaleMetricType", "scaleTarget", "autoScaling", "workerSpec"}
)


class KServeError(CaprankError):
    """The InferenceService cannot be read or changed as a rollout needs."""


def _conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type", ""): c for c in obj.get("status", {}).get("conditions", []) or []}


def _is_true(conds: dict[str, dict], name: str) -> bool:
    return str(conds.get(name, {}).get("status", "")).lower() == "true"


def generation_ready(obj: dict) -> bool:
    """Ready as KServe's own e2e tests judge it: the controller has observed the latest
    generation and both Ready and PredictorReady are True."""
    generation = obj.get("metadata", {}).get("generation", 0) or 0
    observed = obj.get("status", {}).get("observedGeneration", 0) or 0
    conds = _conditions(obj)
    return observed >= generation and _is_true(conds, "Ready") and _is_true(conds, "PredictorReady")


def detect_mode(obj: dict) -> str:
    """'standard' or 'serverless', from the observed status, else the annotation."""
    declared = obj.get("status", {}).get("deploymentMode") or obj.get("metadata", {}).get(
        "annotations", {}
    ).get(MODE_ANNOTATION, "")
    return "standard" if str(declared).lower() in STANDARD_NAMES else "serverless"


def canary_predictor_name(cfg: CanaryConfig, uri: str) -> str:
    """A Standard-mode canary name unique to the URI (the stable predictor may already
    carry the name a previous canary was promoted under)."""
    return f"{cfg.canary_name}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"


def canary_predictor(predictor: dict, name: str, uri: str) -> dict:
    """The Standard-mode canary for ``uri``: a copy of the stable ``predictor`` under
    ``name``, less what KServe forbids on a canary, with the model.name it requires."""
    canary = {k: copy.deepcopy(v) for k, v in predictor.items() if k not in CANARY_FORBIDDEN}
    canary["name"] = name
    model = canary.setdefault("model", {})
    model["storageUri"] = uri
    model["name"] = CONTAINER_NAME
    return canary


def promoted_predictor(canary: dict) -> dict:
    """Merge patch that makes ``canary`` the stable predictor: the stable keeps its
    autoscaling fields (absent from the canary) and loses model.name, which KServe
    forbids there."""
    patch = copy.deepcopy(canary)
    patch.setdefault("model", {})["name"] = None
    return patch


class KServeBackend:
    """Rolls a model out on one InferenceService (``services.inference_service``)."""

    def __init__(
        self,
        api: k8s.CustomObjectsApi,
        namespace: str,
        name: str,
        cfg: CanaryConfig,
        prometheus: PrometheusClient | None = None,
        pods: PodScraper | None = None,
    ):
        self.api = api
        self.namespace = namespace
        self.name = name
        self.cfg = cfg
        self.prometheus = prometheus
        self.pods = pods

    @property
    def where(self) -> str:
        return f"inferenceservice {self.namespace}/{self.name}"

    # ------------------------------------------------------------------ reading
    def _get(self) -> dict:
        try:
            return self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        except ApiException as exc:
            raise KServeError(f"{self.where}: GET failed ({exc.status} {exc.reason})") from exc

    def _patch(self, body: dict) -> dict:
        try:
            return self.api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, body
            )
        except ApiException as exc:
            raise KServeError(f"{self.where}: PATCH failed ({exc.status} {exc.reason})") from exc

    def _record(self, state: RolloutState, spec: dict | None = None) -> None:
        body: dict[str, Any] = {"metadata": {"annotations": {STATE_ANNOTATION: state.to_json()}}}
        if spec is not None:
            body["spec"] = spec
        self._patch(body)

    def _mode(self, obj: dict) -> str:
        return self.cfg.deployment_mode if self.cfg.deployment_mode != "auto" else detect_mode(obj)

    def get_state(self) -> RolloutState | None:
        text = self._get().get("metadata", {}).get("annotations", {}).get(STATE_ANNOTATION)
        if text is None:
            return None
        return RolloutState.from_json(text, f"{self.where} annotation {STATE_ANNOTATION}")

    def save_state(self, state: RolloutState) -> None:
        self._record(state)

    def live(self) -> LiveModel:
        obj = self._get()
        uri = obj.get("spec", {}).get("predictor", {}).get("model", {}).get("storageUri")
        return LiveModel(uri=uri, ready=generation_ready(obj), mode=self._mode(obj))

    # ------------------------------------------------------------------ acting
    def set_canary(self, state: RolloutState) -> None:
        obj = self._get()
        predictor = obj.get("spec", {}).get("predictor", {})
        if state.initial:
            spec = self._replacement(obj, state.new_uri, state.mode)
        elif state.mode == "standard":
            name = canary_predictor_name(self.cfg, state.new_uri)
            current = obj.get("spec", {}).get("canary") or []
            if any(c.get("predictor", {}).get("name") == name for c in current):
                spec = None
            else:
                canary = canary_predictor(predictor, name, state.new_uri)
                spec = {"canary": [{"trafficPercent": state.traffic_percent, "predictor": canary}]}
        else:
            in_place = (
                predictor.get("model", {}).get("storageUri") == state.new_uri
                and predictor.get("canaryTrafficPercent") == state.traffic_percent
            )
            spec = (
                None
                if in_place
                else {
                    "predictor": {
                        "canaryTrafficPercent": state.traffic_percent,
                        "model": {"storageUri": state.new_uri},
                    }
                }
            )
        self._record(state, spec)

    def shift(self, state: RolloutState) -> None:
        """Set the new model's share to ``state.traffic_percent``: the Serverless
        ``canaryTrafficPercent``, or our Standard canary entry's ``trafficPercent`` (a
        merge patch replaces the whole list, so every entry is written back)."""
        spec = self._get().get("spec", {})
        if state.mode == "standard":
            name = canary_predictor_name(self.cfg, state.new_uri)
            entries = spec.get("canary") or []
            ours = [c for c in entries if c.get("predictor", {}).get("name") == name]
            if not ours:
                raise KServeError(f"{self.where}: canary '{name}' vanished before the shift")
            patch = (
                None
                if ours[0].get("trafficPercent") == state.traffic_percent
                else {
                    "canary": [
                        {**c, "trafficPercent": state.traffic_percent} if c is ours[0] else c
                        for c in entries
                    ]
                }
            )
        else:
            predictor = spec.get("predictor", {})
            if predictor.get("model", {}).get("storageUri") != state.new_uri:
                raise KServeError(f"{self.where}: storageUri changed before the shift")
            patch = (
                None
                if predictor.get("canaryTrafficPercent") == state.traffic_percent
                else {"predictor": {"canaryTrafficPercent": state.traffic_percent}}
            )
        self._record(state, patch)

    @staticmethod
    def _replacement(obj: dict, uri: str, mode: str) -> dict | None:
        """Spec patch that makes ``uri`` the only model, or None if it already is."""
        spec = obj.get("spec", {})
        predictor = spec.get("predictor", {})
        same_uri = predictor.get("model", {}).get("storageUri") == uri
        if mode == "standard":
            if same_uri and not spec.get("canary"):
                return None
            return {"canary": None, "predictor": {"model": {"storageUri": uri}}}
        if same_uri and "canaryTrafficPercent" not in predictor:
            return None
        return {"predictor": {"canaryTrafficPercent": None, "model": {"storageUri": uri}}}

    def ready(self, state: RolloutState) -> ReadyCheck:
        obj = self._get()
        status = obj.get("status", {})
        failure = self._failure(obj, state)
        if failure:
            return ReadyCheck(Readiness.FAILED, failure)
        generation = obj.get("metadata", {}).get("generation", 0)
        observed = status.get("observedGeneration", 0) or 0
        if observed < generation:
            return ReadyCheck(
                Readiness.PENDING, f"generation {generation} not yet observed ({observed})"
            )
        if not generation_ready(obj):
            conds = _conditions(obj)
            msg = conds.get("PredictorReady", conds.get("Ready", {})).get("message", "")
            return ReadyCheck(Readiness.PENDING, msg or "not Ready")
        if state.mode == "standard" and not state.initial:
            name = canary_predictor_name(self.cfg, state.new_uri)
            ours = [c for c in status.get("canaryStatuses") or [] if c.get("name") == name]
            if not ours or not ours[0].get("ready"):
                return ReadyCheck(Readiness.PENDING, f"canary '{name}' not ready")
        elif state.mode == "serverless":
            pred = status.get("components", {}).get("predictor", {})
            latest = pred.get("latestCreatedRevision")
            if latest and pred.get("latestReadyRevision") != latest:
                return ReadyCheck(Readiness.PENDING, f"revision {latest} not ready")
        return ReadyCheck(Readiness.READY)

    def _failure(self, obj: dict, state: RolloutState) -> str:
        spec = obj.get("spec", {})
        if state.mode == "standard" and not state.initial:
            name = canary_predictor_name(self.cfg, state.new_uri)
            entries = [
                c for c in spec.get("canary") or [] if c.get("predictor", {}).get("name") == name
            ]
            if not entries:
                return "the canary entry was removed by someone else"
            statuses = [
                c
                for c in obj.get("status", {}).get("canaryStatuses") or []
                if c.get("name") == name
            ]
            model_status = statuses[0].get("modelStatus", {}) if statuses else {}
        else:
            if spec.get("predictor", {}).get("model", {}).get("storageUri") != state.new_uri:
                return "storageUri was changed by someone else"
            model_status = obj.get("status", {}).get("modelStatus", {}) or {}
        if model_status.get("transitionStatus") in FAILED_TRANSITIONS:
            info = model_status.get("lastFailureInfo", {}) or {}
            return f"{model_status['transitionStatus']}: {info.get('message', 'no message')}"
        return ""

    def promote(self, state: RolloutState) -> None:
        obj = self._get()
        spec = obj.get("spec", {})
        if state.initial:
            patch = None
        elif state.mode == "standard":
            name = canary_predictor_name(self.cfg, state.new_uri)
            entries = [
                c for c in spec.get("canary") or [] if c.get("predictor", {}).get("name") == name
            ]
            if entries:
                patch = {"predictor": promoted_predictor(entries[0]["predictor"]), "canary": None}
            elif spec.get("predictor", {}).get("name") == name:
                patch = None  # already promoted
            else:
                raise KServeError(f"{self.where}: canary '{name}' vanished before promotion")
        else:
            patch = self._replacement(obj, state.new_uri, "serverless")
        self._record(state, patch)

    def rollback(self, state: RolloutState) -> bool:
        obj = self._get()
        spec = obj.get("spec", {})
        predictor = spec.get("predictor", {})
        uri = predictor.get("model", {}).get("storageUri")
        if state.initial or state.mode == "standard":
            if state.initial and state.previous_uri is None:
                return True  # nothing served before: nothing to restore
            target = state.previous_uri if state.initial else uri
            patch = self._replacement(obj, target, state.mode)
            if patch is not None:
                self._record(state, patch)
                return False
            return generation_ready(obj)
        percent = predictor.get("canaryTrafficPercent")
        if uri != state.previous_uri and percent != 0:
            self._record(state, {"predictor": {"canaryTrafficPercent": 0}})
            return False
        if uri != state.previous_uri:
            self._record(state, {"predictor": {"model": {"storageUri": state.previous_uri}}})
            return False
        if percent is not None:
            if generation_ready(obj):
                self._record(state, {"predictor": {"canaryTrafficPercent": None}})
            return False
        return generation_ready(obj)

    # ------------------------------------------------------------------ measuring
    def canary_pod_regex(self, state: RolloutState) -> str:
        """Pods serving the canary, for Prometheus's ``pod`` label."""
        if state.mode == "standard":
            return f"{self.name}-{canary_predictor_name(self.cfg, state.new_uri)}-predictor-.*"
        obj = self._get()
        revision = (
            obj.get("status", {})
            .get("components", {})
            .get("predictor", {})
            .get("latestCreatedRevision")
        )
        return f"{revision}-deployment-.*" if revision else f"{self.name}-predictor-.*"

    def stable_pod_regex(self, state: RolloutState) -> str | None:
        """Pods serving the stable model beside the canary (relative quality), or None
        when they cannot be told apart from the canary's."""
        if state.mode == "standard":
            return f"{self.name}-predictor-.*"
        predictor = self._get().get("status", {}).get("components", {}).get("predictor", {})
        # KServe routes the remaining traffic to the last fully rolled-out revision
        stable = predictor.get("latestRolledoutRevision")
        if not stable or stable == predictor.get("latestCreatedRevision"):
            return None
        return f"{stable}-deployment-.*"

    def metrics(self, state: RolloutState, window_s: float) -> CanaryMetrics:
        """From Prometheus when ``services.prometheus_url`` is set, else from the pods'
        own ``/metrics`` (``caprank.deploy.scrape``), else nothing measured."""
        if self.prometheus is None:
            if self.pods is None:
                return CanaryMetrics()
            return scraped_metrics(
                self.pods, self.canary_pod_regex(state), self.stable_pod_regex(state)
            )
        return prometheus_metrics(
            self.prometheus,
            self.cfg,
            namespace=self.namespace,
            pod_regex=self.canary_pod_regex(state),
            window_s=window_s,
        )


def kserve_backend(cfg: CaprankConfig, api_client: k8s.ApiClient | None = None) -> KServeBackend:
    """The backend for ``services.inference_service`` in ``services.kube_namespace``,
    measuring through Prometheus when ``services.prometheus_url`` is set, else by reading
    the predictor pods' ``/metrics`` on ``canary.metrics_port``.

    Without ``api_client`` it loads the in-cluster config (a pipeline pod) or, outside a
    cluster, the local kubeconfig.
    """
    if api_client is None:
        from kubernetes import config as kube_config

        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            kube_config.load_kube_config()
        api_client = k8s.ApiClient()
    prom = (
        PrometheusClient(cfg.services.prometheus_url, cfg.canary.prometheus_timeout_s)
        if cfg.services.prometheus_url
        else None
    )
    namespace, service = cfg.services.kube_namespace, cfg.services.inference_service
    pods = (
        None
        if prom is not None
        else PodScraper(
            k8s.CoreV1Api(api_client),
            namespace,
            service,
            cfg.canary.metrics_port,
            cfg.canary.prometheus_timeout_s,
        )
    )
    return KServeBackend(
        k8s.CustomObjectsApi(api_client), namespace, service, cfg.canary, prom, pods
    )
