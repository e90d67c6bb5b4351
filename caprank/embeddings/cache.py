"""A content-addressed, on-disk cache of text embeddings, so a nightly run encodes only
the texts that changed.

Key: the model id and the sha256 of the exact text; value: its float32 vector. Each model
has its own folder under ``cfg.embedding_cache_dir()``:

    <model-slug>/index.json            the shards that count, and the model's dimension
    <model-slug>/shard-<hash>.parquet  text_sha256 + embedding rows written by one call

A write puts a whole new shard in place (temp file + rename), then rewrites the index under
a file lock; a crash before the index names a shard leaves that shard unused, never a torn
index. A shard that cannot be read is treated as missing (its texts are encoded again).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from caprank.config import CaprankConfig
from caprank.embeddings.text import encode_texts
from caprank.errors import DataError
from caprank.files import atomic_write_json, atomic_write_parquet, text_hash

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
LOCK_FILE = ".lock"


@dataclass
class CacheStats:
    """Lookups of distinct texts: how many were found and how many had to be encoded."""

    hits: int = 0
    misses: int = 0

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"hits": self.hits, "misses": self.misses, "hit_rate": round(self.hit_rate, 6)}


def model_slug(model: str) -> str:
    """A folder name for a model id that may be a hub name or a filesystem path."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/"))[-48:] or "model"
    return f"{readable}-{hashlib.sha256(model.encode()).hexdigest()[:12]}"


class EmbeddingCache:
    """Vectors of one model, keyed by the sha256 of their text."""

    def __init__(self, root: str | Path, model: str):
        self.model = model
        self.dir = Path(root) / model_slug(model)
        self._keys: dict[str, tuple[int, int]] | None = None  # key -> (shard, row)
        self._shards: list[Path] = []
        self._matrices: dict[int, np.ndarray] = {}
        self.dim: int | None = None

    @classmethod
    def for_config(cls, cfg: CaprankConfig) -> EmbeddingCache:
        return cls(cfg.embedding_cache_dir(), cfg.embedding.text_model)

    # ------------------------------------------------------------------ reading
    def _read_index(self) -> dict:
        path = self.dir / INDEX_FILE
        if not path.exists():
            return {"model": self.model, "dim": None, "shards": []}
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(str(path), f"embedding cache index is not valid JSON ({exc})") from exc
        if index.get("model") != self.model:
            raise DataError(
                str(path),
                f"cache folder belongs to model {index.get('model')!r}, not {self.model!r}",
                field="model",
            )
        return index

    def _load(self) -> dict[str, tuple[int, int]]:
        if self._keys is not None:
            return self._keys
        index = self._read_index()
        self.dim = index.get("dim")
        self._keys, self._shards, self._matrices = {}, [], {}
        for entry in index["shards"]:
            path = self.dir / entry["file"]
            try:
                keys = pq.read_table(path, columns=["text_sha256"])["text_sha256"].to_pylist()
            except (OSError, pa.ArrowInvalid, KeyError) as exc:
                log.warning("embedding cache shard %s unreadable, ignored: %s", path, exc)
                continue
            shard = len(self._shards)
            self._shards.append(path)
            for row, key in enumerate(keys):
                self._keys[key] = (shard, row)
        return self._keys

    def _matrix(self, shard: int) -> np.ndarray:
        if shard not in self._matrices:
            col = pq.read_table(self._shards[shard], columns=["embedding"])["embedding"]
            flat = col.combine_chunks().flatten().to_numpy()
            self._matrices[shard] = flat.astype(np.float32, copy=False).reshape(len(col), -1)
        return self._matrices[shard]

    def __len__(self) -> int:
        return len(self._load())

    def __contains__(self, key: str) -> bool:
        return key in self._load()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those keys that are present."""
        found = self._load()
        out: dict[str, np.ndarray] = {}
        for key in keys:
            where = found.get(key)
            if where is not None:
                out[key] = self._matrix(where[0])[where[1]]
        return out

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / LOCK_FILE, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> Path | None:
        """Store one shard holding these vectors; returns its path (None when empty)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(keys) != len(vectors) or vectors.ndim != 2:
            raise ValueError(f"{len(keys)} keys for a vector array of shape {vectors.shape}")
        if not len(keys):
            return None
        dim = vectors.shape[1]
        digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:20]
        name = f"shard-{digest}.parquet"
        table = pa.table(
            {
                "text_sha256": pa.array(list(keys), pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.reshape(-1), pa.float32()), dim
                ),
            }
        )
        with self._locked():
            index = self._read_index()
            if index.get("dim") not in (None, dim):
                raise DataError(
                    str(self.dir / INDEX_FILE),
                    f"cache holds {index['dim']}-dim vectors; refusing to add {dim}-dim ones",
                    field="dim",
                )
            atomic_write_parquet(table, self.dir / name)
            if name not in {s["file"] for s in index["shards"]}:
                index["shards"].append(
                    {"file": name, "rows": len(keys), "written_at": datetime.now(UTC).isoformat()}
                )
            index["dim"] = dim
            index["model"] = self.model
            atomic_write_json(self.dir / INDEX_FILE, index)
        self._keys = None  # re-read on next lookup (other writers may have added shards)
        return self.dir / name


