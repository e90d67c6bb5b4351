"""Intent embeddings at serving time: an LRU cache with a TTL and a micro-batcher.

A cache hit costs a dictionary lookup; a miss costs one forward pass of the text model
(MiniLM on a CPU core: about 13 ms in torch, about 7 ms in ONNX Runtime, the default
``serving.intents.backend``). Under concurrent load the batcher encodes
the misses that arrive within ``serving.intents.max_batch_wait_ms`` of each other in one
call, which costs less CPU per intent than one call each (docs/serving.md has the
measurement).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from caprank.config import CaprankConfig, ServingConfig
from caprank.embeddings.backend import TORCH, TextBackend

Encode = Callable[[list[str], str], np.ndarray]


class IntentCache:
    """Thread-safe LRU of (text model, intent text) -> embedding, entries expire after TTL."""

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[tuple[str, str], tuple[float, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, model: str, text: str) -> np.ndarray | None:
        key = (model, text)
        with self._lock:
            item = self._data.get(key)
            if item is not None and self._clock() - item[0] <= self.ttl_s:
                self._data.move_to_end(key)
                self.hits += 1
                return item[1]
            if item is not None:
                del self._data[key]
            self.misses += 1
            return None

    def peek(self, model: str, text: str) -> bool:
        """Whether a fresh entry is there (no LRU move, no hit or miss counted)."""
        with self._lock:
            item = self._data.get((model, text))
            return item is not None and self._clock() - item[0] <= self.ttl_s

    def put(self, model: str, text: str, vec: np.ndarray) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[(model, text)] = (self._clock(), vec)
            self._data.move_to_end((model, text))
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class EncodeBatcher:
    """One worker thread per text model that encodes queued texts in batches."""

    def __init__(self, encode: Encode, model: str, max_batch: int, max_wait_s: float):
        self._encode = encode
        self.model = model
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[tuple[str, Future] | None] = queue.Queue()
        self.batches = 0
        self.items = 0
        self._thread = threading.Thread(target=self._run, name=f"encode-{model}", daemon=True)
        self._thread.start()

    def submit(self, text: str) -> Future:
        fut: Future = Future()
        self._queue.put((text, fut))
        return fut

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    item = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else (self._queue.get_nowait())
                    )
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            texts = [t for t, _ in batch]
            try:
                vecs = self._encode(texts, self.model)
            except BaseException as exc:
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, fut), vec in zip(batch, vecs, strict=True):
                fut.set_result(vec)


def serving_backend(cfg: CaprankConfig, *, catalog: bool = False) -> TextBackend:
    """The text-model runtime ``serving.intents`` asks for; intents run on
    ``torch_threads`` threads, the catalog build (``catalog``) on the runtime's default."""
    intents = cfg.serving.intents
    return TextBackend(
        name=intents.backend,
        quantize=intents.quantize,
        onnx_dir=str(intents.onnx_dir) if intents.onnx_dir else None,
        threads=0 if catalog else intents.torch_threads,
    )


def default_encode(device: str = "auto", backend: TextBackend = TORCH) -> Encode:
    """``encode_texts`` with the serving device and backend; normalized float32 rows."""
    from caprank.embeddings.backend import encode_with

    def encode(texts: list[str], model: str) -> np.ndarray:
        return encode_with(texts, model, max(len(texts), 1), device, backend)

    return encode


class IntentEncoder:
    """Embeds intent texts through the cache, and the batcher when enabled."""

    def __init__(self, cfg: ServingConfig, encode: Encode, clock=time.monotonic):
        self.cache = IntentCache(cfg.intents.cache_size, cfg.intents.cache_ttl_s, clock)
        self._encode = encode
        self._batching = cfg.intents.batch and cfg.intents.max_batch_size > 1
        self._max_batch = cfg.intents.max_batch_size
        self._max_wait_s = cfg.intents.max_batch_wait_ms / 1000.0
        self._batchers: dict[str, EncodeBatcher] = {}
        self._lock = threading.Lock()

    def _batcher(self, model: str) -> EncodeBatcher:
        with self._lock:
            b = self._batchers.get(model)
            if b is None:
                b = EncodeBatcher(self._encode, model, self._max_batch, self._max_wait_s)
                self._batchers[model] = b
            return b

    def embed(self, text: str, model: str) -> tuple[np.ndarray, bool]:
        """(embedding, cache hit) of one intent."""
        vec = self.cache.get(model, text)
        if vec is not None:
            return vec, True
        if self._batching:
            vec = self._batcher(model).submit(text).result()
        else:
            vec = self._encode([text], model)[0]
        vec = np.ascontiguousarray(vec, dtype=np.float32)
        self.cache.put(model, text, vec)
        return vec, False

    def warm(self, texts: list[str], model: str) -> int:
        """Encode the uncached ``texts`` in one batch and cache them (known frequent
        intents, the local canary's traffic pool); returns how many were encoded."""
        missing = [t for t in dict.fromkeys(texts) if self.cache.get(model, t) is None]
        if missing:
            vecs = np.ascontiguousarray(self._encode(missing, model), dtype=np.float32)
            for text, vec in zip(missing, vecs, strict=True):
                self.cache.put(model, text, vec)
        return len(missing)

    def encode(self, texts: list[str], model: str) -> np.ndarray:
        """One batch of texts with ``model``, past the cache and the batcher (a batch job's
        texts, e.g. the drift monitor's sample of served intents)."""
        return np.ascontiguousarray(self._encode(list(texts), model), dtype=np.float32)

    def close(self) -> None:
        for b in list(self._batchers.values()):
            b.close()
