"""Virtualenvs holding exactly an image's pins (no Docker): what tests/test_image_envs.py
runs each image's step in.

A venv gets ``pip install --no-deps -r images/requirements-<image>.txt`` (plus, for a
GPU image, the torch its CUDA base provides, as the CPU wheel with the dependencies it
declares, at the versions installed here) and the caprank wheel built from this checkout
with ``--no-deps``: a package the image lacks is absent, as it is there. Built once and
kept under ``$CAPRANK_TEST_CACHE`` (default ``<tmp>/caprank-test-cache``) keyed by a hash
of the requirements; the wheel is reinstalled once per session (the code changes, the
pins rarely do).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 1800


def cache_root() -> Path:
    base = (
        os.environ.get("CAPRANK_TEST_CACHE") or Path(tempfile.gettempdir()) / "caprank-test-cache"
    )
    return Path(base) / "venvs"


def _provided(image: str) -> list[str]:
    """``name==version`` of what the image's base provides (torch and what it needs)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import pin_requirements as pins
    finally:
        sys.path.pop(0)
    from packaging.requirements import Requirement

    provided = pins.IMAGES[image]["provided"] if image in pins.IMAGES else []
    found = pins.closure([Requirement(p) for p in provided], []) if provided else {}
    return [f"{name}=={version}" for name, version in sorted(found.items())]


def _run(cmd: list[str], **kwargs) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:6])} ... failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
        )


def venv_for(name: str, requirements: Path, extra: list[str] = ()) -> Path:
    """A venv with ``requirements`` (and ``extra`` pins) installed with ``--no-deps``,
    built once per content hash; its directory."""
    key = hashlib.sha256(
        requirements.read_bytes() + "\n".join(extra).encode() + sys.version.encode()
    ).hexdigest()[:16]
    target = cache_root() / f"{name}-{key}"
    if (target / ".complete").is_file():
        return target
    # built where it stays (a venv's scripts hold its absolute path); ``.complete`` last
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _run([sys.executable, "-m", "venv", str(target)])
        pip = [str(target / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
        _run([*pip, "-r", str(requirements)], timeout=BUILD_TIMEOUT_S)
        if extra:
            _run([*pip, *extra], timeout=BUILD_TIMEOUT_S)
        # as the Dockerfiles do: the pins are consistent before caprank goes in (the
        # wheel declares every project dependency; an image holds only its step's)
        _run([str(target / "bin" / "python"), "-m", "pip", "check"], timeout=300)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    (target / ".complete").write_text(str(requirements))
    return target


def local_requirements(image: str) -> Path:
    """The image's pins without the PyTorch CPU index line: the pins are the same, torch's
    CPU wheel comes from the pip configuration here (a local wheel directory), and an
    unreachable extra index makes pip retry it for every one of ~200 packages."""
    text = (ROOT / "images" / f"requirements-{image}.txt").read_text(encoding="utf-8")
    kept = [line for line in text.splitlines() if not line.startswith("--extra-index-url")]
    out = cache_root() / f"requirements-{image}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return out


@functools.cache
def caprank_wheel() -> Path:
    """The caprank wheel of this checkout, built once per session (as the images do)."""
    out = Path(tempfile.mkdtemp(prefix="caprank-wheel-"))
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)],
        timeout=600,
    )  # fmt: skip
    return next(out.glob("caprank-*.whl"))


@functools.cache
def image_python(image: str) -> Path:
    """The interpreter of ``image``'s venv, with this checkout's caprank installed."""
    env = venv_for(image, local_requirements(image), _provided(image))
    python = env / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
          str(caprank_wheel())], timeout=600)  # fmt: skip
    return python