def encode_cached(
    texts: Sequence[str],
    model: str,
    cache: EmbeddingCache | None,
    batch_size: int = 64,
    device: str = "auto",
    encode: Callable[[list[str], str, int, str], np.ndarray] = encode_texts,
) -> tuple[np.ndarray, CacheStats]:
    """``encode`` (torch's ``encode_texts`` unless a serving backend's,
    ``caprank.embeddings.backend.encoder``) through the cache: one row per text, in order,
    plus hit counts.

    Statistics count distinct texts; only the misses are encoded, in one ``encode`` call
    that runs batches of ``batch_size``, and stored, as one new shard.
    """
    texts = list(texts)
    keys = [text_hash(t) for t in texts]
    unique = list(dict.fromkeys(keys))
    first_text = dict(zip(keys, texts, strict=True))
    found = cache.get_many(unique) if cache is not None else {}
    missing = [k for k in unique if k not in found]
    stats = CacheStats(hits=len(unique) - len(missing), misses=len(missing))
    if missing:
        fresh = encode([first_text[k] for k in missing], model, batch_size, device)
        if cache is not None:
            cache.put_many(missing, fresh)
        found.update(zip(missing, fresh, strict=True))
    if not texts:
        return encode([], model, batch_size, device), stats
    return np.stack([found[k] for k in keys]).astype(np.float32, copy=False), stats


def embed_texts(
    texts: Sequence[str],
    cfg: CaprankConfig,
    use_cache: bool = True,
    text_model: str | None = None,
) -> tuple[np.ndarray, CacheStats]:
    """Encode catalog texts or intents with the configured model, or ``text_model`` (the
    model a trained bundle was built with), through the on-disk cache."""
    emb = cfg.embedding
    model = text_model or emb.text_model
    cache = EmbeddingCache(cfg.embedding_cache_dir(), model) if use_cache else None
    return encode_cached(texts, model, cache, emb.batch_size, emb.device)


def cached_encoder(
    cfg: CaprankConfig, text_model: str | None = None
) -> Callable[[Sequence[str]], np.ndarray]:
    """``embed_texts`` as an encoder that keeps one cache object between its calls, so a
    stage that encodes several times (an update: catalog, intents, guard) reads the
    cache's shards once instead of once a call."""
    emb = cfg.embedding
    model = text_model or emb.text_model
    cache = EmbeddingCache(cfg.embedding_cache_dir(), model)

    def encode(texts: Sequence[str]) -> np.ndarray:
        return encode_cached(
            list(texts), model, cache, emb.batch_size, emb.device, encode=encode_texts
        )[0]

    return encode
