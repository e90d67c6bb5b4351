"""caprank's Feast definitions, for the `feast` CLI (`feast -c feature_repo apply`).

The objects come from ``caprank.features.definitions`` (the library builds the same ones
in code). The offline Parquet is ``<paths.features>/capability_features.parquet`` from
the caprank config, so ``CAPRANK_PATHS__FEATURES`` (a directory) or ``CAPRANK_CONFIG``
moves it; relative paths are taken from the project root. Default:
``<project>/.caprank/features/capability_features.parquet``, where
``caprank features build`` writes it.
"""

from __future__ import annotations

from pathlib import Path

from caprank.config import load_config
from caprank.data.schemas import CAPABILITY_FEATURES_FILE
from caprank.features.definitions import (
    capability_entity,
    capability_feature_view,
    ranker_feature_service,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _from_root(path: Path) -> Path:
    return path if path.is_absolute() else PROJECT_ROOT / path


_cfg = load_config()
OFFLINE_PATH = _from_root(_cfg.features_dir()) / CAPABILITY_FEATURES_FILE
# feature_store.yaml keeps its registry and SQLite files in <home>/feast; Feast does not
# create missing parent directories itself.
_from_root(_cfg.feast_dir()).mkdir(parents=True, exist_ok=True)

capability = capability_entity()
capability_features = capability_feature_view(OFFLINE_PATH, _cfg.features)
ranker_features = ranker_feature_service([capability_features])
