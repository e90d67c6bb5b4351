"""Fine-tuning the text encoder (issue 14 item 1) on the tiny dataset: seeded and
deterministic, better on the pairs it learned, fed by training pairs only, keyed by its
version in the embedding cache, and carried by the embed output and the bundle so that
serving scores exactly as offline evaluation does."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest

from caprank.config import CaprankConfig, FinetuneConfig
from caprank.data.dataset import load_dataset
from caprank.embeddings import text as text_mod
from caprank.embeddings.cache import EmbeddingCache, embed_texts, model_slug
from caprank.embeddings.catalog_text import capability_texts
from caprank.embeddings.finetune import (
    batches,
    finetune_encoder,
    mine_examples,
    weights_version,
)
from caprank.embeddings.text import FINETUNED_PREFIX, encode_texts, load_encoder
from caprank.training.data import train_pairs
from tests.test_benchmark_cmd import TINY_MODEL as BENCH_TINY_MODEL

BASE = "all-MiniLM-L6-v2"
SMALL = FinetuneConfig(enabled=True, steps=4, batch_size=8, learning_rate=5e-5)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _catalog(ds) -> dict[str, str]:
    ids = ds.capabilities["capability_id"].to_pylist()
    return dict(zip(ids, capability_texts(ds.capabilities, ds.tools), strict=True))


def _unique_texts(ds):
    """The dataset with every intent's text made unique (synthetic intents repeat texts),
    so a text says which intent it is."""
    ds = load_dataset(ds.root)
    texts = [
        f"{t} ({q})"
        for q, t in zip(
            ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True
        )
    ]
    col = ds.intents.schema.get_field_index("text")
    ds.intents = ds.intents.set_column(col, "text", pa.array(texts, pa.string()))
    return ds


def _forget_encoders(monkeypatch) -> None:
    """As in a fresh process: nothing registered, no encoder loaded."""
    monkeypatch.setattr(text_mod, "_REGISTERED", {})
    load_encoder.cache_clear()


def _pair_mrr(pairs, catalog, model: str) -> float:
    """MRR of each pair's intent against the whole catalog (its first positive)."""
    positives: dict[str, set[str]] = {}
    for q, c in pairs:
        positives.setdefault(q, set()).add(c)
    intents, ids = sorted(positives), list(catalog)
    scores = encode_texts(intents, model) @ encode_texts([catalog[c] for c in ids], model).T
    rr = []
    for i, q in enumerate(intents):
        order = np.argsort(-scores[i], kind="stable")
        rank = next(k for k, j in enumerate(order) if ids[j] in positives[q])
        rr.append(1.0 / (rank + 1))
    return float(np.mean(rr))


@pytest.fixture(scope="module")
def tuned(tiny_cfg, tiny_dataset, tmp_path_factory):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.training.source = "labels"
    pairs = train_pairs(tiny_dataset, cfg)
    catalog = _catalog(tiny_dataset)
    out = tmp_path_factory.mktemp("ft")
    ft = finetune_encoder(pairs, catalog, BASE, SMALL, out / "a", seed=5, threads=1)
    return pairs, catalog, ft, out


def test_train_pairs_are_train_labels_only(tiny_cfg, tiny_dataset):
    """From labels: the train split's pairs; valid and test labels never enter."""
    ds = _unique_texts(tiny_dataset)
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.training.source = "labels"
    texts = dict(
        zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
    )
    split = np.asarray(ds.labels["split"].to_pylist())
    ids = np.asarray(ds.labels["intent_id"].to_pylist())
    caps = np.asarray(ds.labels["capability_id"].to_pylist())
    train = {
        (texts[q], c) for q, c in zip(ids[split == "train"], caps[split == "train"], strict=True)
    }
    held = {texts[q] for q in ids[split != "train"]}
    pairs = train_pairs(ds, cfg)
    assert set(pairs) == train and not held & {q for q, _ in pairs}

    # the valid and test labels may say anything: the pairs do not change
    mangled = _unique_texts(tiny_dataset)
    shuffled = np.where(split == "train", caps, np.roll(caps, 7))
    mangled.labels = mangled.labels.set_column(
        mangled.labels.schema.get_field_index("capability_id"),
        "capability_id",
        pa.array(shuffled.tolist(), pa.string()),
    )
    assert train_pairs(mangled, cfg) == pairs
    assert train_pairs(mangled, tiny_cfg) == train_pairs(ds, tiny_cfg)  # with the logs


