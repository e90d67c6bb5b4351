"""A pod's fresh filesystem, on one machine: what lets ``make e2e`` prove a step needs no
other step's disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

POD_SANDBOX_ENV = "CAPRANK_POD_SANDBOX"


def enter_pod_sandbox(environ: dict[str, str] | None = None) -> Path | None:
    """With ``$CAPRANK_POD_SANDBOX`` set, move this step into a new empty directory under
    it (its working directory and HOME), as a pod starts on a fresh filesystem: a
    cluster-shaped run on one machine (``make e2e``) then shares nothing between steps
    but the artifacts KFP passes and the services named in the env. Unset: nothing."""
    env = os.environ if environ is None else environ
    root = env.get(POD_SANDBOX_ENV)
    if not root:
        return None
    Path(root).mkdir(parents=True, exist_ok=True)
    pod = Path(tempfile.mkdtemp(prefix="pod-", dir=root))
    os.chdir(pod)
    env["HOME"] = str(pod)
    return pod
