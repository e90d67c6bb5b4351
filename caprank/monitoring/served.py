"""Drift of served traffic: the embedding KS and prediction PSI checks on the requests
the ranker actually answered.

The interaction log holds every served request that got an outcome (the feedback path
writes the served intent beside it). For each window the monitor takes the intent text
of the first event of each session (as for the feature checks: sessions share a topic),
at most ``monitoring.served_sample`` of them, drawn with ``data.seed``, and:

- ``embedding_drift``: encodes them with the text encoder of the model `caprank serve`
  would load now (a fine-tuned encoder when the model was trained with one, else
  ``embedding.text_model``) and runs the per-dimension KS with Bonferroni
  (``drift.embedding_drift``): a shift in what users ask for, seen in the space the
  ranker reads;
- ``prediction_drift``: ranks them with the model `caprank serve` would load now
  (``default_model_ref``: `production`, else the dense ranker) and compares the top
  score's distribution by PSI (``drift.prediction_drift``). Both windows are scored by the
  same model, so a shift is a shift in the traffic as this model sees it, not a change of
  model; the log stores no scores of its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from caprank.config import CaprankConfig
from caprank.data.dataset import Dataset
from caprank.monitoring.drift import DriftCheck, embedding_drift, prediction_drift

Embed = Callable[[list[str]], np.ndarray]
Score = Callable[[list[str]], np.ndarray]


def served_intents(events: pa.Table, n: int, seed: int) -> list[str]:
    """Up to ``n`` non-empty intent texts of ``events``, drawn reproducibly (with repeats:
    a popular intent is asked often, and the distribution is what is compared)."""
    texts = [t for t in events["intent_text"].to_pylist() if t and t.strip()]
    if len(texts) <= n:
        return texts
    return random.Random(seed).sample(texts, n)


def served_drift(
    reference: Sequence[str],
    current: Sequence[str],
    cfg: CaprankConfig,
    *,
    embed: Embed,
    score: Score,
) -> dict[str, DriftCheck]:
    """The two checks on two windows of served intent texts."""
    mon = cfg.monitoring
    ref, cur = list(reference), list(current)
    # traffic repeats its intents: encode and score each distinct text once
    unique = list(dict.fromkeys(ref + cur))
    row = {text: i for i, text in enumerate(unique)}
    ref_rows, cur_rows = [row[t] for t in ref], [row[t] for t in cur]
    vectors, scores = np.asarray(embed(unique)), np.asarray(score(unique))
    checks = {
        "embedding_drift": embedding_drift(vectors[ref_rows], vectors[cur_rows], mon),
        "prediction_drift": prediction_drift(scores[ref_rows], scores[cur_rows], mon),
    }
    for check in checks.values():
        check.details["source"] = "served traffic (intents of the interaction log)"
        check.details["requests"] = [len(ref), len(cur)]
        check.details["distinct_intents"] = len(unique)
    return checks


def text_embedder(cfg: CaprankConfig) -> Embed:
    """``embedding.text_model`` through the on-disk embedding cache."""
    from caprank.embeddings.cache import embed_texts

    return lambda texts: embed_texts(texts, cfg)[0]


@dataclass(frozen=True)
class ServedModel:
    """The model `caprank serve` would load now, as the drift checks use it."""

    score: Score  # top-1 scores of intent texts over the catalog
    embed: Embed  # the intents' vectors from the model's own text encoder
    version: str
    text_model: str


@contextmanager
def serving_scorer(
    cfg: CaprankConfig, ds: Dataset, ref: str | None = None
) -> Iterator[ServedModel]:
    """The model `caprank serve` would load now (or ``ref``: a registry URI or a model
    directory), over ``ds``'s catalog: its top-1 scores, its text encoder and its version
    (for the report); the model is unloaded on exit."""
    from caprank.online.catalog import catalog_from_tables
    from caprank.online.models import ModelLoadError
    from caprank.online.runtime import DENSE_REF, Runtime, default_model_ref

    catalog = catalog_from_tables(ds.tools, ds.capabilities, "monitor")
    if ref is None:
        try:
            ref = default_model_ref(cfg)
        except ModelLoadError:  # nothing promoted yet (a first run): the dense ranker serves
            ref = DENSE_REF
    runtime = Runtime(cfg, ref, catalog=catalog)
    runtime.start(background_load=False, feedback=False)
    try:
        engine = runtime.engine
        primary = engine.routing.primary
        version = primary.version if primary is not None else "dense fallback"
        text_model = (primary or engine.fallback).ranker.text_model

        def score(texts: list[str]) -> np.ndarray:
            out = np.full(len(texts), np.nan)
            for i, text in enumerate(texts):
                ranked = runtime.rank({"intent": text, "top_k": 1}, f"monitor-{i}").rankings
                if ranked:
                    out[i] = ranked[0]["score"]
            return out

        def embed(texts: list[str]) -> np.ndarray:
            return engine.encoder.encode(texts, text_model)

        yield ServedModel(score, embed, version, text_model)
    finally:
        runtime.close()
