"""The ONNX Runtime serving backend of the text model: it agrees with torch (fp32 to float
error, int8 loosely), fp32 keeps dense-ranking MRR within 0.005, exports once per model and
variant into its cache folder, and picks CUDA only when ONNX Runtime has it."""

from __future__ import annotations

import numpy as np
import pytest

from caprank.config import CaprankConfig
from caprank.embeddings import onnx_encoder
from caprank.embeddings.backend import TORCH, TextBackend, cache_for, encode_with, load_onnx
from caprank.embeddings.cache import model_slug
from caprank.embeddings.text import encode_texts
from caprank.evaluation.metrics import mean_reciprocal_rank
from caprank.evaluation.queries import queries_from_labels
from caprank.online.catalog import catalog_from_tables
from caprank.online.intents import serving_backend
from caprank.online.ranker import DenseBuilder

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "Book a table for two tonight",
    "x",
    "Convert 20 euros to dollars and send the receipt to accounting",
    "weather in Lyon",
    " ".join(["summarize the quarterly revenue report for the finance team"] * 40),  # > 256
    "résumé des ventes 2024 — 東京",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def onnx_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("onnx-exports"))


def _backend(root: str, quantize: bool = False) -> TextBackend:
    return TextBackend("onnx", quantize=quantize, onnx_dir=root, threads=1)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fp32_onnx_agrees_with_torch(onnx_root):
    ref = encode_texts(TEXTS, MODEL, batch_size=4, device="cpu")
    for batch_size in (1, 4, 64):  # padding and batch composition must not matter
        got = encode_with(TEXTS, MODEL, batch_size, "cpu", _backend(onnx_root))
        assert got.shape == ref.shape and got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert _cosines(got, ref).min() >= 0.9999
        np.testing.assert_allclose(got, ref, atol=1e-4)
    assert encode_with([], MODEL, 8, "cpu", _backend(onnx_root)).shape == (0, 384)


def test_int8_onnx_agrees_loosely_and_is_cached_apart(onnx_root):
    ref = encode_texts(TEXTS, MODEL, batch_size=8, device="cpu")
    got = encode_with(TEXTS, MODEL, 8, "cpu", _backend(onnx_root, quantize=True))
    cos = _cosines(got, ref)
    # Measured on these texts: min about 0.98, mean about 0.99 (per-channel int8 MatMuls).
    assert cos.min() >= 0.97 and cos.mean() >= 0.985
    assert cos.min() < 0.9999  # it really is the quantized graph
    int8, fp32 = _backend(onnx_root, quantize=True), _backend(onnx_root)
    assert fp32.cache_model(MODEL) == TORCH.cache_model(MODEL) == MODEL
    assert cache_for("/c", MODEL, int8).dir != cache_for("/c", MODEL, fp32).dir


def test_export_happens_once_per_model_and_variant(onnx_root, monkeypatch):
    encode_with(TEXTS[:1], MODEL, 8, "cpu", _backend(onnx_root))
    fp32 = onnx_encoder.export_dir(onnx_root, MODEL, quantize=False)
    int8 = onnx_encoder.export_dir(onnx_root, MODEL, quantize=True)
    assert fp32 != int8 and fp32.name.startswith(model_slug(MODEL))
    assert (fp32 / onnx_encoder.MODEL_FILE).is_file() and (fp32 / onnx_encoder.META_FILE).is_file()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds the model")

    monkeypatch.setattr(onnx_encoder, "export_onnx", no_export)
    load_onnx.cache_clear()
    again = onnx_encoder.load_onnx_encoder(MODEL, onnx_root, quantize=False, device="cpu")
    assert again.dim == 384
    leftovers = [p.name for p in fp32.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # the export appears whole (atomic_dir), no temp folders remain


def test_dense_ranking_mrr_unchanged_by_backend(onnx_root, tiny_dataset):
    """The dense ranker on the tiny dataset: MRR with fp32 ONNX within 0.005 of torch (no
    embedding cache, so each backend encodes the catalog itself). int8 moves it by about
    0.02 here (0.701 -> 0.721 when written), outside that bound: it stays off by default."""
    ds = tiny_dataset
    catalog = catalog_from_tables(ds.tools, ds.capabilities, "tiny")
    queries = queries_from_labels(ds, "test")
    relevant = [list(queries.relevance[i].indices) for i in range(len(queries))]
    mrr = {}
    for name, backend in (
        ("torch", TORCH),
        ("onnx", _backend(onnx_root)),
        ("onnx-int8", _backend(onnx_root, quantize=True)),
    ):
        ranker = DenseBuilder(MODEL, device="cpu", backend=backend).build(catalog)
        intents = encode_with(list(queries.texts), MODEL, 64, "cpu", backend)
        mrr[name] = mean_reciprocal_rank(intents @ ranker.keys.T, relevant)
    assert mrr["torch"] > 0.1  # a real ranking, not noise
    assert abs(mrr["onnx"] - mrr["torch"]) <= 0.005, mrr
    assert mrr["onnx-int8"] != mrr["torch"] and abs(mrr["onnx-int8"] - mrr["torch"]) <= 0.05


def test_serving_backend_follows_config(tmp_path):
    cfg = CaprankConfig.model_validate(
        {
            "paths": {"home": str(tmp_path)},
            "serving": {"intents": {"quantize": True, "onnx_dir": str(tmp_path / "o")}},
        }
    )
    assert CaprankConfig().serving.intents.backend == "onnx"
    intents = serving_backend(cfg)
    assert intents == TextBackend("onnx", True, str(tmp_path / "o"), threads=1)
    assert serving_backend(cfg, catalog=True).threads == 0
    cfg.serving.intents.backend = "torch"
    assert serving_backend(cfg).name == "torch"


def test_cuda_provider_only_when_present(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_encoder.providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="CUDA"):
        onnx_encoder.providers("cuda")
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert onnx_encoder.providers("auto")[0] == "CUDAExecutionProvider"
    assert onnx_encoder.providers("cpu") == ["CPUExecutionProvider"]


def test_concurrent_encodes_from_request_threads(onnx_root):
    """Request threads encode at once (batching off): same vectors, no tokenizer errors."""
    from concurrent.futures import ThreadPoolExecutor

    backend = _backend(onnx_root)
    expected = encode_with(TEXTS, MODEL, 8, "cpu", backend)
    with ThreadPoolExecutor(8) as pool:
        rows = list(
            pool.map(lambda i: encode_with([TEXTS[i % 6]], MODEL, 1, "cpu", backend), range(48))
        )
    for i, row in enumerate(rows):
        np.testing.assert_allclose(row[0], expected[i % 6], atol=1e-5)