def test_without_valid_labels_the_validation_carve_is_left_out(tiny_cfg, tiny_dataset):
    """prepare holds a seeded share of train intents out to validate: fine-tuning must
    not see them either."""
    from caprank.training.data import prepare

    ds = _unique_texts(tiny_dataset)
    keep = pa.array([s != "valid" for s in ds.labels["split"].to_pylist()])
    ds.labels = ds.labels.filter(keep)
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.training.source = "labels"
    caps = ds.capabilities["capability_id"].to_pylist()
    n, dim = len(caps), 8
    prep = prepare(
        ds,
        cfg,
        ds.tools["tool_id"].to_pylist(),
        np.zeros((ds.tools.num_rows, dim), np.float32),
        caps,
        np.eye(n, dim, dtype=np.float32),
        None,
        lambda texts: np.ones((len(texts), dim), np.float32) / np.sqrt(dim),
    )
    validating = {prep.intent_texts[r] for r in prep.data.valid_intents}
    pairs = train_pairs(ds, cfg)
    assert validating and pairs and not validating & {q for q, _ in pairs}


def test_logs_pairs_are_the_training_period_successes(tiny_cfg, tiny_dataset):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.training.source = "interactions"
    pairs = train_pairs(tiny_dataset, cfg)
    events = tiny_dataset.interactions
    ok = [o in ("success", "partial") for o in events["outcome"].to_pylist()]
    assert pairs and len(pairs) <= sum(ok)
    logged = set(
        zip(
            events["intent_text"].to_pylist(),
            events["selected_capability"].to_pylist(),
            strict=True,
        )
    )
    assert set(pairs) <= logged


def test_a_log_without_labels_gives_its_training_period_only(tiny_cfg, tiny_dataset):
    """Logs only: the temporal split's valid and test periods never reach the encoder."""
    from caprank.data.schemas import LABELS
    from caprank.evaluation.temporal import log_splits

    ds = load_dataset(tiny_dataset.root)
    ds.labels = LABELS.empty_table()
    events = ds.interactions
    # one text per event, so a pair says which event it came from
    texts = [
        f"{t} [{e}]"
        for t, e in zip(
            events["intent_text"].to_pylist(), events["event_id"].to_pylist(), strict=True
        )
    ]
    ds.interactions = events.set_column(
        events.schema.get_field_index("intent_text"), "intent_text", pa.array(texts)
    )
    _, part = log_splits(ds, tiny_cfg.evaluation)
    pairs = train_pairs(ds, tiny_cfg)
    later = {t for t, p in zip(texts, part, strict=True) if p != "train"}
    assert pairs and later and not later & {q for q, _ in pairs}


def test_batches_never_hold_a_false_negative(tiny_cfg, tiny_dataset):
    pairs = train_pairs(tiny_dataset, tiny_cfg)
    catalog = _catalog(tiny_dataset)
    rng = np.random.default_rng(0)
    rows = {c: i for i, c in enumerate(catalog)}
    vecs = np.eye(len(catalog), dtype=np.float32)
    intents = {q for q, _ in pairs}
    intent_vec = {q: vecs[rows[c]] for q, c in pairs}  # each intent near one positive

    def encode(texts):
        return np.stack([intent_vec[t] if t in intents else vecs[rows[_key(t)]] for t in texts])

    by_text = {t: c for c, t in catalog.items()}

    def _key(t):
        return by_text[t]

    examples = mine_examples(pairs, catalog, encode, 2, 5, rng)
    positives: dict[str, set[str]] = {}
    for q, c in pairs:
        positives.setdefault(q, set()).add(c)
    assert all(not set(ex.negatives) & positives[ex.anchor] for ex in examples)
    stream = batches(examples, positives, 8, rng)
    for _ in range(20):
        batch = next(stream)
        assert 2 <= len(batch) <= 8
        for ex in batch:
            others = {t for o in batch if o is not ex for t in (o.positive, *o.negatives)}
            assert not others & positives[ex.anchor]


