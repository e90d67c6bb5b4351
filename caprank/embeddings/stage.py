"""The embed stage: text, Node2Vec and hybrid vectors for every tool and capability,
validated, then written as two Parquet tables that Feast can serve.

``embed`` is what the pipeline component and ``caprank embed`` call; ``load_embeddings``
is what training and serving read back (validated again, staleness included).

With ``embedding.finetune.enabled`` the stage first fine-tunes the text encoder on the
training pairs (``caprank.training.data.train_pairs``: never validation or test) and
encodes with it; the encoder directory (``caprank-ft-<version>``) is written into the
output folder, so the steps downstream get it with the artifact, and its id is the
tables' ``text_model``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from caprank import __version__
from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset, _read_parquet, conform
from caprank.data.schemas import EMBEDDING_TABLES, TableSpec
from caprank.embeddings.cache import CacheStats, embed_texts
from caprank.embeddings.catalog_graph import CatalogGraph, build_catalog_graph
from caprank.embeddings.catalog_text import capability_texts, tool_texts
from caprank.embeddings.finetune import FinetunedEncoder, finetune_encoder, register_dir
from caprank.embeddings.hybrid import hybrid_dim, hybrid_embeddings, l2_normalize
from caprank.embeddings.node2vec import Node2VecResult, node2vec_embeddings
from caprank.embeddings.text import register_encoder, resolve_device
from caprank.embeddings.validation import VectorColumn, validate_table
from caprank.errors import DataError
from caprank.files import atomic_dir, text_hash

MANIFEST = "embeddings.json"
KINDS = {"tools": "tool_embeddings", "capabilities": "capability_embeddings"}


@dataclass
class EmbedResult:
    """Where the stage wrote, how much, and how well the cache served it."""

    out_dir: Path
    tool_path: Path
    capability_path: Path
    n_tools: int
    n_capabilities: int
    cache: CacheStats
    summary: dict = field(default_factory=dict)

    @property
    def cache_hit_rate(self) -> float:
        return self.cache.hit_rate


@dataclass
class EmbeddingSet:
    """Vectors of one kind of item; row ``i`` of each matrix belongs to ``ids[i]``."""

    ids: list[str]
    text: np.ndarray
    graph: np.ndarray
    hybrid: np.ndarray

    def index(self) -> dict[str, int]:
        return {x: i for i, x in enumerate(self.ids)}


@dataclass
class Embeddings:
    """What ``load_embeddings`` returns: both kinds plus how they were made."""

    tools: EmbeddingSet
    capabilities: EmbeddingSet
    text_model: str  # the encoder's id: a fine-tuned one is registered by load_embeddings
    params: dict
    input_hash: str
    computed_at: datetime


def _utc(ts: datetime | None, what: str) -> datetime | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware (got {ts.isoformat()})")
    return ts.astimezone(UTC)


def _check_ids(table: pa.Table, key: str, source: str) -> list[str]:
    ids = table[key].to_pylist()
    if not ids:
        raise DataError(source, "no rows: nothing to embed", field=key)
    seen: dict[str, int] = {}
    dupes = [(i, x) for i, x in enumerate(ids) if seen.setdefault(x, i) != i]
    if dupes:
        raise DataError(
            source,
            f"{len(dupes)} duplicate ids",
            row=dupes[0][0],
            field=key,
            examples=[x for _, x in dupes],
        )
    return ids


def _params(cfg: CaprankConfig, text_model: str, text_dim: int, graph: CatalogGraph) -> dict:
    emb = cfg.embedding
    tuned = emb.finetune.enabled
    return {
        "text_model": text_model,
        "base_text_model": emb.text_model,
        "finetune": emb.finetune.model_dump(mode="json") if tuned else None,
        "text_dim": text_dim,
        "node2vec": emb.node2vec.model_dump(mode="json"),
        "hybrid": emb.hybrid.model_dump(mode="json"),
        "hybrid_dim": hybrid_dim(text_dim, emb.node2vec.dim, emb.hybrid),
        "seed": emb.seed,
        "graph": graph.stats,
        "caprank_version": __version__,
    }


def _input_hash(ids: list[str], texts: list[str], graph: CatalogGraph, params: dict) -> str:
    """sha256 over the items, their texts, the graph's edges and the parameters."""
    digest = hashlib.sha256()
    for x, t in zip(ids, texts, strict=True):
        digest.update(f"{x}\0{text_hash(t)}\n".encode())
    g = graph.graph
    for tensor in (g.rowptr, g.col) + ((g.weight,) if g.weight is not None else ()):
        digest.update(tensor.cpu().numpy().tobytes())
    digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _vector_column(matrix: np.ndarray) -> pa.Array:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    offsets = np.arange(matrix.shape[0] + 1, dtype=np.int32) * matrix.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.reshape(-1)))


