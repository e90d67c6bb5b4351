"""The catalog a server ranks over: capability ids, their tools and their texts.

Serving needs the catalog itself (not only a model) to check candidate ids, to apply the
context-tool rule and to build the dense fallback ranker. It comes from, in order: a
``catalog/`` folder inside the model directory, ``paths.data``, or the embedded default
dataset synthesized from the config's seed (what ``make run`` trains on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from caprank.config import CaprankConfig
from caprank.data.dataset import read_table
from caprank.embeddings.catalog_text import capability_texts
from caprank.errors import DataError

CATALOG_DIR = "catalog"


@dataclass(frozen=True)
class Catalog:
    """Capabilities in a fixed order; row ``i`` of every model's matrices is ``ids[i]``."""

    ids: tuple[str, ...]
    tools: tuple[tuple[str, ...], ...]
    texts: tuple[str, ...]
    source: str
    tool_table: pa.Table | None = None
    capability_table: pa.Table | None = None

    def __post_init__(self) -> None:
        if not self.ids:
            raise DataError(self.source, "the catalog has no capabilities")
        if len(set(self.ids)) != len(self.ids):
            raise DataError(self.source, "duplicate capability ids", field="capability_id")
        empty = next((i for i, c in enumerate(self.ids) if not c), None)
        if empty is not None:  # a request's candidate ids found in the catalog are then valid
            raise DataError(self.source, "empty capability id", row=empty, field="capability_id")

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def position(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.ids)}

    def index_of(self, ids: Sequence[str]) -> np.ndarray:
        """Rows of ``ids``; unknown ids raise ``KeyError`` listing (up to five of) them."""
        pos = self.position
        try:
            return np.fromiter(map(pos.__getitem__, ids), dtype=np.int64, count=len(ids))
        except KeyError:
            missing = [c for c in ids if c not in pos]
            raise KeyError(missing[:5]) from None

    @cached_property
    def tool_sets(self) -> tuple[frozenset[str], ...]:
        return tuple(frozenset(t) for t in self.tools)


def catalog_from_tables(tools: pa.Table, capabilities: pa.Table, source: str) -> Catalog:
    """A catalog from contract ``tools`` and ``capabilities`` tables."""
    texts = capability_texts(capabilities, tools, source=source)
    return Catalog(
        ids=tuple(capabilities["capability_id"].to_pylist()),
        tools=tuple(tuple(t or ()) for t in capabilities["tool_ids"].to_pylist()),
        texts=tuple(texts),
        source=source,
        tool_table=tools,
        capability_table=capabilities,
    )


def read_catalog(directory: str | Path) -> Catalog:
    """The catalog of a dataset directory (its ``tools`` and ``capabilities`` tables)."""
    directory = Path(directory)
    tools = read_table(directory, "tools")
    caps = read_table(directory, "capabilities")
    return catalog_from_tables(tools, caps, str(directory / "capabilities.parquet"))


def load_catalog(cfg: CaprankConfig, model_dir: str | Path | None = None) -> Catalog:
    """The serving catalog: the model's own, else ``paths.data``, else the embedded default."""
    if model_dir is not None and (Path(model_dir) / CATALOG_DIR).is_dir():
        return read_catalog(Path(model_dir) / CATALOG_DIR)
    if cfg.paths.data is not None:
        return read_catalog(cfg.paths.data)
    from caprank.data.synth import synthesize

    ds = synthesize(cfg)
    return catalog_from_tables(
        ds.tools, ds.capabilities, f"embedded default (synthetic, seed {cfg.data.seed})"
    )


def write_catalog(catalog: Catalog, directory: str | Path) -> Path:
    """Store a catalog's tables as ``<directory>/catalog`` (a model directory's copy)."""
    from caprank.files import atomic_write_parquet

    if catalog.tool_table is None or catalog.capability_table is None:
        raise ValueError("this catalog was not built from tables; nothing to write")
    out = Path(directory) / CATALOG_DIR
    atomic_write_parquet(catalog.tool_table, out / "tools.parquet")
    atomic_write_parquet(catalog.capability_table, out / "capabilities.parquet")
    return out
