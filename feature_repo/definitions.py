"""caprank's Feast definitions, for the `feast` CLI (`feast -c feature_repo apply`).

Every entity, source, view and service the pipeline registers, from
``caprank.features.definitions.repo_objects``: the library applies the same list, so
`feast apply` here keeps what a pipeline step registered (the ``tool`` entity and the
embedding views included) and a pipeline step keeps what `feast apply` registered. Feast
finds objects as module-level names, hence one name per object below (a test checks the
two lists are the same).

The offline Parquet tables live in ``<paths.features>`` from the caprank config, so
``CAPRANK_PATHS__FEATURES`` (a directory) or ``CAPRANK_CONFIG`` moves them; relative
paths are taken from the project root. Default: ``<project>/.caprank/features/``, where
``caprank features build`` and the embed stage write them.
"""

from __future__ import annotations

from pathlib import Path

from feast import Entity, FeatureService, FeatureView

from caprank.config import load_config
from caprank.features.definitions import (
    CAPABILITY_EMBEDDINGS_VIEW,
    CAPABILITY_ENTITY,
    CAPABILITY_FEATURES_VIEW,
    TOOL_EMBEDDINGS_VIEW,
    TOOL_ENTITY,
    repo_objects,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _from_root(path: Path) -> Path:
    return path if path.is_absolute() else PROJECT_ROOT / path


_cfg = load_config()
FEATURES_DIR = _from_root(_cfg.features_dir())
# feature_store.yaml keeps its registry and SQLite files in <home>/feast; Feast does not
# create missing parent directories itself.
_from_root(_cfg.feast_dir()).mkdir(parents=True, exist_ok=True)

_objects = repo_objects(FEATURES_DIR, _cfg.features)
_views = {o.name: o for o in _objects if isinstance(o, FeatureView)}
_entities = {o.name: o for o in _objects if isinstance(o, Entity)}

capability = _entities[CAPABILITY_ENTITY]
tool = _entities[TOOL_ENTITY]
capability_features = _views[CAPABILITY_FEATURES_VIEW]
capability_embeddings = _views[CAPABILITY_EMBEDDINGS_VIEW]
tool_embeddings = _views[TOOL_EMBEDDINGS_VIEW]
ranker_features = next(o for o in _objects if isinstance(o, FeatureService))