def test_finetuning_is_deterministic_for_a_seed(tuned):
    pairs, catalog, ft, out = tuned
    again = finetune_encoder(pairs, catalog, BASE, SMALL, out / "b", seed=5, threads=1)
    assert again.version == ft.version and again.losses == ft.losses
    assert ft.name == f"{FINETUNED_PREFIX}{ft.version}" and ft.path.name == ft.name
    assert ft.steps == SMALL.steps and (ft.path / "finetune.json").is_file()
    # the version is the hash of the weights as saved, read back
    from sentence_transformers import SentenceTransformer

    assert weights_version(SentenceTransformer(str(ft.path), device="cpu")) == ft.version


def test_finetuning_improves_retrieval_of_the_training_pairs(tuned):
    pairs, catalog, ft, _ = tuned
    base, tuned_mrr = _pair_mrr(pairs, catalog, BASE), _pair_mrr(pairs, catalog, ft.name)
    assert tuned_mrr > base + 0.02, (base, tuned_mrr)


def test_the_version_keys_the_embedding_cache(tuned, tiny_cfg, tmp_path, monkeypatch):
    _pairs, catalog, ft, _ = tuned
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.embedding.cache_dir = tmp_path / "cache"
    texts = list(catalog.values())[:5]
    base, _ = embed_texts(texts, cfg)
    first, stats = embed_texts(texts, cfg, text_model=ft.name)
    assert stats.misses == 5 and not np.allclose(base, first)
    folder = EmbeddingCache(cfg.embedding_cache_dir(), ft.name).dir
    assert folder.name == model_slug(ft.name) and ft.version in folder.name
    assert str(ft.path) not in str(folder)  # the version, not where the weights lie

    # another copy of the same weights elsewhere (another pod): same namespace, all hits
    copy = tmp_path / "elsewhere" / ft.name
    shutil.copytree(ft.path, copy)
    _forget_encoders(monkeypatch)
    text_mod.register_encoder(ft.name, copy)
    again, stats = embed_texts(texts, cfg, text_model=ft.name)
    assert stats.hits == 5 and np.array_equal(again, first)


def test_the_onnx_serving_backend_exports_the_finetuned_encoder(tuned, tmp_path):
    """Serving on ONNX Runtime exports the fine-tuned weights (not the base model's)."""
    from caprank.embeddings.backend import TextBackend, encode_with

    _, catalog, ft, _ = tuned
    texts = [*list(catalog.values())[:4], "book a table for two tonight"]
    backend = TextBackend("onnx", onnx_dir=str(tmp_path / "onnx"), threads=1)
    got = encode_with(texts, ft.name, 4, "cpu", backend)
    np.testing.assert_allclose(got, encode_texts(texts, ft.name, 4, "cpu"), atol=1e-4)
    assert np.abs(got - encode_texts(texts, BASE, 4, "cpu")).max() > 1e-3
    assert any(ft.name in p.name for p in (tmp_path / "onnx").iterdir())


def test_an_unregistered_finetuned_id_says_where_it_comes_from(monkeypatch):
    _forget_encoders(monkeypatch)
    with pytest.raises(RuntimeError, match="not registered"):
        text_mod.resolve_model_path(f"{FINETUNED_PREFIX}0123456789abcdef")


TINY_MODEL = [  # the benchmark tests' tiny model, a few steps, fine-tuning on
    *BENCH_TINY_MODEL,
    "training.max_steps=4",
    "training.torch_threads=1",
    "embedding.device=cpu",
    "embedding.finetune.enabled=true",
    "embedding.finetune.steps=3",
    "embedding.finetune.batch_size=8",
    "embedding.finetune.learning_rate=0.00005",
]


