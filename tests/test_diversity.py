"""Diversity steps and filter explanations."""

from __future__ import annotations

import numpy as np
import pytest

import penchant
from penchant import _core

# Five sci-fi items score highest; a FeatureCap or MMR should let other genres in.
ITEMS = [{"id": f"s{i}", "score": 1.0 - i * 0.01, "features": ["genre:sci-fi", f"tag:t{i}"]} for i in range(5)] + [
    {"id": "d0", "score": 0.8, "features": ["genre:drama"]},
    {"id": "c0", "score": 0.7, "features": ["genre:comedy"]},
]


def ids(ranked: list[penchant.RankedItem]) -> list[str | int]:
    return [r.id for r in ranked]


def test_feature_cap_limits_each_capped_feature() -> None:
    plain = ids(penchant.rank_items({}, ITEMS, k=4))
    assert plain == ["s0", "s1", "s2", "s3"]
    capped = ids(penchant.rank_items({}, ITEMS, k=4, diversity=penchant.FeatureCap(cap=2, prefixes=("genre:",))))
    assert capped == ["s0", "s1", "d0", "c0"]
    # More requested than fit under the cap: the best of the rest fill the list.
    assert len(penchant.rank_items({}, ITEMS, k=6, diversity=penchant.FeatureCap(cap=1, prefixes=("genre:",)))) == 6


def test_feature_cap_on_a_catalog_and_a_batch_agrees_with_dicts() -> None:
    cap = penchant.FeatureCap(cap=2, prefixes=("genre:",))
    expected = ids(penchant.rank_items({}, ITEMS, k=4, diversity=cap))
    catalog = penchant.Catalog(ITEMS)
    scores = [d["score"] for d in ITEMS]
    assert ids(catalog.rank({}, [d["id"] for d in ITEMS], scores, k=4, diversity=cap)) == expected
    batch = penchant.ItemBatch([d["id"] for d in ITEMS], scores=scores, features=[d["features"] for d in ITEMS])
    assert ids(penchant.rank_items({}, batch, k=4, diversity=cap)) == expected


def test_mmr_trades_relevance_for_difference() -> None:
    items = [
        {"id": "a", "score": 1.0, "embedding": [1.0, 0.0]},
        {"id": "a2", "score": 0.99, "embedding": [1.0, 0.05]},
        {"id": "b", "score": 0.9, "embedding": [0.0, 1.0]},
    ]
    assert ids(penchant.rank_items({}, items, k=2)) == ["a", "a2"]
    assert ids(penchant.rank_items({}, items, k=2, diversity=penchant.MMR(lambda_=0.5))) == ["a", "b"]
    assert ids(penchant.rank_items({}, items, k=2, diversity=penchant.MMR(lambda_=1.0))) == ["a", "a2"]


def test_bad_diversity_options() -> None:
    with pytest.raises(penchant.ValidationError, match=r"lie in \[0, 1\]"):
        penchant.MMR(lambda_=1.5)
    with pytest.raises(penchant.ValidationError, match="positive int"):
        penchant.FeatureCap(cap=0)
    with pytest.raises(penchant.ValidationError, match="not a str"):
        penchant.FeatureCap(prefixes="genre:")  # type: ignore[arg-type]
    with pytest.raises(penchant.ValidationError, match="pool"):
        penchant.MMR(pool=0)
    with pytest.raises(penchant.ValidationError, match="an MMR or a FeatureCap"):
        penchant.rank_items({}, ITEMS, diversity="mmr")  # type: ignore[arg-type]


def test_exclusions_name_the_rule_each_item_breaks() -> None:
    items = [
        {"id": "ok", "features": ["genre:sci-fi"], "attributes": {"price": 5}},
        {"id": "gone", "features": ["genre:sci-fi"], "attributes": {"price": 5}},
        {"id": "scary", "features": ["genre:horror", "genre:sci-fi"], "attributes": {"price": 5}},
        {"id": "dear", "features": ["genre:sci-fi"], "attributes": {"price": 50}},
        {"id": "other", "features": ["genre:drama"], "attributes": {"price": 5}},
    ]
    table, _ = _core.Table.from_items(items, ["price"])
    fid = dict(zip(table.feature_names, range(len(table.feature_names)), strict=True))
    spec = ([fid["genre:horror"]], [fid["genre:sci-fi"]], [], [1], [("price", 0.0, 20.0)])
    assert table.exclusions(list(range(5)), spec) == [
        (1, "excluded", ""),
        (2, "blocked", "genre:horror"),
        (3, "range", "price"),
        (4, "required", "genre:sci-fi"),
    ]
    assert table.row_features(2) == [("genre:horror", 1.0), ("genre:sci-fi", 1.0)]
    with pytest.raises(penchant.ValidationError):
        table.row_features(9)


def test_diversity_with_many_candidates_keeps_k_distinct_items() -> None:
    rng = np.random.default_rng(0)
    items = [
        {"id": i, "score": float(rng.random()), "embedding": rng.normal(size=8).tolist(), "features": [f"g:{i % 5}"]}
        for i in range(300)
    ]
    for diversity in (penchant.MMR(lambda_=0.3, pool=50), penchant.FeatureCap(cap=1, prefixes=("g:",), pool=50)):
        ranked = penchant.rank_items({}, items, k=20, diversity=diversity)
        assert len({r.id for r in ranked}) == 20
