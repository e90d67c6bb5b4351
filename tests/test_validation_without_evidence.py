"""Validation that sees the cold start: answers scored as if they had no evidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caprank.evaluation.metrics import mean_reciprocal_rank
from caprank.model.inputs import intent_batch, select_bags
from caprank.training.linear_start import linear_start
from caprank.training.trainer import validation_mrr
from tests.train_fixtures import tiny_model, tiny_prepared, tiny_training_cfg

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def started(tiny_cfg, tiny_dataset):
    """A model whose residuals matter: the id channel fitted by the linear start."""
    cfg = tiny_training_cfg(tiny_cfg, lexical_dim=64, source="labels", linear_start=True)
    prep = tiny_prepared(tiny_dataset, cfg)
    d = prep.data
    model = tiny_model(prep, cfg)
    linear_start(model, d.graph, d.intent_dense, d.intent_bags, d.experiences, cfg.training)
    return model, d


def answers_without_evidence(model, d) -> float:
    """The definition, one intent at a time: its answers' residual gate set to zero."""
    model.eval()
    n_caps = d.graph.cap_id.shape[0]
    rows = []
    with torch.no_grad():
        for i, rel in zip(d.valid_intents, d.valid_relevant, strict=True):
            mask = torch.ones(n_caps, dtype=torch.bool)
            mask[torch.as_tensor(rel)] = False
            keys = model.keys(d.graph, gate_mask=mask)
            batch = intent_batch(d.intent_dense[[i]], select_bags(d.intent_bags, np.array([i])))
            rows.append((model.query(batch) @ keys.T).numpy()[0])
    return mean_reciprocal_rank(np.stack(rows), d.valid_relevant)


def test_mixed_validation_is_the_weighted_mean_of_both_views(started):
    model, d = started
    plain = validation_mrr(model, d)
    cold = answers_without_evidence(model, d)
    assert validation_mrr(model, d, without_evidence=1.0) == pytest.approx(cold, abs=1e-6)
    mixed = validation_mrr(model, d, without_evidence=0.3)
    assert mixed == pytest.approx(0.7 * plain + 0.3 * cold, abs=1e-6)
    # the views differ: with the answers' residuals gone the ranking changes
    assert abs(plain - cold) > 0.05, (plain, cold)


def test_the_prior_alone_scores_the_same_in_both_views(started):
    model, d = started
    model.residual_on.fill_(0.0)
    try:
        assert validation_mrr(model, d, without_evidence=0.5) == pytest.approx(
            validation_mrr(model, d), abs=1e-9
        )
    finally:
        model.residual_on.fill_(1.0)


def test_the_trainer_picks_its_best_state_by_the_configured_view(tiny_cfg, tiny_dataset):
    from caprank.training.trainer import Trainer

    for w in (0.0, 1.0):
        cfg = tiny_training_cfg(
            tiny_cfg,
            lexical_dim=64,
            source="labels",
            max_steps=40,
            eval_every=20,
            validation_without_evidence=w,
        )
        prep = tiny_prepared(tiny_dataset, cfg)
        model = tiny_model(prep, cfg)
        fit = Trainer(model, prep.data, cfg.training).fit()
        # the kept state is the best one, so its figure in that view is the best figure
        assert validation_mrr(model, prep.data, without_evidence=w) == pytest.approx(
            fit.best_valid_mrr, abs=1e-6
        )


def without_train_labels(ds, n_caps: int):
    """``ds`` with the train labels of its first ``n_caps`` capabilities moved to test:
    those capabilities have no evidence, as in a cold split."""
    import dataclasses

    import pyarrow as pa
    import pyarrow.compute as pc

    cold = ds.capabilities["capability_id"].to_pylist()[:n_caps]
    labels = ds.labels
    moved = pc.and_(
        pc.is_in(labels["capability_id"], pa.array(cold)), pc.equal(labels["split"], "train")
    )
    split = pc.if_else(moved, "test", labels["split"])
    labels = labels.set_column(labels.schema.get_field_index("split"), "split", split)
    return dataclasses.replace(ds, labels=labels), cold


def test_auto_weighs_by_the_catalogs_share_without_evidence(tiny_cfg, tiny_dataset):
    from caprank.training.trainer import Trainer, evidence_free_share

    ds, cold = without_train_labels(tiny_dataset, 12)
    cfg = tiny_training_cfg(tiny_cfg, lexical_dim=64, source="labels", max_steps=40, eval_every=20)
    assert cfg.training.validation_without_evidence == "auto"  # the default
    prep = tiny_prepared(ds, cfg)
    n_caps = prep.data.graph.cap_id.shape[0]
    share = evidence_free_share(prep.data.graph)
    # the moved capabilities, and only they, lost their evidence (the tiny data's other
    # capabilities all have train labels)
    assert share == pytest.approx(len(cold) / n_caps)
    model = tiny_model(prep, cfg)
    fit = Trainer(model, prep.data, cfg.training).fit()
    assert fit.valid_without_evidence == pytest.approx(share)
    assert validation_mrr(model, prep.data, without_evidence=share) == pytest.approx(
        fit.best_valid_mrr, abs=1e-6
    )
    # and where every capability has evidence, auto is plain validation
    full = tiny_prepared(tiny_dataset, cfg)
    assert evidence_free_share(full.data.graph) == 0.0
    assert cfg.training.without_evidence_weight(0.0) == 0.0


@pytest.mark.parametrize("bad", [1.5, -0.1, "always"])
def test_the_weight_is_auto_or_in_the_unit_interval(bad):
    from pydantic import ValidationError

    from caprank.config import TrainingConfig

    assert TrainingConfig(validation_without_evidence=0.25).without_evidence_weight(0.9) == 0.25
    assert TrainingConfig(validation_without_evidence="auto").without_evidence_weight(0.9) == 0.9
    with pytest.raises(ValidationError, match="validation_without_evidence"):
        TrainingConfig(validation_without_evidence=bad)
