"""The two baselines ``bench-serve`` measures the predictor against, as servers.

- ``noop``: a ``kserve.Model`` whose predict returns a constant: the HTTP/JSON floor.
- ``naive``: what a first implementation would do per request: read the candidates'
  features (and text embeddings) from Feast's online store, encode the intent (no cache;
  the predictor's own text backend, ``serving.intents.backend``, so the comparison is of
  the precomputation alone), score the candidates from scratch and sort.

Run like the predictor: ``python -m benchmarks.serve_baselines --kind noop --http_port N``.
"""

from __future__ import annotations

import argparse

import kserve
import numpy as np
import uvicorn
from fastapi import FastAPI
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

from caprank.config import load_config


class NoopModel(kserve.Model):
    async def predict(self, payload, headers=None, response_headers=None):
        return {"predictions": [{"rankings": []}]}


class NaiveModel(kserve.Model):
    def __init__(self, name: str, cfg):
        super().__init__(name)
        from caprank.features.store import open_store
        from caprank.online.intents import default_encode, serving_backend

        self.cfg = cfg
        self.store = open_store(cfg)
        self.encode = default_encode(cfg.embedding.device, serving_backend(cfg))
        self.encode(["warm up the intent encoder"], cfg.embedding.text_model)
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        from caprank.features.store import online_features

        inst = payload["instances"][0]
        ids = inst["candidate_ids"]
        feats = online_features(self.store, ids)  # per request: the candidates' rows
        keys = np.array(feats["text_embedding"].to_pylist(), dtype=np.float32)
        vec = self.encode([inst["intent"]], self.cfg.embedding.text_model)[0]
        scores = keys @ vec
        top = np.argsort(-scores)[: inst.get("top_k", 10)]
        return {"predictions": [{"rankings": [
            {"capability_id": ids[i], "score": float(scores[i])} for i in top
        ]}]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kind", choices=["noop", "naive"], required=True)
    p.add_argument("--model_name", default="caprank")
    p.add_argument("--model_dir", default=None)
    p.add_argument("--http_port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    cfg = load_config(None, args.overrides)
    if cfg.serving.intents.torch_threads:  # the same encoder settings as the predictor
        import torch

        torch.set_num_threads(cfg.serving.intents.torch_threads)
    model = NoopModel(args.model_name) if args.kind == "noop" else NaiveModel(args.model_name, cfg)
    model.ready = True
    repo = ModelRepository()
    repo.update(model)
    dataplane = DataPlane(model_registry=repo)
    app = FastAPI()
    ext = ModelRepositoryExtension(model_registry=repo)
    register_v1_endpoints(app, dataplane, ext)
    register_v2_endpoints(app, dataplane, ext)
    uvicorn.run(app, host=args.host, port=args.http_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
