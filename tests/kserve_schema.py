"""KServe's own acceptance rules for our InferenceServices, without a cluster.

Two checks, as the API server and KServe's admission webhook apply them:

- ``crd_errors``: the object against the vendored CRD OpenAPI schema
  (``tests/data/kserve``), with unknown fields rejected as ``kubectl apply``'s strict
  field validation does (a structural schema prunes them; strict mode makes them errors);
- ``webhook_errors``: the canary rules of KServe's validating webhook.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

import jsonschema

DATA = Path(__file__).resolve().parent / "data" / "kserve"
SCHEMAS = {"InferenceService": "inferenceservices", "ServingRuntime": "servingruntimes"}
STANDARD = "Standard"  # KServe's constants.Standard; the only mode spec.canary allows
DEPRECATED_MODES = frozenset({"Serverless", "RawDeployment"})  # now Knative / Standard
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
CANARY_FORBIDDEN = ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling", "workerSpec")


def vendored(kind: str) -> dict:
    """``{"kind", "group", "versions": {name: openAPIV3Schema}}`` of one CRD."""
    with gzip.open(DATA / f"{SCHEMAS[kind]}.schema.json.gz", "rt", encoding="utf-8") as fh:
        return json.load(fh)


def _strict(node):
    """Objects with declared properties accept no others (kubectl's strict validation)."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _validator(kind: str, version: str) -> jsonschema.Draft7Validator:
    schema = _strict(vendored(kind)["versions"][version])
    return jsonschema.Draft7Validator(schema)


def crd_errors(obj: dict) -> list[str]:
    """Schema violations of ``obj`` (an InferenceService or ServingRuntime)."""
    version = obj["apiVersion"].split("/")[-1]
    validator = _validator(obj["kind"], version)
    return [
        f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]


def webhook_errors(isvc: dict) -> list[str]:
    """What KServe's validating webhook rejects about the canary and the predictor."""
    errors = []
    mode = isvc.get("metadata", {}).get("annotations", {}).get(MODE_ANNOTATION, "")
    spec = isvc.get("spec", {})
    stable = spec.get("predictor", {})
    if stable.get("model", {}).get("name"):
        errors.append("the 'name' field is not allowed in standard predictor")
    canaries = spec.get("canary") or []
    if canaries and mode != STANDARD:
        errors.append(f"canary is only supported in {STANDARD} deployment mode (got {mode!r})")
    if canaries and not stable.get("model"):
        errors.append("canary requires a stable predictor with a model")
    names: set[str] = set()
    total = 0
    for i, entry in enumerate(canaries):
        pred = entry.get("predictor", {})
        name = pred.get("name", "")
        if not name:
            errors.append(f"canary[{i}] predictor.name is required")
        elif name in names:
            errors.append(f"canary predictor.name {name!r} is duplicated")
        elif name == stable.get("name"):
            errors.append(f"canary predictor.name {name!r} conflicts with stable predictor name")
        names.add(name)
        percent = entry.get("trafficPercent", 0)
        if not 0 <= percent <= 100:
            errors.append(f"canary {name!r} trafficPercent must be between 0 and 100")
        total += percent
        for key in CANARY_FORBIDDEN:
            if pred.get(key):
                errors.append(f"canary {name!r} must not set {key} (canary uses fixed replicas)")
        if pred.get("minReplicas") is not None and pred["minReplicas"] > stable.get(
            "minReplicas", 1
        ):
            errors.append(f"canary {name!r} minReplicas must not exceed the stable predictor's")
    if total > 100:
        errors.append(f"sum of canary trafficPercent values ({total}) must be <= 100")
    return errors


def kserve_errors(obj: dict) -> list[str]:
    """Everything KServe (API server + webhook) would reject, plus a deprecated mode."""
    errors = crd_errors(obj)
    if obj["kind"] == "InferenceService":
        errors += webhook_errors(obj)
        mode = obj.get("metadata", {}).get("annotations", {}).get(MODE_ANNOTATION)
        if mode in DEPRECATED_MODES:
            errors.append(f"deploymentMode {mode!r} is deprecated")
    return errors
