"""Every component is a folder like the KFP community's: component.py, README.md naming
every input and output, tests/; and every input carries a description into the compiled
pipeline (the Kubeflow UI shows it)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from caprank.config import resolve
from pipelines import compiled_path
from pipelines.training import make_components

ROOT = Path(__file__).resolve().parents[1]
CFG = resolve(environ={}).config
NAMES = sorted(vars(make_components(CFG)))


def test_every_component_folder_is_in_the_dag():
    folders = {p.parent.name for p in (ROOT / "components").glob("*/component.py")}
    assert folders == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_folder_has_readme_and_tests_naming_every_parameter(name):
    folder = ROOT / "components" / name
    readme = (folder / "README.md").read_text(encoding="utf-8")
    func = getattr(make_components(CFG), name).python_func
    for param in inspect.signature(func).parameters:
        assert f"`{param}`" in readme, f"{name}/README.md does not describe `{param}`"
        assert f"        {param}: " in (func.__doc__ or ""), f"{name}: no Args: entry for {param}"
    assert list((folder / "tests").glob("test_*_component.py")), f"{name}: no unit test"


def test_compiled_inputs_carry_descriptions():
    spec = next(yaml.safe_load_all(compiled_path(CFG).read_text(encoding="utf-8")))
    missing = []
    for comp_name, comp in spec["components"].items():
        if "dag" in comp:
            continue
        inputs = comp.get("inputDefinitions", {})
        for kind in ("parameters", "artifacts"):
            for name, definition in inputs.get(kind, {}).items():
                if not definition.get("description"):
                    missing.append(f"{comp_name}.{name}")
    assert not missing, f"inputs without a description: {missing}"