def _table(spec: TableSpec, ids, texts, text, graph, hybrid, params, input_hash, now):
    n = len(ids)
    columns = {
        spec.key[0]: pa.array(ids, pa.string()),
        "text_sha256": pa.array([text_hash(t) for t in texts], pa.string()),
        "text_embedding": _vector_column(text),
        "graph_embedding": _vector_column(graph),
        "hybrid_embedding": _vector_column(hybrid),
        "text_model": pa.array([params["text_model"]] * n, pa.string()),
        "params_json": pa.array([json.dumps(params, sort_keys=True)] * n, pa.string()),
        "input_hash": pa.array([input_hash] * n, pa.string()),
        "computed_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "event_timestamp": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
    }
    return pa.Table.from_pydict(columns, schema=spec.schema)


def _columns(text, graph, hybrid, text_dim: int, cfg: CaprankConfig) -> list[VectorColumn]:
    h_dim = hybrid_dim(text_dim, cfg.embedding.node2vec.dim, cfg.embedding.hybrid)
    return [
        VectorColumn("text_embedding", text, text_dim),
        VectorColumn("graph_embedding", graph, cfg.embedding.node2vec.dim),
        VectorColumn("hybrid_embedding", hybrid, h_dim),
    ]


def _guard_out_dir(out_dir: Path) -> None:
    """``out_dir`` is replaced whole: refuse a non-empty folder that is not ours."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise DataError(
            str(out_dir),
            f"output folder is not empty and holds no {MANIFEST}: refusing to replace it",
        )


@dataclass
class _Items:
    """One kind of item to embed: ids (checked) and the texts the encoder reads."""

    ids: list[str]
    texts: list[str]


@dataclass
class _Vectors:
    """All three kinds of vectors, rows in ``tools + capabilities`` order."""

    text: np.ndarray
    graph: np.ndarray
    hybrid: np.ndarray
    catalog: CatalogGraph
    n2v: Node2VecResult
    cache: CacheStats
    text_model: str
    finetuned: FinetunedEncoder | None = None


@dataclass
class _Run:
    """What one embed run computed, before it is validated and written."""

    items: dict[str, _Items]
    vec: _Vectors
    params: dict
    input_hash: str
    now: datetime


def _items(ds: Dataset) -> dict[str, _Items]:
    """Tools and capabilities with their texts; duplicate or missing ids fail first."""
    where = str(ds.root) if ds.root else "<dataset>"
    caps_file = f"{where}/capabilities.parquet"
    tool_ids = _check_ids(ds.tools, "tool_id", f"{where}/tools.parquet")
    cap_ids = _check_ids(ds.capabilities, "capability_id", caps_file)
    return {
        "tools": _Items(tool_ids, tool_texts(ds.tools)),
        "capabilities": _Items(cap_ids, capability_texts(ds.capabilities, ds.tools, caps_file)),
    }


def _finetune(ds: Dataset, cfg: CaprankConfig, caps: _Items, work: Path) -> FinetunedEncoder:
    """The encoder fine-tuned on the training pairs into ``work`` (base vectors for the
    hard-negative mining come through the embedding cache)."""
    from caprank.training.data import train_pairs

    emb = cfg.embedding
    return finetune_encoder(
        train_pairs(ds, cfg),
        dict(zip(caps.ids, caps.texts, strict=True)),
        emb.text_model,
        emb.finetune,
        work,
        seed=emb.seed,
        device=resolve_device(emb.device),
        threads=cfg.training.torch_threads,
        encode=lambda texts: embed_texts(texts, cfg)[0],
    )


def _compute_vectors(
    ds: Dataset,
    cfg: CaprankConfig,
    texts: list[str],
    train_until: datetime | None,
    finetuned: FinetunedEncoder | None = None,
) -> _Vectors:
    """Encode the texts (with the fine-tuned encoder when there is one), train Node2Vec on
    the catalog graph, and combine the two."""
    text_model = finetuned.name if finetuned else cfg.embedding.text_model
    text, stats = embed_texts(texts, cfg, text_model=text_model)
    catalog = build_catalog_graph(ds, cfg.embedding.node2vec, train_until)
    n2v = node2vec_embeddings(
        catalog.graph,
        cfg.embedding.node2vec,
        seed=cfg.embedding.seed,
        device=resolve_device(cfg.embedding.device),
    )
    # Skip-gram vectors share a common direction (every node co-occurs with the hubs), which
    # on small catalogs makes all cosines ~0.9; centering keeps only the structure.
    graph = l2_normalize(n2v.vectors - n2v.vectors.mean(axis=0, keepdims=True))
    hybrid = hybrid_embeddings(text, graph, cfg.embedding.hybrid, cfg.embedding.seed)
    return _Vectors(text, graph, hybrid, catalog, n2v, stats, text_model, finetuned)


def _validated_tables(run: _Run, cfg: CaprankConfig) -> dict[str, pa.Table]:
    """Both tables, each validated before anything is written."""
    vec, now = run.vec, run.now
    text_dim = vec.text.shape[1]
    rows = {"tools": vec.catalog.tool_rows(), "capabilities": vec.catalog.capability_rows()}
    tables = {}
    for kind, item in run.items.items():
        name, r = KINDS[kind], rows[kind]
        text, graph, hybrid = vec.text[r], vec.graph[r], vec.hybrid[r]
        cols = _columns(text, graph, hybrid, text_dim, cfg)
        stamps = [now] * len(item.ids)
        spec = EMBEDDING_TABLES[name]
        validate_table(spec.file, item.ids, cols, stamps, now, cfg, "nothing stored")
        tables[name] = _table(
            spec, item.ids, item.texts, text, graph, hybrid, run.params, run.input_hash, now
        )
    return tables


def _summary(run: _Run, cfg: CaprankConfig) -> dict:
    """The manifest (``embeddings.json``) and the stage's printed summary."""
    vec = run.vec
    return {
        "computed_at": run.now.isoformat(),
        "tools": len(run.items["tools"].ids),
        "capabilities": len(run.items["capabilities"].ids),
        "text_model": vec.text_model,
        "base_text_model": cfg.embedding.text_model,
        "finetune": _finetune_summary(vec.finetuned),
        "text_dim": vec.text.shape[1],
        "graph_dim": vec.graph.shape[1],
        "hybrid_dim": vec.hybrid.shape[1],
        "hybrid_method": cfg.embedding.hybrid.method,
        "cache": vec.cache.as_dict(),
        "node2vec": {
            "epoch_losses": [round(x, 5) for x in vec.n2v.epoch_losses],
            "walks_per_epoch": vec.n2v.walks_per_epoch,
            "pairs_per_epoch": vec.n2v.pairs_per_epoch,
        },
        "graph": vec.catalog.stats,
        "input_hash": run.input_hash,
        "params": run.params,
    }


