"""A tiny training problem with fake (hash-seeded) vectors: no text model, fast."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.model.bundle import Bundle
from caprank.model.shgat import SHGAT, ModelDims
from caprank.training.data import Prepared, prepare

TEXT_DIM, TOOL_DIM = 16, 24


def fake_encode(texts: list[str]) -> np.ndarray:
    out = np.empty((len(texts), TEXT_DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(TEXT_DIM)
        out[i] = v / np.linalg.norm(v)
    return out


def tiny_training_cfg(base: CaprankConfig, **training) -> CaprankConfig:
    cfg = base.model_copy(deep=True)
    settings = {
        "hidden_dim": 16,
        "heads": 2,
        "layers": 1,
        "lexical_dim": 8,
        "batch_size": 32,
        "max_steps": 12,
        "eval_every": 4,
        "checkpoint_every": 4,
        "log_every": 2,
        "patience": 50,
        "baselines": [],
        "device": "cpu",
        **training,
    }
    for key, value in settings.items():
        setattr(cfg.training, key, value)
    return cfg


def tiny_prepared(ds: Dataset, cfg: CaprankConfig, features: pa.Table | None = None) -> Prepared:
    tool_ids = ds.tools["tool_id"].to_pylist()
    cap_ids = ds.capabilities["capability_id"].to_pylist()
    rng = np.random.default_rng(0)
    tools = rng.standard_normal((len(tool_ids), TOOL_DIM)).astype(np.float32)
    tools /= np.linalg.norm(tools, axis=1, keepdims=True)
    caps = fake_encode(ds.capabilities["description"].to_pylist())
    return prepare(ds, cfg, tool_ids, tools, cap_ids, caps, features, fake_encode)


def tiny_model(prep: Prepared, cfg: CaprankConfig) -> SHGAT:
    import torch

    tc = cfg.training
    torch.manual_seed(tc.seed)
    return SHGAT(
        ModelDims(
            text_dim=TEXT_DIM,
            tool_dim=TOOL_DIM,
            n_features=len(prep.scaler.columns),
            n_tools=len(prep.inputs.tool_ids),
            n_id_caps=len(prep.id_capabilities),
            vocab=len(prep.lexicon),
            hidden=tc.hidden_dim,
            heads=tc.heads,
            layers=tc.layers,
            lexical_dim=tc.lexical_dim,
        )
    )


def tiny_bundle(prep: Prepared, model: SHGAT, text_model: str = "fake") -> Bundle:
    return Bundle(
        model=model.eval(),
        lexicon=prep.lexicon,
        scaler=prep.scaler,
        text_model=text_model,
        tool_ids=prep.inputs.tool_ids,
        tool_vectors=prep.inputs.tool_vectors,
        capability_ids=prep.inputs.capability_ids,
        capability_text=prep.inputs.capability_text,
        id_capabilities=prep.id_capabilities,
        evidence=prep.evidence,
        hybrid={"text_weight": 0.3, "graph_weight": 0.7, "method": "concat"},
        meta={"version": "test-bundle"},
    )
