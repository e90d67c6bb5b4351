"""ONNX Runtime inference for a sentence-transformers text model: the fast serving path.

torch stays the training backend. For serving, the torch model (transformer, pooling and
normalization in one graph) is exported once per model and variant into a cache folder
outside site-packages, as a whole directory that appears atomically; the int8 variant is
the fp32 export with its MatMul weights quantized per channel (dynamic quantization).
Encoding tokenizes once and sorts texts by token count, so each batch pads only to
its own longest text.

The optimum/sentence-transformers ``backend="onnx"`` route needs ``optimum-onnx``, which
pins transformers < 4.58 (this project runs transformers 5); the export here needs only
torch's own exporter, ``onnx`` and ``onnxruntime``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from caprank.files import atomic_dir

log = logging.getLogger(__name__)

FORMAT = 1
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"
TOKENIZER_DIR = "tokenizer"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


def default_onnx_dir() -> Path:
    """Per-user cache, shared by every caprank home (exports depend only on the model)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "caprank" / "onnx"


def model_fingerprint(path: str) -> str:
    """Cheap identity of a local model folder (file names, sizes, mtimes); a hub name as is."""
    root = Path(path)
    digest = hashlib.sha256(str(root).encode())
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.is_file():
                st = p.stat()
                digest.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def export_dir(root: str | Path, model: str, quantize: bool) -> Path:
    """Where the export of ``model`` (fp32 or int8) lives under ``root``."""
    from caprank.embeddings.cache import model_slug
    from caprank.embeddings.text import resolve_model_path

    path = resolve_model_path(model)
    variant = "int8" if quantize else "fp32"
    return Path(root) / f"{model_slug(model)}-{model_fingerprint(path)}-{variant}"


def _graph(st):
    """The torch SentenceTransformer as a function of token tensors (what gets exported)."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self, st):
            super().__init__()
            self.st = st

        def forward(self, input_ids, attention_mask, token_type_ids):
            feats = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
            }
            return self.st(feats)["sentence_embedding"]

    return Graph(st).eval()


def export_onnx(model: str, out: Path, quantize: bool) -> Path:
    """Export ``model`` from torch into ``out`` (atomically: a half-written export is never
    visible); int8 quantizes the fp32 graph's MatMul weights per channel."""
    import torch

    from caprank.embeddings.text import load_encoder

    st = load_encoder(model, "cpu")
    tokenizer = st.tokenizer
    sample = tokenizer(
        ["an example intent", "a second, somewhat longer example sentence"],
        padding=True,
        return_tensors="pt",
    )
    args = tuple(
        sample[k] if k in sample else torch.zeros_like(sample["input_ids"]) for k in INPUTS
    )
    dynamic = {k: {0: "batch", 1: "seq"} for k in INPUTS} | {"embedding": {0: "batch"}}
    log.info("exporting %s to ONNX (%s) in %s", model, "int8" if quantize else "fp32", out)
    with atomic_dir(out) as tmp:
        fp32 = tmp / (MODEL_FILE if not quantize else "fp32.onnx")
        with torch.no_grad():
            torch.onnx.export(
                _graph(st),
                args,
                str(fp32),
                input_names=list(INPUTS),
                output_names=["embedding"],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                str(fp32),
                str(tmp / MODEL_FILE),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
            )
            fp32.unlink()
        tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        meta = {
            "format": FORMAT,
            "model": model,
            "quantize": quantize,
            "max_seq_length": int(st.max_seq_length),
            "dim": int(st.get_embedding_dimension()),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def providers(device: str) -> list[str]:
    """CUDA first when asked for (or 'auto' and ONNX Runtime has it), CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise RuntimeError("device 'cuda' requested but onnxruntime has no CUDA provider")
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEncoder:
    """A sentence encoder over an exported ONNX graph: L2-normalized float32 rows."""

    def __init__(self, directory: str | Path, device: str = "auto", threads: int = 0):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.dir = Path(directory)
        meta = json.loads((self.dir / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise RuntimeError(f"{self.dir}: ONNX export format {meta.get('format')!r}")
        self.max_seq_length = int(meta["max_seq_length"])
        self.dim = int(meta["dim"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.dir / TOKENIZER_DIR))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.dir / MODEL_FILE), opts, providers=providers(device)
        )
        # What the graph takes (the exporter drops inputs the model ignores); a tokenizer
        # without token types (XLM-R) gets zeros.
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.calls = 0  # forward passes run (tests and benchmarks read it)
        # A fast tokenizer sets its truncation state per call: concurrent calls from
        # request threads fail with "Already borrowed", so they take turns (microseconds).
        self._tokenize_lock = threading.Lock()

    def _run(self, tokens: dict[str, list[list[int]]], rows: np.ndarray) -> np.ndarray:
        """One forward pass over ``rows`` of the tokenized texts, padded to their longest."""
        width = max(len(tokens["input_ids"][i]) for i in rows)
        feed = {}
        for name in self.inputs:
            pad = self.tokenizer.pad_token_id if name == "input_ids" else 0
            arr = np.full((len(rows), width), pad or 0, dtype=np.int64)
            for r, i in enumerate(rows):
                seq = tokens[name][i]
                arr[r, : len(seq)] = seq
            feed[name] = arr
        self.calls += 1
        return self.session.run(None, feed)[0]

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Rows in input order. Texts are tokenized once, then run in batches of similar
        token counts (longest first), so each batch pads only to its own longest text."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        with self._tokenize_lock:
            tokens = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length)
        tokens = {k: tokens.get(k) for k in self.inputs}
        if tokens.get("token_type_ids") is None and "token_type_ids" in self.inputs:
            tokens["token_type_ids"] = [[0] * len(seq) for seq in tokens["input_ids"]]
        order = np.argsort([-len(seq) for seq in tokens["input_ids"]], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._run(tokens, rows)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def load_onnx_encoder(
    model: str, root: str | Path, quantize: bool, device: str = "auto", threads: int = 0
) -> OnnxEncoder:
    """The export of ``model`` under ``root`` (made now if absent), opened for inference."""
    out = export_dir(root, model, quantize)
    if not (out / META_FILE).is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / ".export.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one exporter per cache folder at a time
            try:
                if not (out / META_FILE).is_file():
                    export_onnx(model, out, quantize)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return OnnxEncoder(out, device, threads)
