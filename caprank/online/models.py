"""Loading a model for serving: from a directory or from the MLflow registry.

A served model is an immutable ``LoadedModel``: its version, where it came from, the
builder (the artifact) and the ranker built from it for the serving catalog and the
current feature snapshot. Swapping models or refreshing features builds a new object
and swaps one reference, so a request in flight keeps the object it started with.

Model directory formats (found at the directory's root or below it, e.g. inside an
MLflow model's ``artifacts/``, which is what KServe's storage initializer downloads to
``/mnt/models``):

- ``dense_ranker.json``: the dense cosine ranker (``{"format": 1, "text_model": ...}``);
- ``bundle.json``: a trained SHGAT bundle (``caprank.model.bundle``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from caprank import registry
from caprank.config import CaprankConfig
from caprank.errors import CaprankError
from caprank.files import atomic_write_json
from caprank.online.catalog import Catalog
from caprank.online.features import FeatureSnapshot
from caprank.online.intents import serving_backend
from caprank.online.ranker import DenseBuilder, Ranker, RankerBuilder

log = logging.getLogger(__name__)

DENSE_FILE = "dense_ranker.json"
BUNDLE_FILE = "bundle.json"
MARKERS = (DENSE_FILE, BUNDLE_FILE)
FALLBACK_VERSION = "fallback-dense"


class ModelLoadError(CaprankError):
    """A model reference cannot be resolved or its directory cannot be loaded."""


@dataclass(frozen=True)
class LoadedModel:
    version: str
    source: str
    builder: RankerBuilder
    ranker: Ranker
    catalog: Catalog
    features: FeatureSnapshot | None
    loaded_at: float

    def with_features(self, features: FeatureSnapshot | None) -> LoadedModel:
        """The same model over a new feature snapshot (rebuilt only if it reads features)."""
        if not self.builder.uses_features:
            return replace(self, features=features)
        return replace(self, ranker=self.builder.build(self.catalog, features), features=features)


def build_model(
    builder: RankerBuilder,
    catalog: Catalog,
    features: FeatureSnapshot | None,
    version: str,
    source: str,
) -> LoadedModel:
    ranker = builder.build(catalog, features)
    return LoadedModel(version, source, builder, ranker, catalog, features, time.time())


def dense_builder(cfg: CaprankConfig, text_model: str | None = None) -> DenseBuilder:
    return DenseBuilder(
        text_model=text_model or cfg.embedding.text_model,
        cache_root=str(cfg.embedding_cache_dir()),
        batch_size=cfg.embedding.batch_size,
        device=cfg.embedding.device,
        backend=serving_backend(cfg, catalog=True),
    )


def save_dense_model(directory: str | Path, text_model: str, version: str | None = None) -> Path:
    """Write a dense-ranker model directory (the fallback, deployable like any model)."""
    meta = {"format": 1, "text_model": text_model}
    if version:
        meta["version"] = version
    atomic_write_json(Path(directory) / DENSE_FILE, meta)
    return Path(directory)


def find_model_root(path: str | Path, max_depth: int = 4) -> Path:
    """The directory holding a model marker file: ``path`` itself or the shallowest below."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model directory does not exist")
    frontier = [path]
    for _ in range(max_depth + 1):
        for d in frontier:
            if any((d / m).is_file() for m in MARKERS):
                return d
        frontier = sorted(c for d in frontier for c in d.iterdir() if c.is_dir())
    raise ModelLoadError(f"{path}: no {' or '.join(MARKERS)} found (not a caprank model)")


