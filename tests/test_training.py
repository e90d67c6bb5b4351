"""SHGAT scoring, the bundle through the serving loader, and checkpoint/resume."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from caprank.model.bundle import load_bundle, save_bundle
from caprank.online.catalog import catalog_from_tables, write_catalog
from caprank.online.models import load_model_dir
from caprank.training.trainer import Trainer
from tests.train_fixtures import (
    fake_encode,
    tiny_bundle,
    tiny_model,
    tiny_prepared,
    tiny_training_cfg,
)

torch.set_num_threads(1)  # the shared 2-core machine: no thread contention


@pytest.fixture(scope="module")
def trained(tiny_cfg, tiny_dataset, tmp_path_factory):
    cfg = tiny_training_cfg(tiny_cfg, max_steps=20, eval_every=10)
    prep = tiny_prepared(tiny_dataset, cfg)
    model = tiny_model(prep, cfg)
    fit = Trainer(model, prep.data, cfg.training).fit()
    return cfg, prep, model, fit


def test_training_learns_and_reports_both_losses(trained):
    _, prep, _, fit = trained
    losses = [h for h in fit.history if "rank_loss" in h]
    assert losses and all("value_loss" in h and "content_loss" in h for h in losses)
    assert losses[-1]["rank_loss"] < losses[0]["rank_loss"]
    assert fit.best_valid_mrr > 0.0 and prep.n_valid > 0


def _residual_on(model):
    """The trained model with its residual switched on: a run that never beat the prior
    on validation keeps it off (``Trainer._evaluate_prior``), and these tests are about
    the gate itself, whatever the tiny run's validation said."""
    model = copy.deepcopy(model)
    model.residual_on.fill_(1.0)
    return model


def test_capability_without_evidence_ranks_exactly_as_the_prior(trained):
    """Gate g(0) = 0: a capability with no training positives scores exactly its cosine
    prior (its residual key columns are zero); one with evidence gets a learned part."""
    _, prep, model, _ = trained
    model = _residual_on(model)
    bundle = tiny_bundle(prep, model)
    inp = prep.inputs
    src = inp.capability_ids.index(prep.id_capabilities[0])  # a capability with evidence
    ids = [*inp.capability_ids, "brand-new"]
    tools = [[inp.tool_ids[t] for t in row] for row in inp.capability_tools]
    tools.append(tools[src])
    texts = ["cap text"] * len(inp.capability_ids) + ["new capability text"]
    new_inputs = bundle.catalog_inputs(ids, tools, texts, {}, None, fake_encode)
    new_inputs.capability_text[-1] = inp.capability_text[src]
    index = bundle.index(new_inputs)
    split = model.prior_columns()
    assert np.count_nonzero(index.keys[-1, split:]) == 0  # no evidence: no residual at all
    assert np.count_nonzero(index.keys[src, split:]) > 0
    np.testing.assert_array_equal(index.keys[-1, :split], index.keys[src, :split])
    intents = ["find something", "plan a trip", "convert this file"]
    vecs = fake_encode(intents)
    scores = index.scores(vecs, intents)
    prior = model.dims.cos_weight * (vecs @ new_inputs.capability_text.T)
    cold = [i for i, c in enumerate(ids) if c not in set(prep.id_capabilities)]
    assert cold[-1] == len(ids) - 1
    np.testing.assert_allclose(scores[:, cold], prior[:, cold], rtol=0, atol=1e-6)
    assert not np.allclose(scores[:, src], prior[:, src], atol=1e-3)
    # a new capability of an unknown tool and text still gets a finite score
    other = bundle.catalog_inputs(["x"], [["unknown-tool"]], ["some text"], {}, None, fake_encode)
    assert np.isfinite(bundle.index(other).scores(vecs, intents)).all()


