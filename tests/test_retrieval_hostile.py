"""Bad input to the engine, the retriever and their kernels: a clear penchant.ValidationError,
nothing changed, never a Rust panic (a PanicException is a BaseException)."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import penchant

NOW = float(int(time.time()))
ITEMS: list[dict[str, Any]] = [
    {"id": "a", "score": 0.9, "features": ["genre:drama"], "attributes": {"price": 3.0}},
    {"id": "b", "score": 0.8, "features": ["genre:sci-fi"]},
]
CATALOG = penchant.Catalog(ITEMS)


@pytest.fixture(scope="module")
def engine() -> Any:
    with penchant.Engine(database_url="sqlite:///:memory:") as e:
        e.record("u", ITEMS[0], "click")
        yield e


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("", ITEMS), {}, "user_id must not be empty"),
        ((None, ITEMS), {}, "user_id must be a str"),
        (("u" * 300, ITEMS), {}, "the limit is 256"),
        (("u\x00", ITEMS), {}, "control characters"),
        (("u", None), {}, "items must be a list of items"),
        (("u", "ab"), {}, "items must be a list of items"),
        (("u", ITEMS[0]), {}, "items must be a list of items"),
        (("u", 42), {}, "items must be a list of items"),
        (("u", ITEMS), {"k": 0}, "k must be at least 1"),
        (("u", ITEMS), {"k": True}, "k must be a positive int"),
        (("u", ITEMS), {"k": "3"}, "k must be a positive int"),
        (("u", ITEMS), {"explain": "yes"}, "explain must be a bool"),
        (("u", ITEMS), {"strength": 1.5}, "strength must lie in"),
        (("u", ITEMS), {"strength": math.nan}, "strength must be finite"),
        (("u", ITEMS), {"query": 7}, "query must be a str"),
        (("u", ITEMS), {"query": "q" * 5000}, "the limit is 1024"),
        (("u", ITEMS), {"filters": {"bogus": 1}}, "unknown rule"),
        (("u", ITEMS), {"filters": 5}, "filters must be"),
        (("u", ITEMS), {"now": math.inf}, "must be finite"),
        (("u", ITEMS), {"candidate_ids": ["a"]}, "candidate_ids and base_scores select candidates of a Catalog"),
        (("u", ITEMS), {"base_scores": [1.0, 2.0]}, "candidate_ids and base_scores"),
        (("u", CATALOG), {"candidate_ids": ["a", "zz"]}, "unknown item id 'zz'"),
        (("u", CATALOG), {"candidate_ids": ["a", "a"]}, "duplicate item id"),
        (("u", CATALOG), {"candidate_ids": "ab"}, "not one str"),
        (("u", CATALOG), {"candidate_ids": False}, "a sequence of ids, got bool"),
        (
            ("u", CATALOG),
            {"candidate_ids": np.array(0, dtype=np.uint64)},
            r"one-dimensional, got an array of shape \(\)",
        ),
        (("u", CATALOG), {"candidate_ids": np.array([["a"]])}, r"one-dimensional, got an array of shape \(1, 1\)"),
        (("u", CATALOG), {"candidate_ids": [1.5]}, "ids must be str or int"),
        (("u", CATALOG), {"candidate_ids": np.array([2**63], dtype=np.uint64)}, "do not fit in 64-bit"),
        (("u", CATALOG), {"candidate_ids": ["a"], "base_scores": [1.0, 2.0]}, r"expected shape \(1,\)"),
        (("u", CATALOG), {"base_scores": [math.nan, 1.0]}, "NaN or infinite"),
        (("u", CATALOG), {"base_scores": "high"}, "cannot be read as numbers"),
        (("u", [{"id": "a"}, {"id": "a"}]), {}, "duplicate item id"),
        (("u", [{"score": 1.0}]), {}, "has no id"),
    ],
)
def test_bad_rank_arguments_are_validation_errors(
    engine: penchant.Engine, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(penchant.ValidationError, match=message):
        engine.rank(*args, **kwargs)


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ({"user_id": "u", "items": ITEMS}, "takes a list of requests"),
        ([{"user_id": "u"}], "request 0: .*items"),
        ([{"user_id": "u", "items": ITEMS, "colour": "red"}], "unknown field"),
        ([{"user_id": "u", "items": ITEMS}, 3], "request 1: expected a RetrievalRequest"),
        ([{"user_id": "u", "items": ITEMS, "k": -1}], "request 0: k must be at least 1"),
    ],
)
def test_bad_batches_are_validation_errors(engine: penchant.Engine, requests: Any, message: str) -> None:
    with pytest.raises(penchant.ValidationError, match=message):
        engine.rank_many(requests)


def test_bad_expansion_and_exclusion_arguments(engine: penchant.Engine) -> None:
    with pytest.raises(penchant.ValidationError, match="query must be a str"):
        engine.expand_query("u", None)  # type: ignore[arg-type]
    with pytest.raises(penchant.ValidationError, match="user_id"):
        engine.expand_query("", "q")
    with pytest.raises(penchant.ValidationError, match="unknown item id"):
        engine.exclusions("u", CATALOG, candidate_ids=["nope"])


def test_a_taste_vector_that_does_not_fit_the_catalog(engine: penchant.Engine) -> None:
    profile = penchant.UserProfile("t", taste_vector=[1.0, 2.0, 3.0])
    engine.profiles.update(profile)
    catalog = penchant.Catalog([{"id": "a", "embedding": [1.0, 0.0], "features": ["f"]}])
    engine.rank("t", catalog)  # no evidence yet: nothing personal is computed
    engine.record("t", {"id": "a", "features": ["f"]}, "click")
    catalog = penchant.Catalog([{"id": "a", "embedding": [1.0, 0.0], "features": ["f"]}])
    with pytest.raises(penchant.ValidationError, match="3 dimensions but the items' embeddings have 2"):
        engine.rank("t", catalog)


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    user=junk | st.text(max_size=8),
    items=st.one_of(st.just(ITEMS), st.just(CATALOG), junk),
    options=st.dictionaries(
        st.sampled_from(["query", "k", "explain", "filters", "candidate_ids", "base_scores", "strength", "now"]),
        junk,
        max_size=3,
    ),
)
def test_random_junk_never_panics(engine: penchant.Engine, user: Any, items: Any, options: dict[str, Any]) -> None:
    for call in (
        lambda: engine.rank(user, items, **options),
        lambda: engine.exclusions(user, items, **{k: v for k, v in options.items() if k in ("filters", "now")}),
        lambda: engine.expand_query(user, options.get("query", "q")),
    ):
        with contextlib.suppress(penchant.ValidationError):
            call()


def test_retrieval_kernels_refuse_bad_arguments_without_panicking() -> None:
    table = CATALOG._table
    for ids in ([1.5], [None], [b"a"], ["x" * 5000], 7):
        with pytest.raises((penchant.ValidationError, TypeError)):
            table.find_rows(ids)
    assert table.find_rows(["b", "zz", 3]).tolist() == [1, -1, -1]
    rows, fids = np.array([0, 1], np.uint32), np.array([0], np.uint32)
    with pytest.raises(penchant.ValidationError, match="out of range"):
        table.affinity(np.array([5], np.uint32), fids, np.ones(1))
    with pytest.raises(penchant.ValidationError, match="expected length 1"):
        table.affinity(rows, fids, np.ones(2))
    with pytest.raises(penchant.ValidationError, match="NaN or infinite"):
        table.affinity(rows, fids, np.array([math.nan]))
    with pytest.raises(penchant.ValidationError, match="overflowed"):
        table.affinity(rows, np.array([0, 0], np.uint32), np.array([1e308, 1e308]))
    assert table.affinity(rows, np.array([99], np.uint32), np.ones(1)).tolist() == [0.0, 0.0]  # unknown feature
    seen, times = np.array([0, 1], np.uint32), np.array([NOW, NOW])

    def rank(novelty: Any) -> list[int]:
        positions, _, _, _ = table.rank(
            rows,
            np.array([1.0, 0.5]),
            *([np.zeros(0, np.uint32), np.zeros(0)]),
            None,
            [1.0, 0.0, 0.0, 0.0, 0.0],
            ["minmax"] * 5,
            NOW,
            1.0,
            [],
            ([], [], [], [], []),
            2,
            novelty=novelty,
        )
        return positions.tolist()

    for bad in (
        (np.array([1, 0], np.uint32), times, 1.0, 1.0),  # not ascending
        (np.array([0, 0], np.uint32), times, 1.0, 1.0),  # repeated
        (seen, np.array([NOW]), 1.0, 1.0),  # lengths differ
        (seen, np.array([NOW, math.nan]), 1.0, 1.0),
        (seen, times, 0.0, 1.0),
        (seen, times, -math.inf, 1.0),
        (seen, times, 1.0, math.nan),
        (seen, times, 1.0, math.inf),
    ):
        with pytest.raises(penchant.ValidationError):
            rank(bad)
    # Row 0, seen just now, loses 2 of its relevance 1; a row past the table is ignored.
    assert rank((np.array([0, 7], np.uint32), times, 1.0, 2.0)) == [1, 0]
    assert rank((seen, times, 1.0, 0.0)) == [0, 1]
