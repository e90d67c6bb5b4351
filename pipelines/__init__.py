"""KFP adapters: the training pipeline, its submission and schedule, GPU placement.

``compiled_path`` is the one place that says where the compiled pipeline lives: compile
writes it, submit and schedule upload it, the freshness test compares against it.
"""

from __future__ import annotations

from pathlib import Path

from caprank.config import CaprankConfig

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


def compiled_path(cfg: CaprankConfig) -> Path:
    """``pipelines/compiled/<pipeline.name>.yaml``: the checked-in package for ``cfg``."""
    return COMPILED_DIR / f"{cfg.pipeline.name}.yaml"
