"""Fixtures shared by the whole suite: a tiny config and a tiny synthesized dataset.

Both are session-scoped and built in well under a second. Tests must not mutate them;
copy the config (``tiny_cfg.model_copy(deep=True)``) before changing a setting.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset, load_dataset, write_dataset
from caprank.data.simulate import simulate, simulation_metadata
from caprank.data.synth import synthesize

TINY = {
    "data": {
        "seed": 11,
        "synth": {
            "n_tools": 40,
            "n_categories": 6,
            "n_capabilities": 60,
            "intents_per_capability": 6,
            "days": 10,
        },
        "simulate": {"events_per_day": 300, "n_users": 50},
    },
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow first: `make test` runs on two workers (pytest-xdist) that take whole files in
    collection order, so the heavy files start at once and the light ones fill the gaps."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow") else 1)


@pytest.fixture(scope="session")
def tiny_cfg(tmp_path_factory: pytest.TempPathFactory) -> CaprankConfig:
    """~40 tools, 60 capabilities, 6 intents each, 10 days of 300 events; home in a tmp dir."""
    home = tmp_path_factory.mktemp("caprank-home")
    return CaprankConfig.model_validate({**TINY, "paths": {"home": str(home)}})


@pytest.fixture(scope="session")
def tiny_dataset_dir(tiny_cfg: CaprankConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset (catalog, labels and simulated logs) written to a tmp directory."""
    ds = synthesize(tiny_cfg)
    ds.interactions = simulate(ds, tiny_cfg)
    out = tmp_path_factory.mktemp("tiny-dataset") / "data"
    return write_dataset(ds, out, simulation=simulation_metadata(ds.interactions))


@pytest.fixture(scope="session")
def tiny_dataset(tiny_dataset_dir: Path) -> Dataset:
    """The tiny dataset as loaded back from disk (``.root`` is its directory)."""
    return load_dataset(tiny_dataset_dir)
