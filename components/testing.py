"""What the component tests share: KFP artifacts on local paths, a per-test config."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from caprank.config import CaprankConfig

A = TypeVar("A")


def artifact(cls: type[A], path: str | Path, **metadata) -> A:
    """A KFP artifact whose ``.path`` is ``path`` (what the executor hands a component)."""
    return cls(name=Path(path).name, uri=str(path), metadata=dict(metadata))


def isolated(cfg: CaprankConfig, home: Path) -> CaprankConfig:
    """A copy of ``cfg`` whose stores (Feast, MLflow, caches) live under ``home``."""
    cfg = cfg.model_copy(deep=True)
    cfg.paths.home = home
    return cfg


def component(cfg: CaprankConfig, name: str):
    """The KFP component ``name`` as the pipeline builds it (its image from ``cfg``);
    tests call its ``python_func``, the body a cluster runs."""
    from pipelines.training import make_components

    return getattr(make_components(cfg), name)