def load_builder(root: Path, cfg: CaprankConfig) -> tuple[RankerBuilder, dict]:
    """The builder for a model directory, and its metadata."""
    if (root / DENSE_FILE).is_file():
        try:
            meta = json.loads((root / DENSE_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{root / DENSE_FILE}: not valid JSON ({exc})") from exc
        if meta.get("format") != 1 or not isinstance(meta.get("text_model"), str):
            raise ModelLoadError(f"{root / DENSE_FILE}: needs format 1 and a text_model")
        return dense_builder(cfg, meta["text_model"]), meta
    from caprank.model.bundle import BundleError, load_bundle
    from caprank.model.serving import BundleBuilder

    try:
        bundle = load_bundle(root)
    except BundleError as exc:
        raise ModelLoadError(str(exc)) from exc
    builder = BundleBuilder(
        bundle,
        cache_root=str(cfg.embedding_cache_dir()),
        batch_size=cfg.embedding.batch_size,
        device=cfg.embedding.device,
        backend=serving_backend(cfg, catalog=True),
    )
    return builder, {"text_model": bundle.text_model, **bundle.meta}


def load_model_dir(
    path: str | Path,
    cfg: CaprankConfig,
    catalog: Catalog,
    features: FeatureSnapshot | None,
    version: str | None = None,
    source: str | None = None,
) -> LoadedModel:
    """Load and precompute the model in ``path`` for ``catalog`` and ``features``."""
    root = find_model_root(path)
    builder, meta = load_builder(root, cfg)
    version = version or str(meta.get("version") or f"dir:{root.name}")
    return build_model(builder, catalog, features, version, source or str(path))


# ------------------------------------------------------------------ MLflow registry


class RegistryUnavailable(ModelLoadError):
    """The model registry could not be read (down, unreachable, refusing): never taken
    for "no model registered"."""


def registry_uri(cfg: CaprankConfig) -> str:
    """The registry's URI for a message, without any password it carries."""
    return re.sub(r"//[^/@]*@", "//***@", cfg.mlflow_tracking_uri())


def registry_version(cfg: CaprankConfig, ref: str) -> str:
    """The registered version number ``ref`` names: a number, or an alias such as
    ``production``. ``ModelLoadError`` when the registry has no such version,
    ``RegistryUnavailable`` when it cannot be read; both name the registry."""
    name, where = cfg.services.registered_model, registry_uri(cfg)
    try:
        return registry.resolve_version(cfg, ref).version
    except registry.RegistryError as exc:
        if not registry.registry_reachable(cfg):
            raise RegistryUnavailable(
                f"the registry at {where} cannot be read, so registered model '{name}' "
                f"version '{ref}' cannot be served: {exc}"
            ) from exc
        raise ModelLoadError(
            f"registered model '{name}' in the registry at {where} has no version '{ref}'"
            f"{'' if ref.isdigit() else f' (no alias {ref!r})'}: {exc}"
        ) from exc
    except Exception as exc:  # the registry cannot be reached or answered an error
        raise RegistryUnavailable(
            f"the registry at {where} cannot be read ({type(exc).__name__}: {exc}); "
            f"registered model '{name}' version or alias '{ref}' cannot be resolved"
        ) from exc


def download_registry_model(cfg: CaprankConfig, version: str) -> Path:
    """The files of registered ``version``, downloaded once under ``<home>/serving/models``."""
    target = cfg.home() / "serving" / "models" / f"{cfg.services.registered_model}-{version}"
    return registry.download_version(cfg, version, target)


def resolve_model_ref(
    cfg: CaprankConfig, ref: str, registry_only: bool = False
) -> tuple[Path, str]:
    """(local directory, version) for a directory path, a version number or an alias;
    ``registry_only``: never a directory (an admin's alias that names a folder too)."""
    if not registry_only and Path(ref).expanduser().is_dir():
        root = find_model_root(Path(ref).expanduser())
        return root, ""
    version = registry_version(cfg, ref)
    return download_registry_model(cfg, version), version


def load_model_ref(
    cfg: CaprankConfig,
    ref: str,
    catalog: Catalog,
    features: FeatureSnapshot | None,
    version: str | None = None,
    registry_only: bool = False,
) -> LoadedModel:
    """Load a model by directory, registry version or alias."""
    local, registry_v = resolve_model_ref(cfg, ref, registry_only)
    return load_model_dir(local, cfg, catalog, features, version or registry_v or None, ref)