def test_catalog_without_evidence_ranks_as_dense_cosine(trained):
    """Every capability new to the bundle: the ranking is the dense cosine baseline's."""
    from caprank.evaluation.baselines import dense_scores

    _, prep, model, _ = trained
    bundle = tiny_bundle(prep, model)
    inp = prep.inputs
    ids = [f"{c}-new" for c in inp.capability_ids]
    tools = [[inp.tool_ids[t] for t in row] for row in inp.capability_tools]
    texts = [f"capability {i}" for i in range(len(ids))]
    cold = bundle.catalog_inputs(ids, tools, texts, {}, None, fake_encode)
    intents = [f"intent number {i}" for i in range(20)]
    vecs = fake_encode(intents)
    got = np.argsort(-bundle.index(cold).scores(vecs, intents), axis=1, kind="stable")
    want = np.argsort(-dense_scores(vecs, cold.capability_text), axis=1, kind="stable")
    np.testing.assert_array_equal(got, want)


def test_residual_gate_is_zero_without_evidence_and_grows_with_it(trained):
    _, prep, model, _ = trained
    model = _residual_on(model)
    graph = prep.data.graph
    n = torch.tensor([0.0, 1.0, 3.0, 30.0, 3000.0])
    gate = model.gate(dataclasses.replace(graph, cap_evidence=n))
    assert gate[0].item() == 0.0
    assert torch.all(gate[1:] > gate[:-1]) and gate[-1].item() > 0.99
    assert gate[2].item() == pytest.approx(0.5)  # n = evidence_k


def test_evidence_dropout_scores_the_masked_capabilities_by_their_prior_alone(trained):
    """A step's ``gate_mask`` makes its capabilities score as ones without evidence do, so
    rows whose answer is masked train the residuals of the others not to lift them over it."""
    _, prep, model, _ = trained
    model = _residual_on(model)
    graph = prep.data.graph
    with torch.no_grad():
        _, caps = model.encode(graph)
        plain = model.keys(graph, caps)
        mask = torch.ones(plain.shape[0], dtype=torch.bool)
        mask[::2] = False
        masked = model.keys(graph, caps, gate_mask=mask)
    split = model.prior_columns()
    assert torch.count_nonzero(masked[::2, split:]) == 0
    torch.testing.assert_close(masked[1::2], plain[1::2])
    torch.testing.assert_close(masked[:, :split], plain[:, :split])
    assert torch.count_nonzero(plain[::2, split:]) > 0


def test_training_with_evidence_dropout_learns(tiny_cfg, tiny_dataset):
    cfg = tiny_training_cfg(tiny_cfg, max_steps=20, eval_every=10, evidence_dropout=0.5)
    prep = tiny_prepared(tiny_dataset, cfg)
    fit = Trainer(tiny_model(prep, cfg), prep.data, cfg.training).fit()
    losses = [h["rank_loss"] for h in fit.history if "rank_loss" in h]
    assert losses[-1] < losses[0]


def test_bundle_loads_and_ranks_through_load_model_dir(trained, tiny_dataset, tmp_path):
    cfg, prep, model, _ = trained
    bundle = tiny_bundle(prep, model)
    catalog = catalog_from_tables(tiny_dataset.tools, tiny_dataset.capabilities, "test")
    out = save_bundle(
        bundle,
        tmp_path / "model" / "artifacts" / "bundle",
        extra_files=lambda d: write_catalog(catalog, d),
    )
    loaded = load_model_dir(tmp_path / "model", cfg, catalog, None)
    assert loaded.builder.kind == "shgat" and loaded.version == "test-bundle"
    texts = ["plan a trip", "convert this file"]
    vecs = fake_encode(texts)
    direct = load_bundle(out).index(prep.inputs).scores(vecs, texts)
    ranker = loaded.ranker
    for i, text in enumerate(texts):
        q = ranker.query(vecs[i], text)
        np.testing.assert_allclose(ranker.score(q, None), direct[i], rtol=1e-5, atol=1e-5)
        some = np.array([3, 0, 5])
        np.testing.assert_allclose(ranker.score(q, some), direct[i][some], rtol=1e-5, atol=1e-5)
        p = ranker.success_probability(vecs[i], text, some)
        assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()


