"""The fast paths of ranking give what the general paths give: dicts read in one walk over
their entries (keys matched by identity or by text), float32 embeddings read off the array's
header, feature names ruled out by their cached hash, integer ids found through a dense array,
and the small-k top-k scan."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import penchant
from penchant import _core

PROFILE = {"genre:sci-fi": 1.0, "tag:space": 0.5, "genre:drama": -0.5}


def items(n: int = 40) -> list[dict[str, Any]]:
    rng = np.random.default_rng(n)
    genres = ["genre:sci-fi", "genre:drama", "genre:horror", "tag:space", "tag:noir"]
    return [
        {
            "id": i,
            "score": float(rng.random()),
            "features": [genres[j] for j in rng.choice(len(genres), 2, replace=False)],
            "embedding": rng.normal(size=4).astype(np.float32),
            "timestamp": 1_700_000_000.0 - float(rng.random()) * 1e6,
            "popularity": float(rng.random() * 100),
            "attributes": {"price": float(rng.integers(1, 50))},
        }
        for i in range(n)
    ]


OPTIONS: dict[str, Any] = {
    "k": 7,
    "weights": {"recency": 0.3, "popularity": 0.2},
    "now": 1_700_000_000.0,
    "filters": penchant.Filters(blocked_features=frozenset({"genre:horror"}), attribute_ranges={"price": (None, 40)}),
    "explain": True,
}


def profile_with_taste() -> penchant.UserProfile:
    profile = penchant.UserProfile("u", taste_vector=[0.5, -1.0, 0.25, 2.0])
    return profile


def ranked(result: list[penchant.RankedItem]) -> list[tuple[Any, float, Any]]:
    return [(r.id, r.score, r.contributions) for r in result]


def test_dicts_parsed_from_json_rank_like_literal_dicts() -> None:
    """JSON keys are not the interned names: they are matched by their text."""
    literal = items()
    parsed = json.loads(json.dumps([{**it, "embedding": it["embedding"].tolist()} for it in literal]))
    assert all(it["embedding"] for it in parsed)
    want = ranked(penchant.rank_items(PROFILE, literal, **OPTIONS))
    assert len(want) == 7
    assert ranked(penchant.rank_items(PROFILE, parsed, **OPTIONS)) == want


def test_large_dicts_none_values_and_unknown_keys() -> None:
    """A dict with many entries is read by lookups; None and unknown keys are ignored either way."""
    base = items()
    padded = [{**it, **{f"extra{j}": j for j in range(20)}} for it in base]
    with_none = [{**it, "popularity": None, "comment": "x"} for it in base]
    without = [{k: v for k, v in it.items() if k != "popularity"} for it in base]
    assert ranked(penchant.rank_items(PROFILE, padded, **OPTIONS)) == ranked(
        penchant.rank_items(PROFILE, base, **OPTIONS)
    )
    assert ranked(penchant.rank_items(PROFILE, with_none, **OPTIONS)) == ranked(
        penchant.rank_items(PROFILE, without, **OPTIONS)
    )


def test_missing_id_is_still_an_error_in_a_small_dict() -> None:
    with pytest.raises(penchant.ValidationError, match="item 1 has no id"):
        penchant.rank_items(PROFILE, [{"id": 1}, {"score": 1.0, "features": []}])


class Tag(str):
    """A str subclass with its own hash: looked up through the general path."""

    def __hash__(self) -> int:
        return hash(str(self))


def test_feature_names_that_are_str_subclasses_or_uncached() -> None:
    base = items()
    fresh = [{**it, "features": [Tag(f) for f in it["features"]]} for it in base]
    # Names built at run time whose hash CPython has not computed yet.
    built = [{**it, "features": ["".join(list(f)) for f in it["features"]]} for it in base]
    want = ranked(penchant.rank_items(PROFILE, base, **OPTIONS))
    assert ranked(penchant.rank_items(PROFILE, fresh, **OPTIONS)) == want
    assert ranked(penchant.rank_items(PROFILE, built, **OPTIONS)) == want


@pytest.mark.parametrize(
    "convert",
    [
        lambda e: e.astype(np.float64),
        lambda e: np.repeat(e, 2)[::2],  # float32, not contiguous
        lambda e: e.tolist(),
        lambda e: tuple(float(x) for x in e),
    ],
    ids=["float64", "strided", "list", "tuple"],
)
def test_embeddings_in_other_forms_rank_like_float32_arrays(convert: Any) -> None:
    base = items()
    profile = profile_with_taste()
    want = ranked(penchant.rank_items(profile, base, **OPTIONS))
    other = [{**it, "embedding": convert(it["embedding"])} for it in base]
    got = ranked(penchant.rank_items(profile, other, **OPTIONS))
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-6)


def test_bad_float32_embeddings_are_refused() -> None:
    base = items(5)
    for bad in (np.array([1.0, np.nan, 0.0, 1.0], np.float32), np.zeros(0, np.float32)):
        with pytest.raises(penchant.ValidationError, match="item 2"):
            penchant.rank_items(PROFILE, [*base[:2], {**base[2], "embedding": bad}, *base[3:]])
    for shape_or_order in (np.ones((2, 2), np.float32), np.ones(4, ">f4")):
        with pytest.raises(penchant.ValidationError, match="float32 or float64"):
            penchant.rank_items(PROFILE, [{**base[0], "embedding": shape_or_order}])


@pytest.mark.parametrize(
    "ids",
    [
        np.arange(50),
        np.arange(50) * 3 - 70,  # dense enough for the array, negative ones included
        np.arange(50) * 1_000_003,  # too sparse: hashed
        np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, 1, 2]),
    ],
    ids=["range", "spaced", "sparse", "extremes"],
)
def test_catalog_finds_integer_ids_dense_or_sparse(ids: np.ndarray) -> None:
    rng = np.random.default_rng(len(ids))
    catalog = penchant.Catalog(penchant.ItemBatch(ids, features=[["genre:sci-fi"]] * len(ids)))
    order = rng.permutation(len(ids))
    base = rng.random(len(ids))
    result = catalog.rank(PROFILE, ids[order], base, weights={"affinity": 0.0})
    assert [r.id for r in result] == ids[order][np.argsort(-base, kind="stable")].tolist()
    for probe in (int(ids.min()) - 1, int(ids.max()) + 1, 7, -3):
        if probe not in ids.tolist() and np.iinfo(np.int64).min <= probe <= np.iinfo(np.int64).max:
            assert probe not in catalog
            with pytest.raises(penchant.ValidationError, match="unknown item id"):
                catalog.rank(PROFILE, np.array([probe]))
    assert all(int(i) in catalog for i in ids)


@settings(max_examples=200)
@given(
    st.lists(st.sampled_from([-2.0, -0.0, 0.0, 0.5, 1.0, 3.0, float("inf"), -float("inf")]), min_size=1, max_size=300),
    st.integers(1, 70),
)
def test_small_k_top_k_matches_a_stable_sort(scores: list[float], k: int) -> None:
    array = np.array(scores)
    got = _core.top_k(array, k).tolist()
    # The kernel's order: higher first by IEEE total order (so 0.0 before -0.0), then position.
    key = [(-s, bool(s == 0 and np.signbit(s)), i) for i, s in enumerate(scores)]
    want = [i for *_, i in sorted(key)][:k]
    assert got == want
