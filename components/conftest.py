"""The suite's tiny config and dataset for the component tests (one definition, in
tests/conftest.py), plus a helper to make KFP artifacts on local paths."""

from __future__ import annotations

from tests.conftest import tiny_cfg, tiny_dataset, tiny_dataset_dir

__all__ = ["tiny_cfg", "tiny_dataset", "tiny_dataset_dir"]
