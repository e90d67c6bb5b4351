"""Which runtime runs the text model: torch (training, the reference) or ONNX Runtime
(serving; ``caprank.embeddings.onnx_encoder``), behind one ``encode_with``.

Kept apart from ``caprank.embeddings.text`` so the training path never reaches the ONNX
code: serving modules import this one and hand ``backend.encode`` to ``encode_cached``
(``BundleBuilder``, on the training path through the MLflow pyfunc, only receives a backend).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from caprank.embeddings.cache import EmbeddingCache
from caprank.embeddings.text import embedding_dim, encode_texts


@dataclass(frozen=True)
class TextBackend:
    """The runtime of the text model: torch, or ONNX Runtime (fp32, or int8 weights when
    ``quantize``) exported into ``onnx_dir`` and run on ``threads`` intra-op threads."""

    name: Literal["torch", "onnx"] = "torch"
    quantize: bool = False
    onnx_dir: str | None = None  # export cache; None: onnx_encoder.default_onnx_dir()
    threads: int = 0  # ONNX Runtime intra-op threads; 0: its default

    def cache_model(self, model: str) -> str:
        """The embedding-cache namespace of this backend's vectors: fp32 ONNX shares
        torch's (they agree to float error, tested), int8 vectors are kept apart."""
        return f"{model}#onnx-int8" if self.name == "onnx" and self.quantize else model

    def encode(self, texts: list[str], model: str, batch_size: int, device: str) -> np.ndarray:
        """``encode_with`` on this backend, in the shape ``encode_cached`` takes."""
        return encode_with(texts, model, batch_size, device, self)


TORCH = TextBackend()


@functools.lru_cache(maxsize=4)
def load_onnx(model: str, device: str, backend: TextBackend):
    """Load (once per process) the ONNX export of ``model``, exporting it on first use."""
    from caprank.embeddings.onnx_encoder import default_onnx_dir, load_onnx_encoder

    root = backend.onnx_dir or default_onnx_dir()
    return load_onnx_encoder(model, root, backend.quantize, device, backend.threads)


def encode_with(
    texts: list[str],
    model: str,
    batch_size: int = 64,
    device: str = "auto",
    backend: TextBackend = TORCH,
) -> np.ndarray:
    """``encode_texts`` on ``backend``: L2-normalized float32 rows in input order, encoded
    in batches of ``batch_size`` texts of similar length."""
    if backend.name == "torch":
        return encode_texts(texts, model, batch_size, device)
    enc = load_onnx(model, device, backend)
    if not texts:
        return np.zeros((0, enc.dim), dtype=np.float32)
    return enc.encode(list(texts), batch_size)


def backend_dim(model: str, device: str = "auto", backend: TextBackend = TORCH) -> int:
    if backend.name == "torch":
        return embedding_dim(model, device)
    return load_onnx(model, device, backend).dim


def cache_for(
    root: str | Path | None, model: str, backend: TextBackend = TORCH
) -> EmbeddingCache | None:
    """The on-disk cache of ``model``'s vectors from ``backend`` (None without a root)."""
    return EmbeddingCache(root, backend.cache_model(model)) if root else None
