"""Strict typed reading of KServe objects through the kserve SDK's own generated models.

The SDK's deserializer silently drops unknown keys and coerces types, so it would pass a
misspelled field. This walks the models' ``openapi_types``/``attribute_map`` (kserve's
models, then the kubernetes client's for core types), fails on any unknown key or wrong
primitive type, and constructs each model so its own required-field checks run.
"""

from __future__ import annotations

import re

import kserve.models as kserve_models
from kubernetes.client import models as k8s_models

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


def _class(name: str):
    for module in (kserve_models, k8s_models):
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"no model class {name} in kserve or kubernetes")


def to_model(data, type_name: str, path: str = "$"):
    """Build the typed model for ``data``; AssertionError names the JSON path on a mismatch."""
    if data is None:
        return None
    if match := re.fullmatch(r"list\[(.+)\]", type_name):
        assert isinstance(data, list), f"{path}: expected a list, got {type(data).__name__}"
        return [to_model(v, match[1], f"{path}[{i}]") for i, v in enumerate(data)]
    if match := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        assert isinstance(data, dict), f"{path}: expected a mapping"
        return {k: to_model(v, match[1], f"{path}.{k}") for k, v in data.items()}
    if type_name in ("ResourceQuantity", "IntOrString"):
        assert isinstance(data, str | int), f"{path}: expected a quantity"
        return data
    if type_name in PRIMITIVES:
        want = PRIMITIVES[type_name]
        ok = isinstance(data, want) and not (type_name in ("int", "float") and data is True)
        assert ok, f"{path}: expected {type_name}, got {data!r}"
        return data
    if type_name == "datetime":
        return data
    klass = _class(type_name)
    assert isinstance(data, dict), f"{path}: expected an object for {type_name}"
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    unknown = sorted(set(data) - set(by_json))
    assert not unknown, f"{path}: {type_name} has no field(s) {unknown}"
    kwargs = {
        by_json[k]: to_model(v, klass.openapi_types[by_json[k]], f"{path}.{k}")
        for k, v in data.items()
    }
    try:
        return klass(**kwargs)
    except ValueError as exc:  # the SDK's required-field validation
        raise AssertionError(f"{path}: {type_name}: {exc}") from exc
