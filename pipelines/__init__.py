"""KFP adapters: the training pipeline, its submission and schedule, GPU placement.

``compiled_path`` is the one place that says where the compiled pipeline lives: compile
writes it, submit and schedule upload it, the freshness test compares against it;
``MODES`` the values of the pipeline's ``mode`` parameter.
"""

from __future__ import annotations

from pathlib import Path

from caprank.config import CaprankConfig

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"
# The pipeline's ``mode`` parameter: a full retrain, or an incremental update of the
# production model (components/update); train is the default.
MODES = ("train", "update")


def compiled_path(cfg: CaprankConfig) -> Path:
    """``pipelines/compiled/<pipeline.name>.yaml``: the checked-in package for ``cfg``."""
    return COMPILED_DIR / f"{cfg.pipeline.name}.yaml"
