"""Active learning: uncertainty picks the near ties, and the queue round-trips as labels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from caprank.active.queue import build_queue, export_queue, import_answers, read_answers
from caprank.active.uncertainty import served_texts, signals
from caprank.config import ActiveConfig
from caprank.data.dataset import load_dataset, write_dataset
from caprank.errors import DataError
from caprank.online.journal import encode_line
from caprank.training.trainer import Trainer
from tests.train_fixtures import (
    fake_encode,
    tiny_bundle,
    tiny_model,
    tiny_prepared,
    tiny_training_cfg,
)

NEW_TEXTS = ["translate my invoice to german", "find a cheap hotel near the beach", "x y z"]


def test_margin_signal_ranks_near_ties_first():
    scores = np.array([[5.0, 1.0, 0.0], [2.0, 1.9, 0.0], [3.0, 2.0, 0.0]])
    cfg = ActiveConfig(margin_weight=1.0, probability_weight=0.0, disagreement_weight=0.0)
    margin, _, _, combined = signals(scores, np.zeros(3), {}, cfg)
    assert list(np.argsort(-combined)) == [1, 2, 0]
    assert margin[1] > 0.9 and margin[0] < 0.05


def test_probability_and_disagreement_signals():
    scores = np.array([[5.0, 1.0], [5.0, 1.0]])
    cfg = ActiveConfig(margin_weight=0.0, probability_weight=1.0, disagreement_weight=1.0)
    bm25 = np.array([[1.0, 0.0], [0.0, 1.0]])  # agrees on the first, not the second
    _, prob, disagree, combined = signals(scores, np.array([0.9, 0.9]), {"bm25": bm25}, cfg)
    assert np.allclose(prob, 0.1) and list(disagree) == [0.0, 1.0]
    assert combined[1] > combined[0]
    _, _, _, low_p = signals(scores, np.array([0.9, 0.2]), {}, cfg)
    assert low_p[1] > low_p[0]


@pytest.fixture(scope="module")
def setup(tiny_cfg, tiny_dataset, tmp_path_factory):
    cfg = tiny_training_cfg(tiny_cfg, max_steps=8)
    cfg.training.baselines = ["bm25", "dense"]
    prep = tiny_prepared(tiny_dataset, cfg)
    model = tiny_model(prep, cfg)
    Trainer(model, prep.data, cfg.training).fit()
    bundle = tiny_bundle(prep, model)
    served = tmp_path_factory.mktemp("feedback") / "served"
    served.mkdir()
    labeled = tiny_dataset.intents["text"][0].as_py()
    with open(served / "seg-000000000001.log", "wb") as fh:
        for text in [*NEW_TEXTS, NEW_TEXTS[0], labeled]:
            fh.write(encode_line({"request_id": "r", "intent_text": text, "shown": []}))
    return cfg, bundle, served.parent


def test_served_log_counts_requests(setup):
    _, _, feedback = setup
    counts = served_texts(feedback)
    assert counts[NEW_TEXTS[0]] == 2 and counts[NEW_TEXTS[1]] == 1
    with pytest.raises(DataError, match="seg-"):
        served_texts(feedback / "nowhere")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_export_import_round_trip_with_provenance(setup, tiny_dataset, tmp_path, suffix):
    cfg, bundle, feedback = setup
    items = build_queue(tiny_dataset, cfg, bundle, fake_encode, feedback, budget=2)
    assert len(items) == 2 and {u.text for u in items} <= set(NEW_TEXTS)  # labeled: left out
    assert all(u.likely and sum(u.likely.values()) <= 1 + 1e-6 for u in items)
    plain = cfg.model_copy(update={"active": cfg.active.model_copy(update={"evidence": False})})
    by_uncertainty = build_queue(tiny_dataset, plain, bundle, fake_encode, feedback, budget=2)
    assert by_uncertainty[0].uncertainty >= by_uncertainty[1].uncertainty
    assert all(len(u.candidates) == cfg.active.top_candidates for u in items)
    queue = export_queue(items, tiny_dataset, tmp_path / f"queue{suffix}", "q1", "v7")
    assert read_answers(queue) == []  # nothing answered yet
    # the labeller answers the first row with its second candidate
    answer = items[0].candidates[1][0]
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in queue.read_text().splitlines()]
        rows[0]["answer"], rows[0]["annotator"] = [answer], "alice"
        queue.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(queue, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows[0]["candidate_2"] == answer
        rows[0]["answer"], rows[0]["annotator"] = answer, "alice"
        with open(queue, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    data = write_dataset(tiny_dataset, tmp_path / "data")
    counts = import_answers(data, queue)
    assert counts == {
        "labels_added": 1, "intents_added": 1, "duplicates_skipped": 0, "answered": 1
    }  # fmt: skip
    ds = load_dataset(data)
    new = ds.labels.filter(ds.labels["provenance"].is_valid())
    assert new.to_pylist()[0]["capability_id"] == answer
    assert new.to_pylist()[0]["provenance"] == "active:q1:alice"
    assert new.to_pylist()[0]["split"] == "train"
    texts = dict(
        zip(ds.intents["intent_id"].to_pylist(), ds.intents["text"].to_pylist(), strict=True)
    )
    assert texts[new.to_pylist()[0]["intent_id"]] == items[0].text
    assert ds.labels.num_rows == tiny_dataset.labels.num_rows + 1
    again = import_answers(data, queue)
    assert again["labels_added"] == 0 and again["duplicates_skipped"] == 1


def test_unknown_capability_in_an_answer_names_row_and_field(tiny_dataset, tmp_path):
    path = tmp_path / "answers.jsonl"
    rows = [
        {"intent_text": "a", "answer": []},
        {"intent_text": "b", "answer": ["no-such-capability"], "queue_id": "q"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = write_dataset(tiny_dataset, tmp_path / "data")
    with pytest.raises(DataError) as err:
        import_answers(data, path)
    assert "row 2" in str(err.value) and "answer" in str(err.value)
    assert load_dataset(data).labels.num_rows == tiny_dataset.labels.num_rows  # untouched


def test_select_spreads_over_top_capabilities():
    from caprank.active.uncertainty import Uncertain, select

    items = [
        Uncertain(t, 1, 0, 0, 0, u, [(top, 1.0)])
        for t, u, top in [("a", 0.9, "c1"), ("b", 0.8, "c1"), ("c", 0.7, "c2"), ("d", 0.6, "c1")]
    ]
    assert [u.text for u in select(items, 2)] == ["a", "c"]
    assert [u.text for u in select(items, 3)] == ["a", "c", "b"]
    assert [u.text for u in select(items, 2, diverse=False)] == ["a", "b"]


def _item(text: str, uncertainty: float, likely: dict[str, float]):
    from caprank.active.uncertainty import Uncertain

    top = max(likely, key=likely.get)
    return Uncertain(text, 1, 0, 0, 0, uncertainty, [(top, 1.0)], likely)


def test_evidence_defers_well_labeled_and_already_queued_capabilities():
    from caprank.active.uncertainty import select

    items = [
        _item("known", 0.9, {"c1": 1.0}),  # most uncertain, but c1 has 8 train labels
        _item("new", 0.6, {"c2": 1.0}),
        _item("new-twin", 0.55, {"c2": 1.0}),  # same capability as "new"
        _item("other", 0.5, {"c3": 0.5, "c4": 0.5}),
    ]
    evidence = {"c1": 8.0}
    assert [u.text for u in select(items, 3, evidence=evidence)] == ["new", "other", "new-twin"]
    assert [u.text for u in select(items, 4, evidence=evidence)][-1] == "known"
    assert [u.text for u in select(items, 2, evidence={})] == ["known", "new"]


@pytest.mark.parametrize("power", [1.0, 0.5, 0.0])
def test_lazy_greedy_matches_plain_greedy(power):
    from caprank.active.uncertainty import novelty, select

    rng = np.random.default_rng(3)
    caps = [f"c{i}" for i in range(6)]
    items = []
    for n in range(40):
        p = rng.dirichlet(np.full(len(caps), 0.3))
        items.append(_item(f"i{n}", float(rng.uniform()), dict(zip(caps, p, strict=True))))
    evidence = {c: float(rng.integers(0, 4)) for c in caps}
    counts, left, plain = dict(evidence), list(items), []
    for _ in range(15):
        best = max(left, key=lambda u: u.uncertainty**power * novelty(u.likely, counts))
        plain.append(best.text)
        left.remove(best)
        for c, p in best.likely.items():
            counts[c] = counts.get(c, 0.0) + p
    assert [u.text for u in select(items, 15, evidence=evidence, power=power)] == plain


def test_power_zero_ranks_by_expected_new_evidence_alone():
    from caprank.active.uncertainty import select

    items = [
        _item("taught", 0.99, {"c1": 1.0}),  # near tie, but c1 has 2 train labels
        _item("untaught", 0.01, {"c2": 1.0}),
    ]
    assert [u.text for u in select(items, 1, evidence={"c1": 2.0})] == ["taught"]
    assert [u.text for u in select(items, 1, evidence={"c1": 2.0}, power=0.0)] == ["untaught"]


def test_fit_temperature_recovers_the_labels_sharpness():
    from caprank.active.uncertainty import NO_LABEL_TEMPERATURE, fit_temperature, softmax

    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 1.0, size=(4000, 12))
    for true in (0.05, 0.3):
        p = softmax(scores, true)
        columns = np.array([rng.choice(12, p=row) for row in p])
        assert fit_temperature(scores, columns) == pytest.approx(true, rel=0.15)
    assert fit_temperature(np.zeros((0, 12)), np.zeros(0, np.int64)) == NO_LABEL_TEMPERATURE


def test_membership_is_the_prior_softmax_at_the_fitted_or_given_temperature(setup, tiny_dataset):
    from caprank.active.queue import membership
    from caprank.active.uncertainty import fit_temperature, softmax
    from caprank.evaluation.baselines import dense_scores
    from caprank.training.update import catalog_through

    _, bundle, _ = setup
    inputs = catalog_through(bundle, tiny_dataset, fake_encode)
    index = bundle.index(inputs)
    dense = fake_encode(NEW_TEXTS)
    prior = dense_scores(dense, inputs.capability_text)
    fixed = ActiveConfig(temperature=0.2)
    got = membership(
        tiny_dataset, fixed, index, inputs.capability_text, fake_encode, NEW_TEXTS, dense
    )
    assert np.allclose(got, softmax(prior, 0.2), atol=1e-6)
    # unset: the temperature under which the train labels' capabilities are most likely
    pos = {c: j for j, c in enumerate(index.capability_ids)}
    text = dict(
        zip(
            tiny_dataset.intents["intent_id"].to_pylist(),
            tiny_dataset.intents["text"].to_pylist(),
            strict=True,
        )
    )
    train = [r for r in tiny_dataset.labels.to_pylist() if r["split"] == "train"]
    assert train
    strings = [text[r["intent_id"]] for r in train]
    t = fit_temperature(
        dense_scores(fake_encode(strings), inputs.capability_text),
        np.array([pos[r["capability_id"]] for r in train]),
    )
    fitted = membership(
        tiny_dataset, ActiveConfig(), index, inputs.capability_text, fake_encode, NEW_TEXTS, dense
    )
    assert np.allclose(fitted, softmax(prior, t), atol=1e-6)
    ranker = ActiveConfig(novelty_source="ranker", temperature=1.0)
    by_ranker = membership(
        tiny_dataset, ranker, index, inputs.capability_text, fake_encode, NEW_TEXTS, dense
    )
    assert np.allclose(by_ranker, softmax(index.scores(dense, NEW_TEXTS)), atol=1e-6)
