"""The import rules of docs/architecture.md, checked statically (ast, no imports run):

1. The library (``caprank/``) never imports the adapters (``components/``, ``pipelines/``,
   ``serving/``) nor ``tests/`` or ``benchmarks/``. The one composition root,
   ``caprank/cli/``, may import an adapter inside a command function only, so that
   ``import caprank.cli`` (and every other library module) works without them.
2. The training core imports only what the GPU training image holds: torch (its base)
   plus ``images/requirements-train-gpu.txt``, every import counted, function-level ones
   included; ``caprank.training.entrypoint`` (what the image runs) and every caprank module
   it imports at module level likewise, and none of kfp, kserve, feast or mlflow; and every
   import on the step's run path, function bodies included (the image's pins are generated
   from exactly that closure by scripts/pin_requirements.py).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "caprank"
ADAPTERS = frozenset({"components", "pipelines", "serving", "tests", "benchmarks"})
COMPOSITION_ROOT = LIBRARY / "cli"

# The training core: the model, the learning targets and the training loop and its data.
TRAINING_CORE = (
    *sorted((LIBRARY / "learning").glob("*.py")),
    *(
        LIBRARY / "model" / f"{name}.py"
        for name in ("__init__", "shgat", "inputs", "index", "lexicon", "features", "bundle")
    ),
    LIBRARY / "model" / "calibration.py",
    LIBRARY / "training" / "trainer.py",
    LIBRARY / "training" / "data.py",
    LIBRARY / "training" / "entrypoint.py",
)
# Imports of the training core that the image lacks, each with its reason: none since the
# image pins what the step imports (issue 12); none may be added.
CORE_GAPS: dict[str, set[str]] = {}
# The entrypoint and its module-level caprank imports must not even mention these.
NEVER_IN_TRAINING = frozenset({"kfp", "kserve", "feast", "mlflow"})
# Function-level imports on the entrypoint's run path that the image lacks: none (MLflow
# tracking, baselines, calibration fits and intent encoding are all pinned now).
RUNTIME_GAPS: frozenset[str] = frozenset()


@cache
def _skipped() -> frozenset[str]:
    """Modules the image's pins leave out on purpose (scripts/pin_requirements.py says
    why: the logged pyfunc's load path, which runs in the model's own environment)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import pin_requirements
    finally:
        sys.path.pop(0)
    return frozenset(pin_requirements.IMAGES["train-gpu"].get("skip", []))


def _imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    """Absolute module names ``path`` imports (``from a import b`` gives ``a`` and
    ``a.b``); module level covers ``if``/``try`` blocks but not function bodies, nor
    ``if TYPE_CHECKING:`` blocks (they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    if module_level_only:
        nodes = [
            n
            for top in tree.body
            if not isinstance(top, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
            and not _type_checking_only(top)
            for n in ast.walk(top)
        ]
    else:
        nodes = list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the rules read absolute names"
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _type_checking_only(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
    return name == "TYPE_CHECKING"


def _source(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _third_party(names: set[str]) -> set[str]:
    tops = {n.split(".")[0] for n in names}
    return {t for t in tops if t not in sys.stdlib_module_names and t != "__future__"} - {"caprank"}


def _closure(
    module: str, *, module_level_only: bool = True, skip: frozenset[str] = frozenset()
) -> dict[str, Path]:
    """``module`` and every caprank module it imports (at module level, or anywhere),
    transitively; parent packages included, as importing ``a.b`` runs ``a/__init__``."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _source(name)
        if name in seen or name in skip or path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        names = _imports(path, module_level_only=module_level_only)
        todo += [n for n in names if n.split(".")[0] == "caprank"]
    return seen


