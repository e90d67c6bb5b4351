"""The lexical channel's vocabulary: TF-IDF over word unigrams and bigrams, in numpy.

Dense sentence vectors blur the exact words ("salmon" vs "tofu") that often decide the
capability; a TF-IDF bag restores them. Weights feed ``torch.nn.EmbeddingBag`` as
(index, offset, weight) triples, so the lexical projection is one sparse-dense product.
Kept dependency-free (no scikit-learn) so the training core runs in the slim GPU image.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


def terms(text: str) -> list[str]:
    words = _TOKEN.findall(text.lower())
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


@dataclass(frozen=True)
class Lexicon:
    vocab: tuple[str, ...]
    idf: np.ndarray  # (V,) float32

    @classmethod
    def fit(cls, texts: Iterable[str], min_df: int = 2, max_terms: int = 20_000) -> Lexicon:
        """Terms in at least ``min_df`` texts, the ``max_terms`` most frequent; smooth idf."""
        df: Counter[str] = Counter()
        n = 0
        for t in texts:
            df.update(set(terms(t)))
            n += 1
        kept = sorted((w for w, c in df.items() if c >= min_df), key=lambda w: (-df[w], w))
        kept = kept[:max_terms]
        idf = np.array([math.log((1 + n) / (1 + df[w])) + 1.0 for w in kept], dtype=np.float32)
        return cls(tuple(kept), idf)

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index")
        if cached is None:
            cached = {w: j for j, w in enumerate(self.vocab)}
            object.__setattr__(self, "_index", cached)
        return cached

    def bags(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices, offsets, weights): sublinear-tf x idf, L2-normalized per text."""
        index = self.index
        idx: list[int] = []
        offsets: list[int] = []
        weights: list[float] = []
        for t in texts:
            offsets.append(len(idx))
            counts = Counter(j for j in (index.get(w) for w in terms(t)) if j is not None)
            if not counts:
                continue
            js = np.fromiter(counts, dtype=np.int64, count=len(counts))
            tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
            w = tf * self.idf[js]
            w /= np.linalg.norm(w)
            idx.extend(js.tolist())
            weights.extend(w.tolist())
        return (
            np.asarray(idx, dtype=np.int64),
            np.asarray(offsets, dtype=np.int64),
            np.asarray(weights, dtype=np.float32),
        )

    def to_json(self) -> dict:
        return {"vocab": list(self.vocab), "idf": [round(float(x), 6) for x in self.idf]}

    @classmethod
    def from_json(cls, data: dict) -> Lexicon:
        return cls(tuple(data["vocab"]), np.asarray(data["idf"], dtype=np.float32))
