"""The suite's tiny config and dataset for the component tests: one definition, in
tests/conftest.py, re-exported here (helpers for the tests: components/testing.py)."""

from __future__ import annotations

from tests.conftest import tiny_cfg, tiny_dataset, tiny_dataset_dir

__all__ = ["tiny_cfg", "tiny_dataset", "tiny_dataset_dir"]
