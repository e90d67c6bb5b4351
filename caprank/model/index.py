"""``RankIndex``: a trained model precomputed for one catalog.

Keys (C, K) are computed once; an intent costs its query vector (two small matmuls and
a lexical bag) and one matrix-vector product. Training validation, the benchmarks and
serving all score through this class, so they rank identically; likewise the success
probability is the value head mapped through the bundle's calibration here only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from caprank.model.calibration import Calibration
from caprank.model.inputs import intent_batch
from caprank.model.lexicon import Lexicon
from caprank.model.shgat import SHGAT, Graph


@dataclass
class RankIndex:
    model: SHGAT
    lexicon: Lexicon
    keys: np.ndarray  # (C, K) float32
    cap_repr: torch.Tensor  # (C, H) for the value head
    cap_feat: torch.Tensor  # (C, F)
    capability_ids: list[str]
    text_model: str
    device: str = "cpu"
    calibration: Calibration = field(default_factory=Calibration)

    @classmethod
    def build(
        cls,
        model: SHGAT,
        lexicon: Lexicon,
        graph: Graph,
        capability_ids: Sequence[str],
        text_model: str,
        device: str = "cpu",
        calibration: Calibration | None = None,
    ) -> RankIndex:
        was_training = model.training
        model.eval()
        graph = graph.to(device)
        with torch.inference_mode():
            _, caps = model.encode(graph)
            keys = model.keys(graph, caps)
        model.train(was_training)
        return cls(
            model,
            lexicon,
            np.ascontiguousarray(keys.float().cpu().numpy()),
            caps.float(),
            graph.cap_feat.float(),
            list(capability_ids),
            text_model,
            device,
            calibration or Calibration(),
        )

    def __len__(self) -> int:
        return len(self.capability_ids)

    def queries(self, dense: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """(B, K) query vectors for intents (unit text vectors and their raw texts)."""
        dense = np.atleast_2d(np.asarray(dense, dtype=np.float32))
        batch = intent_batch(dense, self.lexicon.bags(list(texts))).to(self.device)
        with torch.inference_mode():
            was = self.model.training
            self.model.eval()
            q = self.model.query(batch)
            self.model.train(was)
        return q.float().cpu().numpy()

    def scores(self, dense: np.ndarray, texts: Sequence[str], chunk: int = 1024) -> np.ndarray:
        """(B, C) scores of every capability for each intent."""
        out = np.empty((len(texts), len(self)), dtype=np.float32)
        for a in range(0, len(texts), chunk):
            out[a : a + chunk] = (
                self.queries(dense[a : a + chunk], texts[a : a + chunk]) @ self.keys.T
            )
        return out

    def values(self, dense: np.ndarray, text: str, candidate_idx: np.ndarray) -> np.ndarray:
        """Value-head estimates of the expected reward for one intent and a few rows."""
        return self.values_many(np.atleast_2d(dense), [text], np.atleast_2d(candidate_idx))[0]

    def values_many(
        self, dense: np.ndarray, texts: Sequence[str], candidate_idx: np.ndarray
    ) -> np.ndarray:
        """(B, k) value-head estimates: intent i against its rows ``candidate_idx[i]``, in
        one forward pass (calibration scores every validation intent's top k at once)."""
        idx = torch.as_tensor(np.asarray(candidate_idx, dtype=np.int64), device=self.device)
        b, k = idx.shape
        batch = intent_batch(
            np.asarray(dense, dtype=np.float32), self.lexicon.bags(list(texts))
        ).to(self.device)
        with torch.inference_mode():
            was = self.model.training
            self.model.eval()
            state = self.model.intent_state(batch).repeat_interleave(k, dim=0)
            flat = idx.reshape(-1)
            v = self.model.value(state, self.cap_repr[flat], self.cap_feat[flat])
            self.model.train(was)
        return v.float().cpu().numpy().reshape(b, k)

    def success_probability(
        self, dense: np.ndarray, text: str, candidate_idx: np.ndarray
    ) -> np.ndarray:
        """Calibrated probability that each candidate is relevant (``values`` mapped
        through the bundle's calibration)."""
        return self.calibration.apply(self.values(dense, text, candidate_idx))
