"""Bad input gets a clear penchant.ValidationError, never a Rust panic (a PanicException is a
BaseException, which `except Exception` would miss)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import penchant
from penchant import _core

GOOD = {"id": "a", "score": 1.0, "features": ["f"]}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"score": 1.0}], "has no id"),
        ([{"id": 1.5}], "ids must be str or int"),
        ([{"id": True}], "ids must be str or int"),
        ([{"id": ""}], "ids must have 1 to"),
        ([{"id": "x" * 5000}], "ids must have 1 to"),
        ([{"id": 2**70}], "does not fit in 64 bits"),
        ([GOOD, {"id": "a"}], "duplicate item id"),
        ([{"id": "a", "score": math.nan}], "score is NaN"),
        ([{"id": "a", "score": math.inf}], "score is NaN or infinite"),
        ([{"id": "a", "score": "high"}], "score must be a number"),
        ([{"id": "a", "features": "genre:x"}], "got a str"),
        ([{"id": "a", "features": [1, 2]}], "feature names must be str"),
        ([{"id": "a", "features": {"f": math.nan}}], "feature weight is NaN"),
        ([{"id": "a", "features": 7}], "features must be a list"),
        ([{"id": "a", "embedding": [1.0, math.nan]}], "NaN or infinite"),
        ([{"id": "a", "embedding": []}], "embeddings must have 1 to"),
        ([{"id": "a", "embedding": [1.0]}, {"id": "b", "embedding": [1.0, 2.0]}], "earlier items have 1"),
        ([{"id": "a", "embedding": np.zeros((2, 2))}], "1-D float32 or float64"),
        ([{"id": "a", "embedding": "abc"}], "sequence of numbers"),
        ([{"id": "a", "timestamp": "yesterday"}], "timestamp must be a number"),
        ([{"id": "a", "popularity": math.inf}], "popularity is NaN"),
        ([42], "has no id"),
    ],
)
def test_bad_items_are_validation_errors(items: list[Any], message: str) -> None:
    with pytest.raises(penchant.ValidationError, match=message):
        penchant.rank_items({"f": 1.0}, items)


def test_bad_attributes_for_a_range_filter() -> None:
    items = [{"id": "a", "attributes": {"price": "cheap"}}]
    with pytest.raises(penchant.ValidationError, match='attribute "price"'):
        penchant.rank_items({}, items, filters={"attribute_ranges": {"price": (0, 10)}})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be at least 1"),
        ({"k": -3}, "k must be at least 1"),
        ({"k": 2.5}, "k must be a positive int"),
        ({"weights": {"bogus": 1.0}}, "unknown factor"),
        ({"weights": {"affinity": math.nan}}, "must be finite"),
        ({"normalization": "softmax"}, "is not one of"),
        ({"recency_half_life": 0}, "must be positive"),
        ({"now": math.nan}, "must be finite"),
        ({"now": "today"}, "datetime or epoch seconds"),
        ({"filters": {"nonsense": 1}}, "unknown rule"),
        ({"filters": {"blocked_features": "genre:x"}}, "not a str"),
        ({"filters": {"attribute_ranges": {"price": (5, 1)}}}, "empty range"),
        ({"filters": {"attribute_ranges": {"price": 5}}}, "must be a pair"),
        ({"filters": 3}, "filters must be"),
        ({"scorers": {"relevance": lambda c: c.base_scores}}, "taken by a built-in"),
        ({"scorers": {"s": 3}}, "not callable"),
        ({"scorers": {"s": lambda c: np.full(len(c), np.nan)}}, "NaN or infinite"),
    ],
)
def test_bad_options_are_validation_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(penchant.ValidationError, match=message):
        penchant.rank_items({"f": 1.0}, [GOOD], **kwargs)


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"f": math.nan}, "must be a finite number"),
        ({"f": "much"}, "interest weight of 'f' must be a"),
        ({3: 1.0}, "must be str"),
        ([("f", 1.0)], "must be a UserProfile or a mapping"),
    ],
)
def test_bad_profiles_are_validation_errors(profile: Any, message: str) -> None:
    with pytest.raises(penchant.ValidationError, match=message):
        penchant.rank_items(profile, [GOOD])


def test_taste_vector_of_the_wrong_dimension() -> None:
    profile = penchant.UserProfile("u", taste_vector=[1.0, 2.0, 3.0])
    with pytest.raises(penchant.ValidationError, match="3 dimensions but the items' embeddings have 2"):
        penchant.rank_items(profile, [{"id": "a", "embedding": [1.0, 0.0]}])


def test_item_batch_shapes_and_values() -> None:
    with pytest.raises(penchant.ValidationError, match=r"expected shape \(2,\)"):
        penchant.ItemBatch(["a", "b"], scores=[1.0])
    with pytest.raises(penchant.ValidationError, match="NaN"):
        penchant.ItemBatch(["a"], scores=[math.nan])
    with pytest.raises(penchant.ValidationError, match=r"expected shape \(2, d\)"):
        penchant.ItemBatch(["a", "b"], embeddings=np.zeros((3, 4)))
    with pytest.raises(penchant.ValidationError, match="embeddings: value at position"):
        penchant.ItemBatch(["a"], embeddings=[[np.inf]])
    with pytest.raises(penchant.ValidationError, match="duplicate item id"):
        penchant.ItemBatch(["a", "a"])
    with pytest.raises(penchant.ValidationError, match="features: expected 2 entries"):
        penchant.ItemBatch(["a", "b"], features=[["x"]])


def test_non_contiguous_and_other_dtypes_are_copied() -> None:
    embeddings = np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4))[:, ::2]
    scores = np.arange(6, dtype=np.int32)[::2]
    batch = penchant.ItemBatch(["a", "b", "c"], scores=scores, embeddings=embeddings)
    assert [r.id for r in penchant.rank_items({}, batch)] == ["c", "b", "a"]
    strided = np.arange(8, dtype=np.float32)[::2]
    items = [{"id": "a", "embedding": strided}, {"id": "b", "embedding": strided[::-1].astype(np.float64)}]
    profile = penchant.UserProfile("u", taste_vector=[0.0, 0.0, 0.0, 1.0])
    ranked = penchant.rank_items(profile, items, explain=True)
    assert [r.id for r in ranked] == ["a", "b"]


junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
item_like = st.dictionaries(
    st.sampled_from(["id", "score", "features", "embedding", "timestamp", "popularity", "attributes"]),
    junk,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(item_like | junk, max_size=6), junk)
def test_random_junk_never_panics(items: list[Any], filters: Any) -> None:
    for call in (
        lambda: penchant.rank_items({"f": 1.0}, items),
        lambda: penchant.rank_items({"f": 1.0}, items, filters={"attribute_ranges": {"price": (0, 1)}}),
        lambda: penchant.Catalog(items),
        lambda: penchant.rank_items({"f": 1.0}, items, filters=filters),
    ):
        # A clear error is fine; a PanicException (a BaseException) escapes and fails the test.
        with contextlib.suppress(penchant.ValidationError):
            call()


@pytest.mark.parametrize("embedding", [False, 3, 2.5, object()])
def test_an_embedding_that_is_not_a_sequence_is_a_validation_error(embedding: Any) -> None:
    # Found by test_random_junk_never_panics: {"embedding": False} raised a bare TypeError.
    with pytest.raises(penchant.ValidationError, match="embedding must be a sequence of numbers"):
        penchant.rank_items({"f": 1.0}, [{"id": 0, "embedding": embedding}])


def test_kernels_refuse_bad_arguments_without_panicking() -> None:
    table, _ = _core.Table.from_items([GOOD], [])
    with pytest.raises(penchant.ValidationError):
        table.ids([5])
    with pytest.raises(penchant.ValidationError):
        table.column("popularity", [9])
    with pytest.raises(penchant.ValidationError):
        table.rank(
            np.array([7], dtype=np.uint32),
            None,
            np.zeros(0, np.uint32),
            np.zeros(0),
            None,
            [1.0] * 5,
            ["minmax"] * 5,
            0.0,
            1.0,
            [],
            ([], [], [], [], []),
            1,
        )
    with pytest.raises(penchant.ValidationError):
        _core.top_k(np.array([np.nan]), 1)
    with pytest.raises(penchant.ValidationError):
        _core.aggregate_interests(
            np.zeros(1), np.ones(1), np.array([0, 5]), np.zeros(1, np.uint32), np.ones(1), 1, 0.0, 1.0
        )
    with pytest.raises(penchant.ValidationError):
        _core.aggregate_interests(
            np.zeros(1), np.ones(1), np.array([0, -1]), np.zeros(0, np.uint32), np.ones(0), 1, 0.0, 1.0
        )
    with pytest.raises(penchant.ValidationError):
        _core.Table.from_columns(
            ["a"],
            np.array([0, 3], dtype=np.int64),
            np.zeros(1, np.uint32),
            np.ones(1, np.float32),
            ["x"],
            None,
            None,
            None,
            [],
            [],
        )
    with pytest.raises(penchant.ValidationError):
        _core.Table.from_columns(
            ["a"],
            np.array([0, 1], dtype=np.int64),
            np.array([4], np.uint32),
            np.ones(1, np.float32),
            ["x"],
            None,
            None,
            None,
            [],
            [],
        )
    with pytest.raises(penchant.ValidationError):
        _core.set_num_threads(0)
