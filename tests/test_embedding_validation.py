"""Embedding validation: each check fails on its own defect, with check, count and ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from caprank.config import CaprankConfig
from caprank.embeddings.hybrid import l2_normalize
from caprank.embeddings.validation import (
    EmbeddingValidationError,
    VectorColumn,
    relative_variance,
    validate_table,
)
from caprank.errors import DataError

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
CFG = CaprankConfig()
IDS = [f"cap-{i}" for i in range(50)]


def _unit(n=50, dim=384, seed=0):
    return l2_normalize(np.random.default_rng(seed).normal(size=(n, dim)))


def _validate(vectors, dim=384, normalized=True, computed_at=None, ids=IDS):
    col = VectorColumn("hybrid_embedding", vectors, dim, normalized)
    stamps = computed_at or [NOW] * len(ids)
    validate_table("capability_embeddings.parquet", ids, [col], stamps, NOW, CFG)


def _failure(excinfo, check):
    assert isinstance(excinfo.value, DataError)
    (fail,) = [f for f in excinfo.value.failures if f.check == check]
    assert f"[{check}]" in str(excinfo.value)
    assert "capability_embeddings.parquet" in str(excinfo.value)
    return fail


def test_healthy_high_dimensional_unit_vectors_pass():
    # isotropic unit vectors: per-dimension variance is about 1/384, far under the raw 0.01
    vecs = _unit()
    assert vecs.var(axis=0).mean() < 0.01
    assert 0.5 < np.median(relative_variance(vecs)) < 1.5
    _validate(vecs)
    # a few dead coordinates (all-MiniLM-L6-v2 has three) do not make a table collapsed
    vecs[:, [3, 7, 11]] = 0.0
    _validate(l2_normalize(vecs))


def test_dimension_failure_names_ids():
    rows = list(_unit())
    rows[4] = rows[4][:100]
    rows[9] = np.concatenate([rows[9], [0.0]])
    with pytest.raises(EmbeddingValidationError) as err:
        _validate(rows)
    fail = _failure(err, "dimension")
    assert (fail.count, fail.total, fail.examples) == (2, 50, ["cap-4", "cap-9"])
    assert "2 of 50 items are not 384-dimensional" in str(err.value)
    assert err.value.field == "hybrid_embedding"


def test_nan_and_inf_are_caught():
    vecs = _unit()
    vecs[2, 5] = np.nan
    vecs[7, 0] = np.inf
    with pytest.raises(EmbeddingValidationError) as err:
        _validate(vecs)
    fail = _failure(err, "finite")
    assert (fail.count, fail.examples) == (2, ["cap-2", "cap-7"])
    assert err.value.checks == ["finite"]  # the other rows are still unit and spread


def test_norm_outside_tolerance_is_caught_only_where_promised():
    vecs = _unit()
    vecs[[1, 3, 5]] *= 1.02  # |norm - 1| = 0.02 > 0.01
    vecs[6] *= 1.005  # within tolerance
    with pytest.raises(EmbeddingValidationError) as err:
        _validate(vecs)
    fail = _failure(err, "normalized")
    assert (fail.count, fail.examples) == (3, ["cap-1", "cap-3", "cap-5"])
    _validate(vecs, normalized=False)


def test_collapse_is_caught():
    base = _unit(n=1)[0]
    collapsed = l2_normalize(base + 1e-3 * _unit(seed=1))  # every item the same direction
    with pytest.raises(EmbeddingValidationError) as err:
        _validate(collapsed)
    fail = _failure(err, "not_collapsed")
    assert fail.unit == "dimensions" and fail.count == 384
    assert fail.examples[0].startswith("dim 0:")
    assert "collapsed" in str(err.value)
    # a cone with real spread is not a collapse
    _validate(l2_normalize(base + 0.5 * _unit(seed=1)))


def test_staleness_old_and_future_rows():
    stamps = [NOW] * 50
    stamps[0] = NOW - timedelta(hours=25)
    stamps[1] = NOW - timedelta(hours=23)
    stamps[2] = NOW + timedelta(hours=1)
    with pytest.raises(EmbeddingValidationError) as err:
        _validate(_unit(), computed_at=stamps)
    old, future = [f for f in err.value.failures if f.check == "staleness"]
    assert (old.count, old.examples) == (1, ["cap-0"])
    assert (future.count, future.examples) == (1, ["cap-2"])
    assert "24.0 h" in str(err.value)


def test_duplicate_ids_and_several_failures_in_one_error():
    vecs = _unit()
    vecs[0] = np.nan
    ids = [*IDS[:-1], "cap-3"]
    with pytest.raises(EmbeddingValidationError) as err:
        _validate(vecs, ids=ids)
    assert err.value.checks == ["unique_ids", "finite"]
    assert _failure(err, "unique_ids").examples == ["cap-3"]
