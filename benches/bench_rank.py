"""Ranking speed: the Catalog path and the list-of-dicts path, each beside a vectorised NumPy
implementation of the same ranking in the same run (benches/workload.py). For each size N, a
catalog of N items is ranked in full: candidate ids (an int64 array) and base scores in, top 10
out, with 64-dim embeddings, 20 features per item, five factors and one filter. The profile has
200 interests and a taste vector.

    pytest benches/bench_rank.py --benchmark-columns=min,median,mean,rounds --benchmark-group-by=group
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

import penchant
from penchant import _core
from penchant.user_profile import Interest, channel_key

from .workload import BLOCKED, HALF_LIFE, NOW, WEIGHTS, NumpyRanker, Workload, make_workload

SIZES = [1_000, 10_000, 100_000]

OPTIONS: dict[str, Any] = {
    "k": 10,
    "weights": WEIGHTS,
    "filters": penchant.Filters(blocked_features=frozenset({BLOCKED})),
    "now": NOW,
    "recency_half_life": HALF_LIFE,
}


def user_profile(workload: Workload) -> penchant.UserProfile:
    """A profile whose interests, at NOW, weigh exactly the workload's interests."""
    profile = penchant.UserProfile("bench", landmark=NOW, taste_vector=workload.taste.tolist())
    for name, weight in workload.interests.items():
        profile.interests[name] = Interest(name, sums={channel_key(weight > 0, 30 * 86_400.0): abs(weight)})
    return profile


@functools.cache
def setup(n: int) -> tuple[Workload, penchant.Catalog, np.ndarray, penchant.UserProfile]:
    workload = make_workload(n, seed=n)
    base = np.random.default_rng(n).random(n)
    return workload, workload.catalog(), base, user_profile(workload)


@pytest.mark.parametrize("n", SIZES)
def test_catalog(benchmark: Any, n: int) -> None:
    """The hot path of a service: the profile compiled once (per profile version), then ranked."""
    benchmark.group = f"rank {n} candidates"
    workload, catalog, base, profile = setup(n)
    compiled = catalog.compile(profile, now=NOW)
    result = benchmark(catalog.rank, compiled, workload.ids, base, **OPTIONS)
    assert [r.id for r in result] == NumpyRanker(workload).rank(workload.ids, base).tolist()


@pytest.mark.parametrize("n", SIZES)
def test_catalog_with_profile(benchmark: Any, n: int) -> None:
    """The same with the UserProfile's decayed interests computed on every call."""
    benchmark.group = f"rank {n} candidates"
    workload, catalog, base, profile = setup(n)
    result = benchmark(catalog.rank, profile, workload.ids, base, **OPTIONS)
    assert [r.id for r in result] == NumpyRanker(workload).rank(workload.ids, base).tolist()


@pytest.mark.parametrize("n", SIZES)
def test_numpy_reference(benchmark: Any, n: int) -> None:
    benchmark.group = f"rank {n} candidates"
    workload, _, base, _ = setup(n)
    benchmark(NumpyRanker(workload).rank, workload.ids, base)


@pytest.mark.parametrize("n", [1_000, 10_000])
def test_dicts(benchmark: Any, n: int) -> None:
    benchmark.group = f"rank {n} dicts"
    workload, _, base, profile = setup(n)
    items = workload.dicts(workload.ids, base)
    result = benchmark(penchant.rank_items, profile, items, **OPTIONS)
    assert [r.id for r in result] == NumpyRanker(workload).rank_dicts(items)


@pytest.mark.parametrize("n", [1_000, 10_000])
def test_dicts_numpy_reference(benchmark: Any, n: int) -> None:
    benchmark.group = f"rank {n} dicts"
    workload, _, base, profile = setup(n)
    items = workload.dicts(workload.ids, base)
    ranker = NumpyRanker(workload)

    def rank() -> list[Any]:
        profile.interest_weights(NOW)  # the same profile work as the penchant path
        return ranker.rank_dicts(items)

    benchmark(rank)


@pytest.mark.parametrize("min_rows", [1, 0, 10**9], ids=["always-parallel", "default-threshold", "never-parallel"])
@pytest.mark.parametrize("n", [10_000, 100_000])
def test_parallel_threshold(benchmark: Any, n: int, min_rows: int) -> None:
    """Where rayon starts to pay: the same ranking with the pool always, by default, never."""
    benchmark.group = f"parallel threshold, {n} candidates"
    workload, catalog, base, profile = setup(n)
    compiled = catalog.compile(profile, now=NOW)
    _core.set_parallel_min_rows(min_rows)
    try:
        benchmark(catalog.rank, compiled, workload.ids, base, **OPTIONS)
    finally:
        _core.set_parallel_min_rows(0)
