"""Who may change what a server serves: the admin bearer token and the model allow-list.

The admin routes and KServe's model-repository extension share one credential: a bearer
token read from the environment variable ``serving.admin_token_env`` (filled from a
Kubernetes Secret). Without the variable the control plane does not exist (404); a
missing or wrong token is 401, compared in constant time. Models come only from the
registry (version or alias), the dense ranker, or a directory under one of
``serving.model_roots``; a refused reference gets the same answer whether or not the path
exists, so the endpoint cannot be used to probe the server's disk.
"""

from __future__ import annotations

import hmac
import os
import re
from pathlib import Path

from caprank.config import ServingConfig
from caprank.online.request import RequestError

REGISTRY_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
REF_RULE = "a registry version or alias, 'dense', or a directory under serving.model_roots"


class Unauthorized(Exception):
    """The control plane refused a caller: ``status`` 404 (off) or 401 (bad token)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def admin_token(cfg: ServingConfig) -> str:
    """The configured admin token ('' when the control plane is off)."""
    return os.environ.get(cfg.admin_token_env, "") if cfg.admin_token_env else ""


def check_bearer(cfg: ServingConfig, authorization: str | None) -> None:
    """Raise ``Unauthorized`` unless ``authorization`` is ``Bearer <the admin token>``."""
    token = admin_token(cfg)
    if not token:
        raise Unauthorized(404, "Not Found")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise Unauthorized(401, "admin routes need 'Authorization: Bearer <token>'")


def is_path_ref(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.startswith((".", "~"))


def allowed_dir(cfg: ServingConfig, ref: str) -> Path | None:
    """The resolved directory when ``ref`` lies under an allow-listed root, else None."""
    try:
        path = Path(ref).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    for root in cfg.model_roots:
        base = Path(root).expanduser().resolve()
        if path.is_relative_to(base) and path.is_dir():
            return path
    return None


def check_model_ref(cfg: ServingConfig, ref: str) -> tuple[str, bool]:
    """``(ref to load, registry only)`` for an admin-supplied reference, or ``RequestError``
    naming ``ref``; the message is the same for missing and forbidden paths."""
    if is_path_ref(ref):
        path = allowed_dir(cfg, ref)
        if path is None:
            raise RequestError("ref", f"is not an allowed model reference: {REF_RULE}")
        return str(path), False
    if not REGISTRY_REF.match(ref):
        raise RequestError("ref", f"is not an allowed model reference: {REF_RULE}")
    return ref, True