def _finetune_summary(ft: FinetunedEncoder | None) -> dict | None:
    if ft is None:
        return None
    info = ft.info()
    info.pop("path")
    return info


def embed(
    ds: Dataset,
    cfg: CaprankConfig,
    out_dir: str | Path,
    now: datetime | None = None,
    *,
    train_until: datetime | None = None,
) -> EmbedResult:
    """Encode, train Node2Vec, combine, validate, and write both tables atomically.

    ``now`` stamps the rows (default: the current time); ``train_until`` bounds the
    interactions that may add co-selection edges (default: all, less held-out intents).
    Validation failures raise ``EmbeddingValidationError`` and leave ``out_dir`` untouched.
    With ``embedding.finetune.enabled`` the encoder is fine-tuned first and written beside
    the tables (``<out_dir>/caprank-ft-<version>``).
    """
    out_dir = Path(out_dir)
    _guard_out_dir(out_dir)
    now = _utc(now, "now") or datetime.now(UTC)
    train_until = _utc(train_until, "train_until")
    items = _items(ds)
    ids = items["tools"].ids + items["capabilities"].ids
    texts = items["tools"].texts + items["capabilities"].texts
    work = None
    try:
        finetuned = None
        if cfg.embedding.finetune.enabled:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.finetune.", dir=out_dir.parent))
            finetuned = _finetune(ds, cfg, items["capabilities"], work)
        vec = _compute_vectors(ds, cfg, texts, train_until, finetuned)
        params = _params(cfg, vec.text_model, vec.text.shape[1], vec.catalog)
        run = _Run(items, vec, params, _input_hash(ids, texts, vec.catalog, params), now)
        tables = _validated_tables(run, cfg)
        summary = _summary(run, cfg)
        with atomic_dir(out_dir) as tmp:
            for name, table in tables.items():
                pq.write_table(table, tmp / EMBEDDING_TABLES[name].file)
            (tmp / MANIFEST).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
            if finetuned is not None:
                shutil.move(finetuned.path, tmp / finetuned.name)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    if finetuned is not None:
        register_encoder(finetuned.name, out_dir / finetuned.name)
    return EmbedResult(
        out_dir=out_dir,
        tool_path=out_dir / EMBEDDING_TABLES["tool_embeddings"].file,
        capability_path=out_dir / EMBEDDING_TABLES["capability_embeddings"].file,
        n_tools=len(items["tools"].ids),
        n_capabilities=len(items["capabilities"].ids),
        cache=vec.cache,
        summary=summary,
    )