def _dist(line: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[=<>~\[; ]", line, maxsplit=1)[0]).lower()


def _requirements_closure(dist: str) -> set[str]:
    """``dist`` and what it requires, transitively (no extras), as installed here."""
    found: set[str] = set()
    todo = [dist]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_dist(r) for r in reqs if "extra ==" not in r]
    return found


@cache
def _image_dists() -> frozenset[str]:
    """The training image's distributions: its pins and torch with what torch requires
    (the CUDA PyTorch base)."""
    text = (ROOT / "images" / "requirements-train-gpu.txt").read_text(encoding="utf-8")
    dists = {_dist(line) for line in text.splitlines() if line.strip() and line[0] != "#"}
    return frozenset(dists | _requirements_closure("torch"))


@cache
def _image_modules() -> frozenset[str]:
    """Top-level import names the training image provides, mapped through the installed
    packages' metadata."""
    return frozenset(
        module
        for module, owners in md.packages_distributions().items()
        if any(_dist(owner) in _image_dists() for owner in owners)
    )


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_library_never_imports_the_adapters():
    bad = []
    for path in sorted(LIBRARY.rglob("*.py")):
        names = (
            _imports(path)
            if COMPOSITION_ROOT not in path.parents
            else (_imports(path, module_level_only=True))
        )
        bad += [f"{_rel(path)}: {n}" for n in sorted(names) if n.split(".")[0] in ADAPTERS]
    assert not bad, "the library imports an adapter:\n" + "\n".join(bad)


def test_the_adapter_rule_would_catch_a_violation(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from pipelines.training import build_pipeline\n")
    assert "pipelines.training" in _imports(probe)
    assert "pipelines.training" not in _imports(probe, module_level_only=True)


def test_the_image_modules_are_read_from_its_requirements():
    have = _image_modules()
    assert {"torch", "torch_geometric", "numpy", "pyarrow", "yaml", "pydantic"} <= have
    assert {"mlflow", "sklearn", "scipy", "sentence_transformers", "pandas", "rank_bm25"} <= have
    assert not {"feast", "kserve", "great_expectations", "evidently"} & have


@pytest.mark.parametrize("path", TRAINING_CORE, ids=_rel)
def test_training_core_imports_only_the_training_image(path):
    missing = _third_party(_imports(path)) - _image_modules()
    assert missing <= CORE_GAPS.get(_rel(path), set()), (
        f"{_rel(path)} imports {sorted(missing)}, which the training image lacks"
    )


def test_training_entrypoint_imports_only_the_training_image():
    closure = _closure("caprank.training.entrypoint")
    assert {"caprank.training.stage", "caprank.config"} <= set(closure)
    for name, path in closure.items():
        third = _third_party(_imports(path, module_level_only=True))
        assert not third & NEVER_IN_TRAINING, f"{name} imports {sorted(third & NEVER_IN_TRAINING)}"
        assert third <= _image_modules(), f"{name} imports {sorted(third - _image_modules())}"


def test_training_run_path_gaps_only_shrink():
    """Everything the step may import while it runs, function bodies included."""
    closure = _closure("caprank.training.entrypoint", module_level_only=False, skip=_skipped())
    assert "caprank.registry" in closure  # the run path reaches MLflow tracking
    used = set().union(*(_third_party(_imports(path)) for path in closure.values()))
    gaps = used - _image_modules()
    assert gaps <= RUNTIME_GAPS, f"new imports the image lacks: {sorted(gaps - RUNTIME_GAPS)}"


def _image_site(dists: set[str], into: Path) -> Path:
    """A site-packages holding only ``dists`` (links to the installed files), so that a
    package outside the image is simply absent, as it is there."""
    into.mkdir()
    for dist in dists:
        try:
            files = md.files(dist) or []
        except md.PackageNotFoundError:
            continue
        for top in {f.parts[0] for f in files if f.parts and f.parts[0] != ".."}:
            source = Path(md.distribution(dist).locate_file(top))
            if source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)
    return into


@pytest.mark.slow
def test_training_entrypoint_imports_with_only_the_image_packages(tmp_path):
    """The dynamic twin of the static rule: an interpreter that sees only the image's
    packages (and the standard library) imports the entrypoint."""
    import os
    import subprocess

    site = _image_site(_image_dists(), tmp_path / "site-packages")
    # feast is installed here but not in the image: it must be absent in the child
    code = "import caprank.training.entrypoint, importlib.util as u; print(u.find_spec('feast'))"
    done = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "None"