def test_killed_run_resumes_to_the_same_result(tiny_cfg, tiny_dataset, tmp_path):
    cfg = tiny_training_cfg(tiny_cfg, max_steps=12, eval_every=4, checkpoint_every=4)
    prep = tiny_prepared(tiny_dataset, cfg)
    full = Trainer(tiny_model(prep, cfg), prep.data, cfg.training, tmp_path / "a").fit()

    class Killed(Exception):
        pass

    def kill_at_10(step, metrics):
        if step == 10:
            raise Killed

    with pytest.raises(Killed):
        Trainer(tiny_model(prep, cfg), prep.data, cfg.training, tmp_path / "b", kill_at_10).fit()
    resumed_model = tiny_model(prep, cfg)
    resumed = Trainer(resumed_model, prep.data, cfg.training, tmp_path / "b").fit()
    assert resumed.resumed_from == 8
    assert resumed.best_valid_mrr == full.best_valid_mrr
    assert resumed.best_step == full.best_step
    assert [h for h in resumed.history] == [h for h in full.history]
    ref = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    for name, value in resumed_model.state_dict().items():
        torch.testing.assert_close(value, ref[name], rtol=0, atol=0)


def test_train_stage_reports_validation_metrics_only(trained, tiny_dataset):
    """The train stage scores SHGAT and every baseline on the validation intents (the
    evaluate stage alone reads the test labels)."""
    from caprank.evaluation.metrics import mean_reciprocal_rank
    from caprank.training.stage import VALID_METRICS, TrainResult, validation_metrics

    cfg, prep, model, fit = trained
    cfg = cfg.model_copy(deep=True)
    cfg.training.baselines = ["bm25", "dense", "logreg"]
    got = validation_metrics(tiny_dataset, cfg, prep, tiny_bundle(prep, model))
    assert set(got) == {"shgat", "bm25", "dense", "logreg"}
    assert all(set(m) == set(VALID_METRICS) for m in got.values())
    # the same validation intents early stopping judges, through the same MRR
    d = prep.data
    rows = d.valid_intents
    texts = [prep.intent_texts[r] for r in rows]
    scores = tiny_bundle(prep, model).index(prep.inputs).scores(d.intent_dense[rows], texts)
    assert got["shgat"]["mrr"] == pytest.approx(
        mean_reciprocal_rank(scores, d.valid_relevant), abs=1e-6
    )
    cfg.training.baselines = []
    assert set(validation_metrics(tiny_dataset, cfg, prep, tiny_bundle(prep, model))) == {"shgat"}
    text = TrainResult(Path("bundle"), fit, prep.summary, valid_metrics=got).to_markdown()
    assert "| ranker (validation intents) |" in text and "test" not in text


def test_training_keeps_the_prior_when_no_trained_state_beats_it(tiny_cfg, tiny_dataset):
    """The prior alone (residual off) is validated at step 0; when no trained state
    validates better, training ends with the prior: it ranks exactly as the prior."""
    cfg = tiny_training_cfg(tiny_cfg, max_steps=4, eval_every=2, linear_start=True)
    prep = tiny_prepared(tiny_dataset, cfg)
    model = tiny_model(prep, cfg)
    seen = []

    class PriorWins(Trainer):
        def validate(self) -> float:
            seen.append(self.model.residual_on.item())
            real = super().validate()
            return 0.9 if len(seen) == 1 else min(real, 0.5)

    fit = PriorWins(model, prep.data, cfg.training).fit()
    # the prior, the linear start, steps 2 and 4
    assert seen[0] == 0.0 and all(on == 1.0 for on in seen[1:]) and len(seen) == 4
    assert fit.history[0] == {"step": 0, "valid_mrr": 0.9, "prior": 1.0}
    assert fit.history[1]["linear_start"] == 1.0 and fit.history[1]["valid_mrr"] <= 0.5
    assert fit.best_step == 0 and model.residual_on.item() == 0.0
    intents = ["plan a trip", "convert this file"]
    vecs = fake_encode(intents)
    scores = tiny_bundle(prep, model).index(prep.inputs).scores(vecs, intents)
    prior = model.dims.cos_weight * (vecs @ prep.inputs.capability_text.T)
    np.testing.assert_allclose(scores, prior, rtol=0, atol=1e-6)
