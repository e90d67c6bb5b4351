"""`caprank update`: warm start, replay of older experiences, forgetting guard, new items."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from caprank.model.inputs import intent_batch, select_bags
from caprank.training.trainer import Trainer, weighted_infonce
from caprank.training.update import (
    NothingToUpdate,
    data_cutoff,
    dataset_as_of,
    guard,
    refit_heads,
    replay_sample,
    update_model,
    warm_model,
)
from tests.train_fixtures import (
    fake_encode,
    tiny_bundle,
    tiny_model,
    tiny_prepared,
    tiny_training_cfg,
)


@pytest.fixture(scope="module")
def cfg(tiny_cfg):
    cfg = tiny_training_cfg(tiny_cfg, max_steps=60, eval_every=20)
    cfg.update.steps = 8
    cfg.update.eval_every = 4
    return cfg


@pytest.fixture(scope="module")
def known_test(tiny_dataset):
    """The tiny dataset whose test labels are copies of its train labels: with hashed
    (meaningless) text vectors no model generalizes to unseen intents, so the guard's
    old test set must be intents the base has learned, for forgetting to show."""
    import pyarrow as pa

    from caprank.data.dataset import Dataset

    lab = tiny_dataset.labels
    split = pc.field("split")
    train = lab.filter(split == "train")
    copy = train.set_column(
        train.schema.get_field_index("split"),
        train.schema.field("split"),
        pa.array(["test"] * train.num_rows),
    )
    labels = pa.concat_tables([lab.filter(split != "test"), copy])
    t = tiny_dataset
    return Dataset(t.tools, t.capabilities, t.intents, labels, t.interactions, dict(t.manifest))


@pytest.fixture(scope="module")
def base(cfg, known_test):
    """A model trained on the dataset as of day 6 (before some capabilities launched)."""
    start = pc.min(known_test.interactions["timestamp"]).as_py()
    cutoff = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=6)
    old = dataset_as_of(known_test, cutoff)
    prep = tiny_prepared(old, cfg)
    model = tiny_model(prep, cfg)
    Trainer(model, prep.data, cfg.training).fit()
    bundle = tiny_bundle(prep, model)
    bundle.meta["data_cutoff"] = data_cutoff(old).isoformat()
    return bundle, old, data_cutoff(old)


def test_cutoff_split_has_new_capabilities_and_logs(base, tiny_dataset):
    _, old, cutoff = base
    assert old.capabilities.num_rows < tiny_dataset.capabilities.num_rows
    assert old.interactions.num_rows < tiny_dataset.interactions.num_rows
    assert data_cutoff(tiny_dataset) > cutoff


def test_warm_start_copies_base_weights_by_key(base, cfg, tiny_dataset):
    bundle, _, _ = base
    from caprank.training.data import prepare
    from caprank.training.update import catalog_through

    inputs = catalog_through(bundle, tiny_dataset, fake_encode)
    prep = prepare(
        tiny_dataset, cfg, inputs.tool_ids, inputs.tool_vectors, inputs.capability_ids,
        inputs.capability_text, None, fake_encode,
    )  # fmt: skip
    model, warm = warm_model(bundle, prep)
    old, new = bundle.model.state_dict(), model.state_dict()
    assert torch.equal(old["q_proj.weight"], new["q_proj.weight"])
    for t in ("tool_emb.weight",):
        rows = {k: i for i, k in enumerate(bundle.tool_ids)}
        shared = [i for i, k in enumerate(prep.inputs.tool_ids) if k in rows]
        assert shared and warm["carried_rows"][t] == len(shared)
        for i in shared[:5]:
            assert torch.equal(new[t][i], old[t][rows[prep.inputs.tool_ids[i]]])
    ids = {c: i for i, c in enumerate(bundle.id_capabilities)}
    for j, c in enumerate(prep.id_capabilities):
        if c in ids:
            assert torch.equal(new["id_emb"][j], old["id_emb"][ids[c]])
        else:  # a capability new to the id channel starts neutral
            assert float(new["id_emb"][j].abs().sum()) == 0.0
    vocab = {w: i for i, w in enumerate(bundle.lexicon.vocab)}
    for j, w in enumerate(prep.lexicon.vocab[:20]):
        if w in vocab:
            assert torch.equal(new["q_lex.weight"][j], old["q_lex.weight"][vocab[w]])
    assert warm["fresh"] == []


def test_update_trains_on_new_logs_plus_replay_and_represents_new_items(base, cfg, tiny_dataset):
    bundle, old, cutoff = base
    updated, report = update_model(bundle, tiny_dataset, cfg, fake_encode, cutoff)
    assert report.new_experiences > 0 and report.replayed > 0
    # replay is about replay_ratio x the new experiences (whole sessions), or all older ones
    want = cfg.update.replay_ratio * report.new_experiences
    assert 0.5 * min(want, report.replayed) <= report.replayed <= want + 20
    assert report.fit["steps"] == cfg.update.steps
    assert report.warm["carried_rows"]["tool_emb.weight"] > 0
    new_caps = set(tiny_dataset.capabilities["capability_id"].to_pylist()) - set(
        old.capabilities["capability_id"].to_pylist()
    )
    assert set(report.new_capabilities) == new_caps
    assert new_caps <= set(updated.capability_ids)
    # new capabilities with positives in the new logs get an id-channel row
    logged = set(
        tiny_dataset.interactions.filter(pc.field("outcome") == "success")[
            "selected_capability"
        ].to_pylist()
    )
    assert (new_caps & logged) and (new_caps & logged) <= set(updated.id_capabilities)
    assert updated.meta["data_cutoff"] == data_cutoff(tiny_dataset).isoformat()
    assert report.old_test and report.guard_intents > 0
    assert report.accepted == all(d <= cfg.update.max_regression for d in report.drop.values())


def _warm(bundle, cfg, ds):
    from caprank.training.data import prepare
    from caprank.training.update import catalog_through

    inputs = catalog_through(bundle, ds, fake_encode)
    prep = prepare(
        ds, cfg, inputs.tool_ids, inputs.tool_vectors, inputs.capability_ids,
        inputs.capability_text, None, fake_encode,
    )  # fmt: skip
    return prep, warm_model(bundle, prep)[0]


def test_refit_solves_the_trainers_ranking_loss_on_the_id_channel_only(base, cfg, tiny_dataset):
    bundle, _, _ = base
    prep, model = _warm(bundle, cfg, tiny_dataset)
    exp, graph = prep.data.experiences, prep.data.graph
    rows = np.arange(len(exp))
    temp = cfg.training.temperature
    # its objective before any change is the trainer's weighted InfoNCE over these rows
    with torch.no_grad():
        model.eval()
        batch = intent_batch(
            prep.data.intent_dense[exp.intent], select_bags(prep.data.intent_bags, exp.intent)
        )
        logits = model.query(batch) @ model.keys(graph).T / temp
        cap = torch.as_tensor(exp.capability)
        blocked = torch.as_tensor(~prep.data.rankable).expand(len(rows), -1).clone()
        blocked[torch.arange(len(rows)), cap] = False
        trainer_loss = float(
            weighted_infonce(logits, cap, torch.as_tensor(exp.positive, dtype=torch.float32),
                             blocked)
        )  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = refit_heads(model, prep.data, rows, temp, iterations=30, l2=1e-3)
    assert out.loss_before == pytest.approx(trainer_loss, rel=1e-4)
    assert 0 < out.iterations <= 30 and out.loss_after < out.loss_before - 1e-3
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"id_emb", "id_bias"}
    # capabilities new to the id channel (rows of zeros in the warm start) now have one
    known = set(bundle.id_capabilities)
    new = [j for j, c in enumerate(prep.id_capabilities) if c not in known]
    assert new and all(float(after["id_emb"][j].abs().sum()) > 0 for j in new)
    # a strong pull keeps the known rows where the base had them
    _, anchored = _warm(bundle, cfg, tiny_dataset)
    refit_heads(anchored, prep.data, rows, temp, iterations=30, l2=1e6)
    old = [j for j, c in enumerate(prep.id_capabilities) if c in known]
    drift = (anchored.id_emb.detach()[old] - before["id_emb"][old]).abs().max()
    assert float(drift) < 1e-3 < float((after["id_emb"][old] - before["id_emb"][old]).abs().max())


def test_update_without_steps_changes_only_the_id_channel(base, cfg, tiny_dataset):
    bundle, _, cutoff = base
    only = cfg.model_copy(deep=True)
    only.update.steps = 0
    only.update.max_regression = 1.0
    updated, report = update_model(bundle, tiny_dataset, only, fake_encode, cutoff)
    assert report.fit["steps"] == 0 and report.fit["refit"]["iterations"] > 0
    assert 0.0 < report.fit["best_valid_mrr"] <= 1.0
    old, new = bundle.model.state_dict(), updated.model.state_dict()
    for name in ("q_proj.weight", "k_proj.weight", "cap_in.weight", "value_mlp.0.weight"):
        assert torch.equal(old[name], new[name])
    assert report.fit["refit"]["loss_after"] < report.fit["refit"]["loss_before"]
    assert f"refit in {report.fit['refit']['iterations']} L-BFGS" in report.to_markdown()


def test_forgetting_guard_rejects_a_destructive_update(base, cfg, known_test):
    bundle, _, cutoff = base
    bad = cfg.model_copy(deep=True)
    bad.update.lr = 5.0  # destroys what the base knew
    bad.update.steps = 12
    bad.update.replay_ratio = 0.0
    bad.update.max_regression = 0.0
    _, report = update_model(bundle, known_test, bad, fake_encode, cutoff)
    assert not report.accepted
    assert max(report.drop.values()) > 0.0


def test_guard_threshold():
    base = {"mrr": 0.5, "hit@1": 0.4, "hit@3": 0.6, "hit@10": 0.8, "ndcg@10": 0.55}
    ok = {**base, "mrr": 0.49}
    assert guard({"base": base, "updated": ok}, 0.02)[0]
    assert not guard({"base": base, "updated": {**base, "hit@1": 0.3}}, 0.02)[0]
    assert guard({}, 0.0) == (True, {})


def test_nothing_logged_since_cutoff_is_an_error(base, cfg, tiny_dataset):
    bundle, _, _ = base
    with pytest.raises(NothingToUpdate):
        update_model(bundle, tiny_dataset, cfg, fake_encode, data_cutoff(tiny_dataset))


def test_replay_prefers_high_priority_groups():
    group = np.arange(1000)
    new = np.zeros(1000, dtype=bool)
    new[:100] = True
    prio = np.zeros(1000)
    prio[500:] = 10.0
    rows = replay_sample(group, new, prio, 1.0, 1.0, 0.01, seed=0)
    assert abs(len(rows) - 100) <= 1 and not new[rows].any()
    assert (rows >= 500).mean() > 0.9


@pytest.mark.slow
def test_update_command_writes_bundle_or_exits_3_when_rejected(
    base, known_test, tmp_path, monkeypatch
):
    import json

    from caprank.cli import main
    from caprank.embeddings import cache
    from caprank.model.bundle import load_bundle, save_bundle

    monkeypatch.setattr(cache, "cached_encoder", lambda cfg, text_model=None: fake_encode)
    bundle, _, _ = base
    base_dir = save_bundle(bundle, tmp_path / "base")
    common = [
        "--set", f"paths.home={tmp_path / 'home'}", "--set", "training.batch_size=32",
        "--set", "training.device=cpu", "--set", "training.baselines=[]",
        "--set", "update.steps=4", "--set", "update.eval_every=2",
    ]  # fmt: skip
    from caprank.data.dataset import write_dataset

    data = write_dataset(known_test, tmp_path / "data")
    args = ["update", "--data", str(data), "--base", str(base_dir)]
    assert main([*common, *args, "--out", str(tmp_path / "ok"), "--track"]) == 0
    report = json.loads((tmp_path / "ok" / "update.json").read_text())
    assert report["accepted"] and report["new_experiences"] > 0
    from caprank import registry
    from caprank.config import load_config

    tracked = load_config(overrides=[f"paths.home={tmp_path / 'home'}"])
    assert registry.logged_model_source(tracked, report["run_id"]) is not None
    updated = load_bundle(tmp_path / "ok" / "bundle")
    assert updated.meta["base_version"] == "test-bundle"
    assert updated.meta["update"]["fit"]["steps"] == 4
    bad = ["--set", "update.lr=5.0", "--set", "update.steps=12", "--set", "update.replay_ratio=0"]
    bad += ["--set", "update.max_regression=0"]
    assert main([*common, *bad, *args, "--out", str(tmp_path / "bad")]) == 3
    assert not (tmp_path / "bad" / "bundle").exists()
    rejected = json.loads((tmp_path / "bad" / "update.json").read_text())
    assert rejected["accepted"] is False and rejected["run_id"] == ""  # not tracked


def test_cached_encoder_reads_the_cache_once_and_matches_embed_texts(tmp_path, monkeypatch):
    """One cache object across calls: shards are read once, a miss is written and then hit."""
    from caprank.config import CaprankConfig
    from caprank.embeddings import cache

    cfg = CaprankConfig.model_validate({"paths": {"home": str(tmp_path)}})
    calls: list[list[str]] = []

    def fake(texts, model, batch_size, device):
        calls.append(list(texts))
        return fake_encode(texts)

    monkeypatch.setattr(cache, "encode_texts", fake)
    reads = []
    load = cache.EmbeddingCache._load
    monkeypatch.setattr(
        cache.EmbeddingCache, "_load", lambda self: reads.append(self._keys is None) or load(self)
    )
    encode = cache.cached_encoder(cfg)
    first = encode(["a b", "c d"])
    again = encode(["c d", "a b", "a b"])
    assert calls == [["a b", "c d"]]  # the second call hits what the first wrote
    np.testing.assert_allclose(again, first[[1, 0, 0]])
    assert sum(reads) == 2  # the empty cache, then once more after the write: not per call
    np.testing.assert_allclose(cache.embed_texts(["a b"], cfg)[0], first[:1])
