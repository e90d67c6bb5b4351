"""Permutation importance of features and ablation of score channels (synthetic, fast)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import torch

from caprank.config import EvaluationConfig
from caprank.evaluation.importance import importance, permuted_snapshot
from caprank.evaluation.queries import QuerySet
from caprank.model.serving import BundleRanker
from caprank.online.features import FeatureSnapshot
from caprank.online.models import LoadedModel

C, N = 40, 80  # capabilities, queries


@dataclass(frozen=True)
class ChannelRanker:
    """score = signal (query . identity keys) + tie-break feature + tiny noise."""

    tie: np.ndarray  # (C,) from the feature "success_rate"
    noise: np.ndarray
    off: tuple[str, ...] = ()
    text_model: str = "synthetic"
    has_value_head: bool = False

    def query(self, vec, text):
        return vec

    def score(self, q, idx):
        parts = {"signal": q + self.tie, "noise": self.noise}
        return sum(v for k, v in parts.items() if k not in self.off)

    def success_probability(self, vec, text, idx):
        return None

    def channels(self):
        return ("signal", "noise")

    def without_channel(self, name):
        return replace(self, off=(*self.off, name))


class PlainRanker:
    """No channels: the intent vector is the score row."""

    text_model, has_value_head = "synthetic", False

    def query(self, vec, text):
        return vec

    def score(self, q, idx):
        return q


@dataclass(frozen=True)
class Builder:
    """Reads ``success_rate`` (a tie-break between paired capabilities); ignores
    ``pagerank_score``."""

    kind: str = "synthetic"
    text_model: str = "synthetic"
    uses_features: bool = True

    def build(self, catalog, features):
        tie = np.asarray(features.table["success_rate"].to_pylist(), dtype=float)
        noise = np.random.default_rng(3).normal(scale=0.01, size=C)
        return ChannelRanker(0.5 * tie, noise)


def _setup():
    # query i is relevant to the even capability rel; its vector also matches rel + 1,
    # so the signal ties the pair and success_rate (1 on even rows) breaks the tie.
    rel = 2 * (np.arange(N) % (C // 2))
    vecs = np.zeros((N, C))
    vecs[np.arange(N), rel] = 1.0
    vecs[np.arange(N), rel + 1] = 1.0
    relevance = sp.csr_matrix((np.ones(N), (np.arange(N), rel)), shape=(N, C))
    ids = tuple(f"c{i}" for i in range(C))
    queries = QuerySet(
        np.array([f"q{i}" for i in range(N)]), np.array([f"t{i}" for i in range(N)]), relevance, ids
    )
    table = pa.table(
        {
            "capability_id": list(ids),
            "success_rate": [float(i % 2 == 0) for i in range(C)],
            "pagerank_score": np.random.default_rng(0).random(C).tolist(),
        }
    )
    snap = FeatureSnapshot(ids, table, datetime.now(UTC), 24.0)
    builder = Builder()
    model = LoadedModel("1", "test", builder, builder.build(None, snap), None, snap, 0.0)
    return model, queries, vecs


def test_ignored_feature_is_zero_and_dominant_channel_drops_most():
    model, queries, vecs = _setup()
    cfg = EvaluationConfig(importance_repeats=3, bootstrap_samples=200)
    rep = importance(model, queries, vecs, cfg)
    assert rep.baseline == 1.0 and rep.n_queries == N and rep.notes == []
    got = {(i.kind, i.name): i for i in rep.items}
    ignored = got["feature", "pagerank_score"].drop
    assert ignored.estimate == 0.0 and ignored.low == 0.0 and ignored.high == 0.0
    used = got["feature", "success_rate"].drop
    assert used.low > 0.1  # a shuffled tie-break loses about half the ties
    signal, noise = got["channel", "signal"].drop, got["channel", "noise"].drop
    assert signal.low > 0.5 and abs(noise.estimate) < 1e-12
    assert [i.name for i in rep.of("channel")] == ["signal", "noise"]
    assert got["feature", "success_rate"].repeats == 3


def test_importance_is_seeded_and_samples_queries():
    model, queries, vecs = _setup()
    cfg = EvaluationConfig(importance_repeats=2, importance_max_queries=30, bootstrap_samples=50)
    a, b = importance(model, queries, vecs, cfg), importance(model, queries, vecs, cfg)
    assert a.to_dict() == b.to_dict() and a.n_queries == 30


def test_model_without_features_or_channels_says_why():
    model, queries, vecs = _setup()
    plain = replace(
        model,
        builder=replace(model.builder, uses_features=False, kind="dense"),
        ranker=PlainRanker(),
    )
    rep = importance(plain, queries, vecs, EvaluationConfig(bootstrap_samples=20))
    assert rep.items == []
    assert any("reads no features" in n for n in rep.notes)
    assert any("no score channels" in n for n in rep.notes)


def test_permuted_snapshot_shuffles_one_column_only():
    model, _, _ = _setup()
    snap = model.features
    out = permuted_snapshot(snap, "pagerank_score", np.random.default_rng(1))
    assert out.table["success_rate"].equals(snap.table["success_rate"])
    before, after = (
        snap.table["pagerank_score"].to_pylist(),
        out.table["pagerank_score"].to_pylist(),
    )
    assert sorted(before) == sorted(after) and before != after


def _bundle(tiny_dataset, tiny_cfg, table=None):
    """An untrained SHGAT bundle over the tiny catalog (features from ``table``)."""
    from caprank.training.data import prepare
    from tests.train_fixtures import (
        fake_encode,
        tiny_bundle,
        tiny_model,
        tiny_prepared,
        tiny_training_cfg,
    )

    cfg = tiny_training_cfg(tiny_cfg)
    base = tiny_prepared(tiny_dataset, cfg)  # its tool and capability vectors, fake texts
    inputs = base.inputs
    prep = prepare(
        tiny_dataset, cfg, inputs.tool_ids, inputs.tool_vectors, inputs.capability_ids,
        inputs.capability_text, table, fake_encode,
    )  # fmt: skip
    return tiny_bundle(prep, tiny_model(prep, cfg)), prep


def test_shgat_channels_partition_the_score(tiny_dataset, tiny_cfg):
    from tests.train_fixtures import fake_encode

    bundle, prep = _bundle(tiny_dataset, tiny_cfg)
    model = bundle.model
    with torch.no_grad():  # the feature and id channels start at zero: give them weight
        for p in (model.feat_bias.weight, model.feat_query.weight, model.id_emb, model.id_bias):
            p.normal_()
    ranker = BundleRanker(bundle.index(prep.inputs), "fake")
    texts = ["find a tool to send mail", "resize an image"]
    q = ranker.index.queries(fake_encode(texts), texts)[0]
    keys = ranker.index.keys
    slices = model.channel_slices()
    covered = np.concatenate([np.arange(keys.shape[1])[s] for s in slices.values()])
    assert covered.tolist() == list(range(keys.shape[1])) == list(range(q.shape[0]))
    assert set(ranker.channels()) - {"prior"} == {"content", "cosine", "features", "id"}
    for name, s in slices.items():
        part = keys[:, s] @ q[s]
        np.testing.assert_allclose(
            ranker.without_channel(name).score(q, None), keys @ q - part, atol=1e-5
        )
    assert np.abs(keys[:, slices["id"]] @ q[slices["id"]]).max() > 0


def test_bundle_importance_through_the_serving_path(tiny_dataset, tiny_cfg):
    """A real (untrained) SHGAT bundle over the tiny catalog, rebuilt per shuffle by the
    serving builder: its feature and id channels start at zero, so removing them changes
    nothing, while the features reach the content channel through the graph."""
    from caprank.evaluation.queries import queries_from_labels
    from caprank.model.features import feature_columns
    from caprank.model.serving import BundleBuilder
    from caprank.online.catalog import catalog_from_tables
    from caprank.online.models import build_model
    from tests.train_fixtures import fake_encode

    catalog = catalog_from_tables(tiny_dataset.tools, tiny_dataset.capabilities, "tiny")
    n, now = len(catalog), datetime.now(UTC)
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "capability_id": list(catalog.ids),
            **{c: (10 * rng.random(n)).tolist() for c in ("success_rate", "pagerank_score")},
            "event_timestamp": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        }
    )
    bundle, _ = _bundle(tiny_dataset, tiny_cfg, table)
    assert bundle.scaler.columns == ("success_rate", "pagerank_score")
    snap = FeatureSnapshot(tuple(catalog.ids), table, now, 24.0)
    model = build_model(BundleBuilder(bundle), catalog, snap, "1", "test")
    queries = queries_from_labels(tiny_dataset, "test")
    assert queries.item_ids == tuple(catalog.ids)
    vecs = fake_encode([str(t) for t in queries.texts])
    cfg_ev = EvaluationConfig(importance_repeats=2, bootstrap_samples=50)
    rep = importance(model, queries, vecs, cfg_ev)
    channels = {i.name: i.drop.estimate for i in rep.of("channel")}
    assert set(channels) - {"prior"} == {"content", "cosine", "features", "id"}
    assert channels["features"] == 0.0 and channels["id"] == 0.0
    assert channels["content"] != 0.0
    features = {i.name: i.drop.estimate for i in rep.of("feature")}
    assert set(features) == set(feature_columns(table))
    assert any(v != 0.0 for v in features.values())
