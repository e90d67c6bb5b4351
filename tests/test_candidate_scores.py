"""The cheap ways the hit path scores and validates candidates give what the plain ones do,
and the score cache computes once and stays within its budget."""

from __future__ import annotations

import numpy as np
import pytest

from caprank.config import CaprankConfig
from caprank.errors import DataError
from caprank.online.catalog import Catalog
from caprank.online.ranker import FULL_PRODUCT_SHARE, DenseRanker, ScoreCache, candidate_scores
from caprank.online.request import (
    CandidateLists,
    RequestError,
    _id_list,
    candidate_rows,
    parse_rank_request,
)


@pytest.mark.parametrize("n", [1, 5, 40, 200, 1000])
def test_candidate_scores_equal_the_gathered_product(n: int):
    rng = np.random.default_rng(n)
    keys = rng.standard_normal((1000, 16)).astype(np.float32)
    query = rng.standard_normal(16).astype(np.float32)
    idx = rng.choice(1000, n, replace=False)
    assert (n >= FULL_PRODUCT_SHARE * 1000) == (n >= 125)
    np.testing.assert_allclose(candidate_scores(keys, query, idx), keys[idx] @ query, rtol=1e-5)
    np.testing.assert_allclose(candidate_scores(keys, query, None), keys @ query, rtol=1e-6)


def test_a_catalog_refuses_an_empty_id():
    with pytest.raises(DataError, match="empty capability id"):
        Catalog(ids=("a", ""), tools=(("t",),) * 2, texts=("x", "y"), source="t")


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


class CountingRanker(DenseRanker):
    """A dense ranker that counts its products (frozen: the count lives in a list)."""

    def __init__(self, keys: np.ndarray):
        super().__init__("m", keys)
        object.__setattr__(self, "calls", [])

    def score(self, query, candidate_idx):
        self.calls.append(None if candidate_idx is None else len(candidate_idx))
        return super().score(query, candidate_idx)


def test_score_cache_gathers_what_the_product_gives_and_computes_once():
    rng = np.random.default_rng(0)
    ranker = CountingRanker(rng.standard_normal((500, 8)).astype(np.float32))
    vec = rng.standard_normal(8).astype(np.float32)
    cache = ScoreCache(max_bytes=10_000)
    for n in (3, 40, 500):
        idx = rng.choice(500, n, replace=False)
        got = cache.scores(ranker, "intent", vec, idx, rows=500)
        np.testing.assert_allclose(got, ranker.keys[idx] @ vec, rtol=1e-5, atol=1e-6)
    assert ranker.calls == [None]  # one product over every row, then gathers
    np.testing.assert_allclose(cache.scores(ranker, "intent", vec, None, 500), ranker.keys @ vec)
    cache.scores(ranker, "intent", vec.copy(), np.arange(3), 500)  # a re-encoded intent
    other = CountingRanker(ranker.keys)  # a rebuilt ranker (swap, feature refresh)
    cache.scores(other, "intent", vec, np.arange(3), 500)
    assert (ranker.calls, other.calls) == ([None, None], [None])


def test_score_cache_stays_within_its_budget_and_steps_aside_when_too_small():
    rng = np.random.default_rng(1)
    ranker = CountingRanker(rng.standard_normal((100, 4)).astype(np.float32))
    vec = rng.standard_normal(4).astype(np.float32)
    cache = ScoreCache(max_bytes=1_000)  # two 400-byte score vectors
    for text in ("a", "b", "c"):
        cache.scores(ranker, text, vec, np.arange(5), rows=100)
    assert (len(cache), cache.nbytes) == (2, 800)
    cache.scores(ranker, "a", vec, np.arange(5), rows=100)  # "a" was evicted first
    assert ranker.calls == [None] * 4
    small = ScoreCache(max_bytes=399)  # not one vector fits: the plain product
    np.testing.assert_allclose(
        small.scores(ranker, "a", vec, np.arange(5), rows=100), ranker.keys[:5] @ vec, rtol=1e-6
    )
    assert (ranker.calls[-1], len(small)) == (5, 0)


@pytest.mark.parametrize("catalog", [12, 100_000])  # the bitmap check, the sorted one
def test_candidate_rows_are_found_only_for_known_distinct_ids(catalog: int):
    position = {f"c{i}": i for i in range(catalog)}
    rows = candidate_rows(("c3", "c0", "c7"), position)
    assert rows.tolist() == [3, 0, 7] and not rows.flags.writeable
    assert candidate_rows(("c3", "c0", "c3"), position) is None  # a repeat
    assert candidate_rows(("c3", "nope"), position) is None  # an unknown id


