"""rank_items and Catalog.rank: what a caller relies on."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

import penchant
from penchant.user_profile import Interest, channel_key

ITEMS: list[dict[str, Any]] = [
    {"id": "a", "score": 0.9, "features": ["genre:drama"], "attributes": {"price": 30.0}},
    {"id": "b", "score": 0.8, "features": ["genre:sci-fi", "tag:space"], "attributes": {"price": 10.0}},
    {"id": "c", "score": 0.7, "features": {"genre:sci-fi": 0.5}, "attributes": {"price": 5.0}},
    {"id": 4, "score": 0.6, "features": ["genre:horror"]},
]


def ids(ranked: list[penchant.RankedItem]) -> list[str | int]:
    return [r.id for r in ranked]


def test_empty_profile_keeps_the_callers_order() -> None:
    assert ids(penchant.rank_items({}, ITEMS)) == ["a", "b", "c", 4]


def test_interests_move_matching_items_up() -> None:
    assert ids(penchant.rank_items({"genre:sci-fi": 1.0}, ITEMS, k=2)) == ["b", "a"]
    ranked = penchant.rank_items({"genre:sci-fi": 1.0}, ITEMS, k=2, weights={"affinity": 2.0})
    assert ids(ranked) == ["b", "c"]
    assert ranked[0].item is ITEMS[1]


def test_negative_interest_moves_items_down() -> None:
    assert ids(penchant.rank_items({"genre:drama": -1.0}, ITEMS, weights={"affinity": 2.0}))[-1] == "a"


def test_explain_contributions_sum_to_score() -> None:
    for r in penchant.rank_items({"genre:sci-fi": 1.0, "tag:space": 0.5}, ITEMS, explain=True):
        assert r.contributions is not None
        assert set(r.contributions) == set(penchant.FACTORS)
        assert sum(r.contributions.values()) == pytest.approx(r.score)
    assert penchant.rank_items({}, ITEMS)[0].contributions is None


def test_weights_change_the_balance() -> None:
    relevance_only = penchant.rank_items({"genre:horror": 1.0}, ITEMS, weights={"affinity": 0.0})
    assert ids(relevance_only)[0] == "a"
    affinity_heavy = penchant.rank_items({"genre:horror": 1.0}, ITEMS, weights={"affinity": 5.0})
    assert ids(affinity_heavy)[0] == 4


def test_filters_block_require_exclude_and_range() -> None:
    profile: dict[str, float] = {}
    assert "b" not in ids(penchant.rank_items(profile, ITEMS, filters={"blocked_features": {"tag:space"}}))
    assert ids(penchant.rank_items(profile, ITEMS, filters={"required_features": {"genre:sci-fi"}})) == ["b", "c"]
    assert ids(penchant.rank_items(profile, ITEMS, filters={"any_features": {"genre:horror", "genre:drama"}})) == [
        "a",
        4,
    ]
    assert ids(penchant.rank_items(profile, ITEMS, filters={"excluded_ids": {"a", 4, "missing"}})) == ["b", "c"]
    in_range = penchant.rank_items(profile, ITEMS, filters=penchant.Filters(attribute_ranges={"price": (None, 20)}))
    assert ids(in_range) == ["b", "c"]  # item 4 has no price, so a price rule drops it
    assert penchant.rank_items(profile, ITEMS, filters={"required_features": {"genre:unknown"}}) == []


def test_k_larger_than_candidates_returns_all_and_empty_returns_empty() -> None:
    assert len(penchant.rank_items({}, ITEMS, k=100)) == len(ITEMS)
    assert penchant.rank_items({}, []) == []


def test_ties_keep_input_order() -> None:
    items = [{"id": i, "score": 1.0} for i in range(50)]
    assert ids(penchant.rank_items({}, items, k=10)) == list(range(10))


@dataclass
class Article:
    id: str
    score: float
    features: list[str] | dict[str, float]
    attributes: dict[str, float] = field(default_factory=dict)


def test_objects_dicts_batches_and_catalogs_agree() -> None:
    profile = {"genre:sci-fi": 1.0, "genre:drama": -0.5}
    from_dicts = penchant.rank_items(profile, ITEMS, explain=True)
    objects = [Article(str(d["id"]), d["score"], d["features"]) for d in ITEMS]
    from_objects = penchant.rank_items(profile, objects, explain=True)
    batch = penchant.ItemBatch(
        [d["id"] for d in ITEMS], scores=[d["score"] for d in ITEMS], features=[d["features"] for d in ITEMS]
    )
    from_batch = penchant.rank_items(profile, batch, explain=True)
    catalog = penchant.Catalog(ITEMS)
    from_catalog = catalog.rank(profile, [d["id"] for d in ITEMS], [d["score"] for d in ITEMS], explain=True)
    for other in (from_objects, from_batch, from_catalog):
        assert [str(i) for i in ids(other)] == [str(i) for i in ids(from_dicts)]
        assert [r.score for r in other] == pytest.approx([r.score for r in from_dicts])


def test_catalog_ranks_a_subset_and_refuses_unknown_or_repeated_ids() -> None:
    catalog = penchant.Catalog(ITEMS)
    assert len(catalog) == 4
    assert "b" in catalog
    assert "zzz" not in catalog
    assert ids(catalog.rank({"genre:sci-fi": 1.0}, ["a", "c"], k=1)) == ["c"]
    with pytest.raises(penchant.ValidationError, match="unknown item id"):
        catalog.rank({}, ["a", "zzz"])
    with pytest.raises(penchant.ValidationError, match="duplicate item id"):
        catalog.rank({}, ["a", "a"])
    with pytest.raises(penchant.ValidationError, match="base_scores"):
        catalog.rank({}, ["a", "b"], [1.0])


def test_taste_factor_uses_the_profile_vector() -> None:
    items = [
        {"id": "x", "embedding": np.array([1.0, 0.0], dtype=np.float32)},
        {"id": "y", "embedding": [0.0, 1.0]},
        {"id": "z"},
    ]
    profile = penchant.UserProfile("u1", taste_vector=[0.0, 2.0])
    ranked = penchant.rank_items(profile, items, explain=True)
    assert ids(ranked) == ["y", "x", "z"]
    assert ranked[2].contributions is not None
    assert ranked[2].contributions["taste"] == 0.0


def test_recency_and_popularity() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    items = [
        {"id": "old", "timestamp": datetime(2025, 1, 1, tzinfo=UTC), "popularity": 1000},
        {"id": "new", "timestamp": datetime(2026, 1, 9), "popularity": 1},
    ]
    assert ids(penchant.rank_items({}, items, weights={"recency": 1.0}, now=now))[0] == "new"
    assert ids(penchant.rank_items({}, items, weights={"popularity": 1.0}, now=now))[0] == "old"


def test_user_profile_interests_decay_with_time() -> None:
    profile = penchant.UserProfile("u1", landmark=0.0)
    profile.interests["genre:sci-fi"] = Interest("genre:sci-fi", sums={channel_key(True, 100.0): 1.0})
    profile.interests["genre:drama"] = Interest("genre:drama", sums={channel_key(True, 1000.0): 0.9})
    interests_only = {"relevance": 0.0}
    assert ids(penchant.rank_items(profile, ITEMS, now=0.0, weights=interests_only))[0] == "b"
    assert ids(penchant.rank_items(profile, ITEMS, now=500.0, weights=interests_only))[0] == "a"


def test_custom_scorer_adds_a_factor() -> None:
    def cheap(candidates: penchant.Candidates) -> np.ndarray:
        prices = candidates.attribute("price")
        assert prices is not None
        return -np.nan_to_num(prices, nan=100.0)

    ranked = penchant.Catalog(ITEMS).rank(
        {}, ["a", "b", "c", 4], scorers={"cheap": cheap}, weights={"cheap": 2.0}, explain=True
    )
    assert ids(ranked)[0] == "c"
    assert ranked[0].contributions is not None
    assert "cheap" in ranked[0].contributions

    def wrong_shape(candidates: penchant.Candidates) -> list[float]:
        return [1.0]

    with pytest.raises(penchant.ValidationError, match="scorer 'bad' returned shape"):
        penchant.rank_items({}, ITEMS, scorers={"bad": wrong_shape})


def test_four_threads_rank_at_once() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    catalog = penchant.Catalog(
        penchant.ItemBatch(
            list(range(n)),
            features=[[f"f{j}" for j in rng.choice(200, 5, replace=False)] for _ in range(n)],
            embeddings=rng.normal(size=(n, 16)),
        )
    )
    items = [{"id": i, "features": [f"f{j}" for j in rng.choice(200, 5, replace=False)]} for i in range(2000)]
    profiles = [{f"f{j}": float(rng.normal()) for j in range(50)} for _ in range(4)]
    expected = [(ids(catalog.rank(p, k=20)), ids(penchant.rank_items(p, items, k=20))) for p in profiles]
    results: list[list[Any]] = [[] for _ in profiles]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(10):
                results[i].append(
                    (ids(catalog.rank(profiles[i], k=20)), ids(penchant.rank_items(profiles[i], items, k=20)))
                )
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        assert all(r == expected[i] for r in results[i])


def test_compiled_profile_ranks_like_the_profile_and_belongs_to_its_catalog() -> None:
    catalog = penchant.Catalog(ITEMS)
    profile = penchant.UserProfile("u1", landmark=0.0)
    profile.interests["genre:sci-fi"] = Interest("genre:sci-fi", sums={channel_key(True, 100.0): 1.0})
    compiled = catalog.compile(profile, now=0.0)
    assert ids(catalog.rank(compiled, now=0.0)) == ids(catalog.rank(profile, now=0.0))
    with pytest.raises(penchant.ValidationError, match="another catalog"):
        penchant.Catalog(ITEMS).rank(compiled)
    with pytest.raises(penchant.ValidationError, match="3 dimensions but the catalog's embeddings have 2"):
        penchant.Catalog([{"id": "x", "embedding": [1.0, 0.0]}]).compile(
            penchant.UserProfile("u", taste_vector=[1.0, 2.0, 3.0])
        )
