"""The linear start: the id channel begins at the logistic-regression optimum."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from caprank.training.linear_start import (
    SILENT_LOG_SCALE,
    linear_start,
    start_ranks,
    write_start,
)
from caprank.training.trainer import Trainer
from tests.train_fixtures import tiny_model, tiny_prepared, tiny_training_cfg

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def problem(tiny_cfg, tiny_dataset):
    # lexical_dim covers every capability with positives: the factorization is exact
    cfg = tiny_training_cfg(tiny_cfg, lexical_dim=64, source="labels", linear_start=True)
    prep = tiny_prepared(tiny_dataset, cfg)
    assert len(prep.id_capabilities) <= 64
    return cfg, prep


def model_cross_entropy(model, prep, temperature: float) -> float:
    """The model's own weighted cross-entropy over its positives, ranked among the
    capabilities with positives (the trainer's InfoNCE without sampling or dropout)."""
    d = prep.data
    exp = d.experiences
    pos = np.flatnonzero(exp.positive > 0)
    model.eval()
    with torch.no_grad():
        from caprank.model.inputs import intent_batch, select_bags

        rows = exp.intent[pos]
        batch = intent_batch(d.intent_dense[rows], select_bags(d.intent_bags, rows))
        scores = model.query(batch) @ model.keys(d.graph).T / temperature
        scores = scores.masked_fill(~torch.as_tensor(d.rankable), -1e9)
        ce = F.cross_entropy(scores, torch.as_tensor(exp.capability[pos]), reduction="none")
        w = torch.as_tensor(exp.positive[pos], dtype=torch.float32)
        return float((ce * w).sum() / w.sum())


def test_started_model_scores_exactly_the_fitted_logistic_regression(problem):
    cfg, prep = problem
    model = tiny_model(prep, cfg)
    before = model_cross_entropy(model, prep, cfg.training.temperature)
    d = prep.data
    result = linear_start(
        model, d.graph, d.intent_dense, d.intent_bags, d.experiences, cfg.training
    )
    assert not result.skipped and result.iterations > 0
    assert result.capabilities == len(prep.id_capabilities)
    after = model_cross_entropy(model, prep, cfg.training.temperature)
    # what the model now scores is the fit: the written weights reproduce its loss
    assert after == pytest.approx(result.cross_entropy, abs=1e-3)
    assert after < 0.5 * before


def test_linear_start_is_skipped_over_its_size_limit(problem):
    cfg, prep = problem
    tc = cfg.training.model_copy(update={"linear_start_max_cells": 10})
    model = tiny_model(prep, cfg)
    state = copy.deepcopy(model.state_dict())
    d = prep.data
    result = linear_start(model, d.graph, d.intent_dense, d.intent_bags, d.experiences, tc)
    assert "linear_start_max_cells" in result.skipped
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_fit_validates_the_started_state_and_reports_it(problem):
    cfg, prep = problem
    model = tiny_model(prep, cfg)
    fit = Trainer(model, prep.data, cfg.training).fit()
    assert fit.linear_start is not None and not fit.linear_start["skipped"]
    starts = [h for h in fit.history if h.get("linear_start")]
    assert len(starts) == 1 and starts[0]["step"] == 0
    off = tiny_training_cfg(cfg, linear_start=False)
    fit_off = Trainer(tiny_model(prep, off), prep.data, off.training).fit()
    assert fit_off.linear_start is None
    assert not [h for h in fit_off.history if h.get("linear_start")]


def test_evidence_dropout_keeps_started_scores_below_an_answer_without_evidence(problem):
    """With evidence dropout in the fit, the other capabilities' started scores learn to
    stay below a right answer scored by its prior alone (what a cold start needs)."""
    cfg, prep = problem
    d = prep.data
    exp = d.experiences
    pos = np.flatnonzero(exp.positive > 0)

    def answer_wins_by_prior(evidence_dropout: float) -> float:
        from caprank.model.inputs import intent_batch, select_bags

        tc = cfg.training.model_copy(update={"evidence_dropout": evidence_dropout})
        model = tiny_model(prep, cfg)
        linear_start(model, d.graph, d.intent_dense, d.intent_bags, exp, tc)
        model.eval()
        rows = exp.intent[pos]
        batch = intent_batch(d.intent_dense[rows], select_bags(d.intent_bags, rows))
        with torch.no_grad():
            keys = model.keys(d.graph)
            scores = (model.query(batch) @ keys.T).masked_fill(~torch.as_tensor(d.rankable), -1e9)
            answer = torch.as_tensor(exp.capability[pos])
            prior = model.dims.cos_weight * (batch.dense * d.graph.cap_text[answer]).sum(1)
            scores[torch.arange(len(pos)), answer] = prior
            return float((scores.argmax(1) == answer).float().mean())

    with_dropout, without = answer_wins_by_prior(0.5), answer_wins_by_prior(0.0)
    assert with_dropout > without + 0.1, (with_dropout, without)


def test_start_in_a_catalog_with_unseen_capabilities(tiny_cfg, tiny_dataset):
    """Capabilities without labels stay prior-only competitors of the fit: the started
    model fits the others and, over the whole catalog, beats its prior on validation."""
    import dataclasses

    import pyarrow as pa
    import pyarrow.compute as pc

    cfg = tiny_training_cfg(tiny_cfg, lexical_dim=64, source="labels", linear_start=True)
    caps = tiny_dataset.capabilities["capability_id"].to_pylist()
    held = pa.array(caps[::5])  # a fifth of the catalog never labeled
    labels = tiny_dataset.labels.filter(
        pc.invert(pc.is_in(tiny_dataset.labels["capability_id"], held))
    )
    prep = tiny_prepared(dataclasses.replace(tiny_dataset, labels=labels), cfg)
    d = prep.data
    assert (d.graph.cap_id < 0).sum().item() == len(held)
    model = tiny_model(prep, cfg)
    result = linear_start(
        model, d.graph, d.intent_dense, d.intent_bags, d.experiences, cfg.training
    )
    assert not result.skipped and result.capabilities == len(caps) - len(held)
    assert model_cross_entropy(model, prep, cfg.training.temperature) < 0.5
    from caprank.training.trainer import validation_mrr

    started = validation_mrr(model, d)
    model.residual_on.fill_(0.0)
    prior = validation_mrr(model, d)
    assert started > prior + 0.1, (started, prior)


def test_a_start_worse_than_the_prior_is_dropped(problem):
    """A start that does not validate above the prior is undone: SGD begins from the
    weights it had before (a zero id channel, the content channel's own scale), as
    without a linear start."""
    cfg, prep = problem
    first_step = []

    class StartLoses(Trainer):
        calls = 0

        def validate(self) -> float:
            StartLoses.calls += 1
            return 0.9 if StartLoses.calls == 1 else 0.1  # the prior wins

        def train_step(self):
            if not first_step:
                first_step.append(self.model.id_emb.detach().clone())
                first_step.append(float(self.model.log_scale))
            return super().train_step()

    model = tiny_model(prep, cfg)
    scale = float(model.log_scale)
    fit = StartLoses(model, prep.data, cfg.training).fit()
    assert fit.linear_start is not None and fit.linear_start["kept"] is False
    assert torch.count_nonzero(first_step[0]) == 0
    assert first_step[1] == scale  # the content channel is not left silenced either
    kept = Trainer(tiny_model(prep, cfg), prep.data, cfg.training).fit()
    assert kept.linear_start["kept"] is True  # the real validation: the start beats the prior


def test_the_start_silences_the_untrained_content_channel(problem):
    """The content channel's random projections are noise to the fit: after a start its
    term is negligible beside the fitted id channel's, and the fit is over that."""
    cfg, prep = problem
    d = prep.data
    model = tiny_model(prep, cfg)

    def channel_spread(name: str) -> float:
        from caprank.model.inputs import intent_batch, select_bags

        rows = d.valid_intents
        batch = intent_batch(d.intent_dense[rows], select_bags(d.intent_bags, rows))
        cols = model.channel_slices()[name]
        model.eval()
        with torch.no_grad():
            part = model.query(batch)[:, cols] @ model.keys(d.graph)[:, cols].T
        return float(part.std(dim=1).mean())

    untrained = channel_spread("content")
    linear_start(model, d.graph, d.intent_dense, d.intent_bags, d.experiences, cfg.training)
    assert float(model.log_scale) == pytest.approx(SILENT_LOG_SCALE)
    assert channel_spread("content") < 1e-3 * untrained
    assert channel_spread("content") < 1e-3 * channel_spread("id")


def test_start_ranks_halve_down_to_the_floor():
    assert start_ranks(512, 64) == [512, 256, 128, 64]
    assert start_ranks(512, 100) == [512, 256, 128]
    assert start_ranks(128, 128) == [128]  # the floor at lexical_dim: no choice
    assert start_ranks(100, 1000) == [100]


def test_the_start_keeps_the_lexical_rank_that_validates_best(problem):
    """Each rank is written and validated; the best stays written, and the report says
    which ranks were tried and how each validated."""
    cfg, prep = problem
    cfg = tiny_training_cfg(
        cfg, lexical_dim=64, source="labels", linear_start_min_rank=8, max_steps=1
    )
    scripted = {"prior": 0.1}  # validation by the rank the id channel holds

    class ByRank(Trainer):
        def validate(self) -> float:
            if float(self.model.residual_on) == 0.0:
                return scripted["prior"]
            # the lexical rank written: nonzero lexical columns of the id embeddings
            lex = self.model.id_emb[:, self.model.dims.text_dim :]
            rank = int((lex.abs().sum(0) > 0).sum())
            return {16: 0.9}.get(rank, 0.5)

    model = tiny_model(prep, cfg)
    before = model.id_lex.weight.detach().clone()
    trainer = ByRank(model, prep.data, cfg.training)
    trainer.fit()
    report = trainer.linear_result
    ranks = [int(r) for r in report["rank_valid_mrr"]]
    # the rank the fit has (at most lexical_dim 64), then the halvings below it down to 8
    assert ranks == [ranks[0]] + [r for r in start_ranks(64, 8) if r < ranks[0]]
    assert ranks[-2:] == [16, 8]
    assert report["rank"] == 16 and report["rank_valid_mrr"]["16"] == 0.9
    starts = [h for h in trainer.history if h.get("linear_start")]
    assert [int(h["rank"]) for h in starts] == ranks
    # the kept state (the best, at step 0) is the start written at rank 16: the
    # projection's other columns are as before the start
    best = trainer.best_state
    lex = best["id_emb"][:, model.dims.text_dim :]
    assert int((lex.abs().sum(0) > 0).sum()) == 16
    torch.testing.assert_close(best["id_lex.weight"][:, 16:], before[:, 16:])
    assert not torch.equal(best["id_lex.weight"][:, :16], before[:, :16])


def test_write_start_at_a_lower_rank_is_the_truncated_factorization(problem):
    cfg, prep = problem
    d = prep.data
    model = tiny_model(prep, cfg)
    started = linear_start(
        model, d.graph, d.intent_dense, d.intent_bags, d.experiences, cfg.training
    )
    assert write_start(model, d.graph, started.fitted, 4) == 4
    with torch.no_grad():  # lexical projection x embedding = the best rank-4 part of the fit
        lex_keys = (
            model.id_emb[:, model.dims.text_dim :]
            * model.gate(d.graph)[started.fitted.id_rows][:, None]
        )
        product = model.id_lex.weight @ lex_keys.T / cfg.training.temperature
    u, s, vh = torch.linalg.svd(started.fitted.w_lex, full_matrices=False)
    torch.testing.assert_close(product, (u[:, :4] * s[:4]) @ vh[:4], atol=1e-4, rtol=1e-3)
