"""The embedded default dataset: deterministic, realistic in shape, consistent ids."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

import numpy as np
import pytest

from caprank.config import CaprankConfig, resolve
from caprank.data.dataset import load_dataset
from caprank.data.schemas import TABLES
from caprank.data.synth import start_datetime, synthesize, third_person
from caprank.errors import ConfigError


def _with(cfg: CaprankConfig, **synth) -> CaprankConfig:
    out = cfg.model_copy(deep=True)
    for key, value in synth.items():
        if key == "seed":
            out.data.seed = value
        else:
            setattr(out.data.synth, key, value)
    return out


def test_same_seed_same_tables_other_seed_differs(tiny_cfg):
    a, b = synthesize(tiny_cfg), synthesize(tiny_cfg)
    for name in TABLES:
        assert a.table(name).equals(b.table(name)), name
    c = synthesize(_with(tiny_cfg, seed=tiny_cfg.data.seed + 1))
    assert not a.tools.equals(c.tools)
    assert not a.intents.equals(c.intents)


def test_default_catalog_shape():
    cfg = CaprankConfig()
    ds = synthesize(cfg)
    s = cfg.data.synth
    assert ds.tools.num_rows == s.n_tools
    assert ds.capabilities.num_rows == s.n_capabilities
    assert ds.intents.num_rows == s.n_capabilities * s.intents_per_capability
    cats = Counter(ds.tools["category"].to_pylist())
    assert len(cats) == s.n_categories
    assert {"food", "finance", "travel", "weather", "email", "maps"} <= set(cats)
    assert max(cats.values()) - min(cats.values()) <= 1
    assert len(set(ds.tools["name"].to_pylist())) == s.n_tools
    assert len(set(ds.tools["description"].to_pylist())) > s.n_tools // 2

    tool_cat = dict(
        zip(ds.tools["tool_id"].to_pylist(), ds.tools["category"].to_pylist(), strict=True)
    )
    lists = ds.capabilities["tool_ids"].to_pylist()
    sizes = Counter(len(t) for t in lists)
    assert set(sizes) == {1, 2, 3, 4}
    assert len({tuple(t) for t in lists}) == len(lists)  # no duplicate compositions
    use = Counter(t for tools in lists for t in tools)
    assert sum(1 for n in use.values() if n >= 2) > s.n_tools // 3  # tools are shared
    n_cross = sum(1 for tools in lists if len({tool_cat[t] for t in tools}) > 1)
    assert 0.05 * len(lists) < n_cross < 0.35 * len(lists)  # mostly within a category


def test_every_referenced_id_exists_and_splits(tiny_dataset):
    ds = tiny_dataset
    tools = set(ds.tools["tool_id"].to_pylist())
    caps = set(ds.capabilities["capability_id"].to_pylist())
    intents = set(ds.intents["intent_id"].to_pylist())
    assert all(t in tools for ts in ds.capabilities["tool_ids"].to_pylist() for t in ts)
    assert set(ds.labels["intent_id"].to_pylist()) == intents
    assert set(ds.labels["capability_id"].to_pylist()) == caps
    assert set(ds.labels["grade"].to_pylist()) == {1}
    split = Counter(ds.labels["split"].to_pylist())
    frac = split["test"] / ds.labels.num_rows
    assert abs(frac - 0.15) < 0.05
    assert abs(split["valid"] - split["test"]) <= 0.3 * split["test"]
    # every capability keeps intents to train on
    train_caps = {
        c
        for c, sp in zip(
            ds.labels["capability_id"].to_pylist(), ds.labels["split"].to_pylist(), strict=True
        )
        if sp == "train"
    }
    assert train_caps == caps


def test_created_at_mostly_at_start_some_later(tiny_cfg):
    ds = synthesize(tiny_cfg)
    start = start_datetime(tiny_cfg.data.synth)
    created = ds.capabilities["created_at"].to_pylist()
    late = [c for c in created if c > start]
    assert 0 < len(late) <= 0.1 * len(created)
    assert all(c < start + timedelta(days=tiny_cfg.data.synth.days) for c in late)
    assert all(c == start for c in created if c <= start)
    assert sorted(ds.manifest["new_capabilities"]) == sorted(
        cid
        for cid, c in zip(ds.capabilities["capability_id"].to_pylist(), created, strict=True)
        if c > start
    )
    launch = tiny_cfg.model_copy(deep=True)
    launch.data.simulate.drift_new_capabilities_day = 4
    created = synthesize(launch).capabilities["created_at"].to_pylist()
    assert {c for c in created if c > start} == {start + timedelta(days=4)}


def test_intents_vary_and_are_not_just_catalog_words():
    ds = synthesize(CaprankConfig())
    texts = ds.intents["text"].to_pylist()
    assert len(set(texts)) > 0.9 * len(texts)
    assert any(t == t.lower() and re.search("[a-z]", t) for t in texts)  # casing noise
    openers = Counter(t.split(" ")[0].lower() for t in texts)
    assert len(openers) > 15
    # the words users use overlap only partly with the capability's own description
    desc = dict(
        zip(
            ds.capabilities["capability_id"].to_pylist(),
            ds.capabilities["description"].to_pylist(),
            strict=True,
        )
    )
    cap_of = dict(
        zip(ds.labels["intent_id"].to_pylist(), ds.labels["capability_id"].to_pylist(), strict=True)
    )
    words = re.compile(r"[a-z]{4,}")
    overlap = []
    for iid, text in zip(ds.intents["intent_id"].to_pylist(), texts, strict=True):
        w = set(words.findall(text.lower()))
        if w:
            overlap.append(len(w & set(words.findall(desc[cap_of[iid]].lower()))) / len(w))
    assert 0.05 < float(np.mean(overlap)) < 0.5


def test_bm25_is_a_weak_but_real_ranker():
    """Lexical matching helps but is far from solving the task."""
    from caprank.embeddings.catalog_text import capability_texts
    from caprank.evaluation.baselines import bm25_scores
    from caprank.evaluation.metrics import ranking_metrics

    ds = synthesize(CaprankConfig())
    scores = bm25_scores(
        capability_texts(ds.capabilities, ds.tools), ds.intents["text"].to_pylist()
    )
    cap_ids = ds.capabilities["capability_id"].to_pylist()
    label = dict(
        zip(ds.labels["intent_id"].to_pylist(), ds.labels["capability_id"].to_pylist(), strict=True)
    )
    target = [cap_ids.index(label[i]) for i in ds.intents["intent_id"].to_pylist()]
    mrr = ranking_metrics(scores, [{t: 1.0} for t in target], [1]).means()["mrr"]
    assert 0.05 < mrr < 0.6, mrr


def test_third_person_conjugates_marked_verbs():
    assert (
        third_person("^search flights and ^compare fares") == "searches flights and compares fares"
    )
    assert third_person("^copy files and ^watch") == "copies files and watches"


def test_bad_settings_name_the_key(tiny_cfg):
    with pytest.raises(ConfigError, match="n_capabilities"):
        synthesize(_with(tiny_cfg, n_tools=10, n_categories=5, n_capabilities=5000))
    with pytest.raises(ConfigError, match="start_date"):
        resolve(environ={}, overrides=["data.synth.start_date=yesterday"])


def test_written_dataset_round_trips(tiny_dataset_dir, tiny_cfg):
    again = load_dataset(tiny_dataset_dir)
    fresh = synthesize(tiny_cfg)
    for name in ("tools", "capabilities", "intents", "labels"):
        assert again.table(name).equals(fresh.table(name)), name
    assert again.manifest["source"] == "synth"