@pytest.mark.slow
def test_a_bundle_serves_its_finetuned_encoder_as_evaluation_scores(
    tiny_dataset, tmp_path, monkeypatch
):
    """embed (fine-tunes) -> train -> benchmark row; then, as another process would, with
    nothing registered, a fresh embedding cache and the embed output gone, the bundle
    alone serves the same scores as the evaluate stage computed."""
    from caprank.config import load_config
    from caprank.evaluation.benchmark import benchmark_dataset, served_scores
    from caprank.evaluation.heldout import held_out
    from caprank.evaluation.stage import encode_intents, score_model
    from caprank.online.catalog import catalog_from_tables
    from caprank.online.models import load_model_dir

    cfg = load_config(overrides=[f"paths.home={tmp_path / 'home'}", *TINY_MODEL])
    work = tmp_path / "work"
    row = benchmark_dataset(tiny_dataset.root, cfg, work)
    assert {"shgat", "dense", "dense_ft", "bm25", "logreg"} <= set(row)
    assert row["finetune"]["steps"] == 3 and row["finetune"]["name"].startswith(FINETUNED_PREFIX)
    name = row["finetune"]["name"]
    assert (work / "embeddings" / name).is_dir() and (work / "bundle" / name).is_dir()

    ds = tiny_dataset
    queries = held_out(ds, cfg).queries
    catalog = catalog_from_tables(ds.tools, ds.capabilities, "tiny")
    offline = score_model(load_model_dir(work / "bundle", cfg, catalog, None), queries, cfg)

    moved = tmp_path / "served" / "bundle"
    shutil.copytree(work / "bundle", moved)
    shutil.rmtree(work)
    _forget_encoders(monkeypatch)
    fresh = load_config(overrides=[f"paths.home={tmp_path / 'home2'}", *TINY_MODEL])
    model = load_model_dir(moved, fresh, catalog, None)
    assert model.ranker.text_model == name
    texts = [str(t) for t in queries.texts]
    vecs = encode_intents(texts, name, fresh)
    served = served_scores(moved, fresh, catalog, texts, vecs)
    np.testing.assert_allclose(served, offline.scores, rtol=1e-5, atol=1e-5)
    # the drift monitor reads served intents in the space this model ranks them in
    from caprank.monitoring.served import serving_scorer

    with serving_scorer(fresh, ds, ref=str(moved)) as watched:
        drift_vecs = watched.embed(texts[:3])
    assert watched.text_model == name
    np.testing.assert_allclose(drift_vecs, vecs[:3], rtol=1e-5, atol=1e-5)


def test_finetune_config_is_off_by_default():
    assert CaprankConfig().embedding.finetune.enabled is False


@pytest.mark.slow
def test_cold_tuning_fine_tunes_without_the_pseudo_cold_capabilities(
    tiny_dataset, tmp_path, monkeypatch
):
    """The embed stage's encoder saw every train label; cold tuning embeds again with one
    fine-tuned on the pseudo-cold split's train labels alone."""
    import caprank.embeddings.stage as stage
    from caprank.config import load_config
    from caprank.training.tune import objective_dataset, tune

    cfg = load_config(overrides=[f"paths.home={tmp_path / 'home'}", *TINY_MODEL])
    seen: list[set[str]] = []
    real = stage.finetune_encoder

    def spy(pairs, *args, **kwargs):
        seen.append({c for _, c in pairs})
        return real(pairs, *args, **kwargs)

    monkeypatch.setattr(stage, "finetune_encoder", spy)
    emb = stage.embed(tiny_dataset, cfg, tmp_path / "embeddings")
    result = tune(
        tiny_dataset, cfg, emb.out_dir, None, tmp_path / "tune", trials=1, setting="cold",
        track=False,
    )  # fmt: skip
    held = objective_dataset(tiny_dataset, cfg, "cold").manifest["pseudo_cold_held_out"]
    assert len(seen) == 2 and set(held) <= seen[0] and not set(held) & seen[1]
    assert result.extra["pseudo_cold_encoder"]["name"] != emb.summary["finetune"]["name"]
    assert len(result.trials) == 1
    assert [p.name for p in (tmp_path / "tune").iterdir()] == ["tuning.json"]  # scratch gone
