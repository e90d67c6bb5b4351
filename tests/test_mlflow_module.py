"""One module talks to MLflow: ``caprank.registry`` (tracking, registry, aliases,
download). Everything else calls it, so an MLflow upgrade or a change of store touches
one file. ``caprank.model.pyfunc`` is the one exception: its class subclasses
``mlflow.pyfunc.PythonModel`` and logged models pickle it by that path."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("caprank", "components", "pipelines", "serving")
ALLOWED = {"caprank/registry.py", "caprank/model/pyfunc.py"}


# Issue 11: the evaluate stage's MLflow calls move into caprank.registry on another
# branch; this entry goes when that branch is merged.
def mlflow_importers(root: Path = ROOT) -> set[str]:
    """Project source files with an ``import mlflow...`` or ``from mlflow... import``."""
    found = set()
    for top in SOURCES:
        for path in sorted((root / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
                    found.add(path.relative_to(root).as_posix())
    return found


def test_only_the_registry_imports_mlflow():
    assert mlflow_importers() == ALLOWED


def test_the_scan_sees_function_level_imports(tmp_path):
    pkg = tmp_path / "caprank"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from mlflow.entities import Metric\n")
    (pkg / "b.py").write_text("import mlflowish\nfrom .mlflow import x\n")
    (pkg / "c.py").write_text("import os, mlflow.pyfunc as p\n")
    assert mlflow_importers(tmp_path) == {"caprank/a.py", "caprank/c.py"}