def _vectors(table: pa.Table, column: str) -> np.ndarray | list[np.ndarray]:
    """A list<float> column as a matrix, or as rows when widths differ (validation says)."""
    col = table[column].combine_chunks()
    widths = set(pc.fill_null(pc.list_value_length(col), 0).to_pylist())
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    if len(widths) <= 1:
        return flat.reshape(len(col), widths.pop() if widths else 0)
    return [np.asarray(v, dtype=np.float32) for v in col.to_pylist()]


def load_embeddings(
    directory: str | Path, cfg: CaprankConfig | None = None, now: datetime | None = None
) -> Embeddings:
    """Read both tables of an embed output folder, validated (staleness against ``now``).

    Widths are checked against the parameters the tables were written with; both tables
    must come from the same run (same input hash).
    """
    directory = Path(directory)
    cfg = cfg or CaprankConfig()
    now = _utc(now, "now") or datetime.now(UTC)
    register_dir(directory)  # a fine-tuned encoder travels with its vectors
    sets: dict[str, EmbeddingSet] = {}
    runs: dict[str, dict] = {}
    for kind, name in KINDS.items():
        spec = EMBEDDING_TABLES[name]
        path = directory / spec.file
        if not path.exists():
            raise DataError(str(path), f"embedding table '{name}' is missing")
        table = conform(_read_parquet(path), spec, str(path))
        if table.num_rows == 0:
            raise DataError(str(path), "embedding table has no rows")
        ids = table[spec.key[0]].to_pylist()
        try:
            params = json.loads(table["params_json"][0].as_py())
            dims = (params["text_dim"], params["node2vec"]["dim"], params["hybrid_dim"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(
                str(path), f"unreadable parameters ({exc})", field="params_json"
            ) from exc
        vecs = [_vectors(table, f"{c}_embedding") for c in ("text", "graph", "hybrid")]
        cols = [
            VectorColumn(f"{c}_embedding", v, d)
            for c, v, d in zip(("text", "graph", "hybrid"), vecs, dims, strict=True)
        ]
        stamps = table["computed_at"].to_pylist()
        validate_table(str(path), ids, cols, stamps, now, cfg, "not loaded")
        sets[kind] = EmbeddingSet(ids, *vecs)
        runs[name] = {
            "text_model": table["text_model"][0].as_py(),
            "params": params,
            "input_hash": table["input_hash"][0].as_py(),
            "computed_at": table["computed_at"][0].as_py(),
        }
    hashes = {r["input_hash"] for r in runs.values()}
    if len(hashes) != 1:
        raise DataError(
            str(directory),
            "the tool and capability tables come from different runs",
            field="input_hash",
            examples=sorted(hashes),
        )
    return Embeddings(sets["tools"], sets["capabilities"], **runs["capability_embeddings"])
