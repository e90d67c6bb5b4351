"""The cheap ways the hit path scores and validates candidates give what the plain ones do."""

from __future__ import annotations

import numpy as np
import pytest

from caprank.online.catalog import Catalog
from caprank.online.ranker import FULL_PRODUCT_SHARE, candidate_scores
from caprank.online.request import RequestError, _id_list


@pytest.mark.parametrize("n", [1, 5, 40, 200, 1000])
def test_candidate_scores_equal_the_gathered_product(n: int):
    rng = np.random.default_rng(n)
    keys = rng.standard_normal((1000, 16)).astype(np.float32)
    query = rng.standard_normal(16).astype(np.float32)
    idx = rng.choice(1000, n, replace=False)
    assert (n >= FULL_PRODUCT_SHARE * 1000) == (n >= 125)
    np.testing.assert_allclose(candidate_scores(keys, query, idx), keys[idx] @ query, rtol=1e-5)
    np.testing.assert_allclose(candidate_scores(keys, query, None), keys @ query, rtol=1e-6)


def test_index_of_keeps_order_and_names_unknown_ids():
    cat = Catalog(ids=("a", "b", "c"), tools=(("t",),) * 3, texts=("x", "y", "z"), source="t")
    assert cat.index_of(["c", "a"]).tolist() == [2, 0]
    with pytest.raises(KeyError) as err:
        cat.index_of(["a", "zz"])
    assert err.value.args[0] == ["zz"]


@pytest.mark.parametrize(
    ("value", "field"), [(["a", ""], "c[1]"), (["a", 3], "c[1]"), ([None], "c[0]")]
)
def test_id_list_still_names_the_bad_item(value, field):
    with pytest.raises(RequestError) as err:
        _id_list(value, "c", 10)
    assert err.value.field == field
    assert _id_list(["a", "b"], "c", 10) == ("a", "b")