def test_parsing_with_the_catalog_keeps_the_errors_and_their_order():
    cfg = CaprankConfig().serving
    position = {"a": 0, "b": 1, "c": 2}
    lists = CandidateLists(position)
    req = parse_rank_request({"intent": "x", "candidate_ids": ["c", "a"]}, cfg, lists)
    assert req.candidate_rows.tolist() == [2, 0] and req.rows_of is position
    for ids in (["a", "b", "a"], ["a", "zz", "a"]):  # repeats are named first, as before
        with pytest.raises(RequestError, match="duplicate ids"):
            parse_rank_request({"intent": "x", "candidate_ids": ids}, cfg, lists)
    unknown = parse_rank_request({"intent": "x", "candidate_ids": ["a", "zz"]}, cfg, lists)
    assert unknown.candidate_rows is None  # the engine refuses it, naming the id


@pytest.mark.parametrize(
    ("ids", "field"),
    [
        (["a", 3], "candidate_ids[1]"),  # not a string: no row, then named by the validation
        (["a", ""], "candidate_ids[1]"),
        ([["a"], "b"], "candidate_ids[0]"),  # unhashable: the lookup's TypeError is caught
        ([None], "candidate_ids[0]"),
        ([], "candidate_ids"),
    ],
)
def test_rows_found_first_never_let_a_bad_candidate_list_through(ids, field):
    cfg = CaprankConfig().serving
    position = {"a": 0, "b": 1, "3": 2, **{f"k{i}": 3 + i for i in range(20)}}
    lists = CandidateLists(position)  # even a catalog holding "3"
    with pytest.raises(RequestError) as err:
        parse_rank_request({"intent": "x", "candidate_ids": ids}, cfg, lists)
    assert err.value.field == field
    if ids:  # the same in a list long enough to be remembered (after 17 good ids)
        good = [f"k{i}" for i in range(17)]
        parse_rank_request({"intent": "x", "candidate_ids": good}, cfg, lists)
        with pytest.raises(RequestError) as err:
            parse_rank_request({"intent": "x", "candidate_ids": good + ids}, cfg, lists)
        assert err.value.field == field.replace("[0]", "[17]").replace("[1]", "[18]")
    too_many = [f"c{i}" for i in range(cfg.max_candidates + 1)]
    big = CandidateLists({c: i for i, c in enumerate(too_many)})
    with pytest.raises(RequestError, match="the limit is"):
        parse_rank_request({"intent": "x", "candidate_ids": too_many}, cfg, big)


def test_remembered_candidate_lists_give_the_rows_of_that_very_list():
    position = {f"c{i}": i for i in range(200)}
    lists = CandidateLists(position, max_bytes=1000)
    ids = [f"c{i}" for i in range(40, 20, -1)]
    first = lists.rows(list(ids))
    assert lists.rows(list(ids)) is first and first.tolist() == list(range(40, 20, -1))
    assert lists.rows([*ids[:-1], "c199"]).tolist() == [*range(40, 21, -1), 199]
    assert lists.rows([*ids[:-1], "nope"]) is None  # unknown: never remembered
    assert lists.rows([*ids[:-1], ids[0]]) is None  # a repeat
    assert lists.rows([*ids[:-1], 7]) is None  # not a string
    # an id holding the separator joins to a remembered key but is not that list
    glued = [ids[0] + CandidateLists.SEP + ids[1], *ids[2:]]
    assert CandidateLists.SEP.join(glued) == CandidateLists.SEP.join(ids)
    assert lists.rows(glued) is None
    many = [f"c{i}" for i in range(150)]  # past max_bytes: looked up, not kept
    assert lists.rows(many).tolist() == list(range(150)) and lists._bytes <= 1000
    assert lists.rows(list(ids)) is first  # still there
    for k in range(4):  # others fill the store, which starts again
        lists.rows([f"c{i}" for i in range(k, k + 20)])
    assert lists._bytes <= 1000 and lists.rows(list(ids)) is not first
    odd = CandidateLists({"a\x00b": 0, **position})  # a catalog id with the separator
    off = CandidateLists(position, max_bytes=0)
    for other in (odd, off):
        assert other.rows(list(ids)).tolist() == first.tolist() and other._rows is None


class DivergedRanker(CountingRanker):
    def score(self, query, candidate_idx):
        out = super().score(query, candidate_idx).copy()
        out[0] = np.nan
        return out


@pytest.mark.parametrize("max_bytes", [10_000, 10])  # cached, and too small to cache
def test_score_cache_refuses_non_finite_scores_and_never_keeps_them(max_bytes: int):
    rng = np.random.default_rng(2)
    ranker = DivergedRanker(rng.standard_normal((100, 4)).astype(np.float32))
    vec = rng.standard_normal(4).astype(np.float32)
    cache = ScoreCache(max_bytes=max_bytes)
    for _ in range(2):  # the second call computes again: nothing was cached
        with pytest.raises(FloatingPointError):
            cache.scores(ranker, "a", vec, np.arange(1, 5), rows=100)
    assert len(cache) == 0 and len(ranker.calls) == 2
