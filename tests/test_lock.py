"""requirements.lock, what `make test` and `make run` install, pins every dependency that
pyproject.toml names, within the range pyproject.toml allows (a stale lock fails here,
before a fresh clone installs something CI never tested)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for n, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock line {n}: not an exact pin: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_declared_dependency_is_pinned_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = [*project["dependencies"], *extras["dev"], *extras["cluster"]]
    pins = _pins()
    for spec in map(Requirement, declared):
        name = canonicalize_name(spec.name)
        assert name in pins, f"{spec.name} is in pyproject.toml but not in requirements.lock"
        assert spec.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {spec.name}=={pins[name]}, outside {spec.specifier}: "
            "run `make lock`"
        )


def test_lock_pins_installer_and_carries_no_machine_local_labels():
    pins = _pins()
    assert "pip" in pins and "setuptools" in pins  # the installer itself is pinned
    local = [f"{n}=={v}" for n, v in pins.items() if v.local]
    assert not local, f"machine-local version labels in requirements.lock: {local}"
