"""Co-visitation speed: one ranking request of 1,000 candidates with the co-visitation factors
(the hot path of the evaluated model), the co-visitation scores alone, and learning events;
each beside a NumPy (or plain Python) implementation of the same computation in the same run.

The workload is synthetic and shaped like MovieLens: 10,000 items with Zipf popularity and one
to three of 20 genres, 100,000 events by 600 users whose next item is often close to their last
one in a hidden order (so items have real neighbours), learned with the default options
(window 20, at most 200 neighbours per item). The user has 30 events in their history; the
request ranks with the profile's interests (affinity), co-visitation and the learned popularity,
the configuration EVALUATION.md measures.

    pytest benches/bench_covisit.py --benchmark-columns=min,median,mean,rounds --benchmark-group-by=group
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

import penchant

N_ITEMS = 10_000
N_USERS = 600
N_EVENTS = 100_000
N_GENRES = 20
CANDIDATES = 1_000
NOW = 1_600_000_100.0
WEIGHTS = {"covisitation": 1.0, "affinity": 0.1, "learned_popularity": 0.02, "relevance": 0.0, "taste": 0.0}
OPTIONS = {"recent": 20, "recency_scale": 4.0, "alpha": 0.3, "beta": 0.5}


@dataclass
class Workload:
    users: list[str]
    items: list[str]
    times: npt.NDArray[np.float64]
    genres: list[list[str]]
    model: penchant.CoVisitation
    catalog: penchant.Catalog
    profile: penchant.UserProfile
    candidates: npt.NDArray[np.int64]


def events(n: int, seed: int = 0) -> tuple[list[str], list[str], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / (np.arange(N_ITEMS) + 10.0)
    weights /= weights.sum()
    user_of = rng.integers(0, N_USERS, n)
    last = rng.choice(N_ITEMS, N_USERS, p=weights)
    jumps = rng.choice(N_ITEMS, n, p=weights)
    steps = rng.integers(-15, 16, n)
    near = rng.random(n) < 0.6
    items = np.empty(n, dtype=np.int64)
    for e in range(n):
        u = user_of[e]
        item = (last[u] + steps[e]) % N_ITEMS if near[e] else jumps[e]
        items[e] = item
        last[u] = item
    return [f"u{u}" for u in user_of], [str(i) for i in items], np.arange(n, dtype=np.float64)


@functools.cache
def workload() -> Workload:
    users, items, times = events(N_EVENTS)
    model = penchant.CoVisitation()
    model.observe_many(users, items, times)
    rng = np.random.default_rng(1)
    genres = [[f"genre:g{g}" for g in rng.choice(N_GENRES, rng.integers(1, 4), replace=False)] for _ in range(N_ITEMS)]
    catalog = penchant.Catalog(
        penchant.ItemBatch(
            np.arange(N_ITEMS, dtype=np.int64), features=[{g: 1.0 / len(gs) for g in gs} for gs in genres]
        )
    )
    profile = penchant.UserProfile("bench-user")
    processor = penchant.FeedbackProcessor()
    history = [int(i) for i in rng.choice(N_ITEMS, 30, replace=False)]
    processor.apply(
        profile,
        [
            processor.feedback(
                "bench-user",
                {"id": str(i), "features": genres[i]},
                "click",
                timestamp=datetime.fromtimestamp(1_600_000_000 + k, UTC),
            )
            for k, i in enumerate(history)
        ],
    )
    seen = set(history)
    candidates = np.array([i for i in rng.permutation(N_ITEMS) if i not in seen][:CANDIDATES], dtype=np.int64)
    return Workload(users, items, times, genres, model, catalog, profile, candidates)


class NumpyRanker:
    """The same request in NumPy: the co-visitation model as CSR arrays, scores accumulated with
    np.add.at, each factor min-max normalised over the candidates, weighted, top 10 (ties by
    candidate order, as penchant breaks them)."""

    def __init__(self, w: Workload) -> None:
        keys = [str(i) for i in range(N_ITEMS)]
        self.counts = w.model.counts(keys)
        indptr, indices, values = [0], [], []
        for key in keys:
            for name, weight in w.model.neighbours(key, 1_000_000):
                indices.append(int(name))
                values.append(weight)
            indptr.append(len(indices))
        self.indptr = np.asarray(indptr)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.values = np.asarray(values)
        self.genres = np.zeros((N_ITEMS, N_GENRES))
        for i, gs in enumerate(w.genres):
            for g in gs:
                self.genres[i, int(g.removeprefix("genre:g"))] = 1.0 / len(gs)

    def covisitation(self, history: list[int], candidates: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        acc = np.zeros(N_ITEMS)
        for p, h in enumerate(history[: OPTIONS["recent"]]):
            lo, hi = self.indptr[h], self.indptr[h + 1]
            if self.counts[h] <= 0:
                continue
            weight = math.exp(-p / OPTIONS["recency_scale"]) / self.counts[h] ** OPTIONS["beta"]
            np.add.at(acc, self.indices[lo:hi], weight * self.values[lo:hi])
        n = self.counts[candidates]
        out = np.zeros(len(candidates))
        np.divide(acc[candidates], n ** OPTIONS["alpha"], out=out, where=n > 0)
        return out

    def rank(self, profile: penchant.UserProfile, candidates: npt.NDArray[np.int64]) -> list[int]:
        history = [int(i.item_id) for i in reversed(profile.interaction_history)]
        interests = profile.interest_weights(NOW)  # the same profile work as penchant's path
        taste = np.zeros(N_GENRES)
        for name, w in interests.items():
            taste[int(name.removeprefix("genre:g"))] = w

        def minmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            lo, hi = x.min(), x.max()
            return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)

        score = (
            WEIGHTS["covisitation"] * minmax(self.covisitation(history, candidates))
            + WEIGHTS["affinity"] * minmax(self.genres[candidates] @ taste)
            + WEIGHTS["learned_popularity"] * minmax(np.log1p(self.counts[candidates]))
        )
        return [int(c) for c in candidates[np.argsort(-score, kind="stable")[:10]]]


@functools.cache
def reference() -> NumpyRanker:
    return NumpyRanker(workload())


def penchant_request(w: Workload) -> list[penchant.RankedItem]:
    """What a service does per request, once it holds the user's profile."""
    return w.catalog.rank(w.profile, w.candidates, scorers=w.model.scorers(w.profile), weights=WEIGHTS, k=10, now=NOW)


def test_rank_1000_candidates_with_covisitation(benchmark: Any) -> None:
    benchmark.group = "rank 1,000 candidates with co-visitation, top 10"
    w = workload()
    result = benchmark(penchant_request, w)
    assert [int(r.id) for r in result] == reference().rank(w.profile, w.candidates)


def test_rank_1000_candidates_numpy_reference(benchmark: Any) -> None:
    benchmark.group = "rank 1,000 candidates with co-visitation, top 10"
    w = workload()
    benchmark(reference().rank, w.profile, w.candidates)


def test_covisitation_scores(benchmark: Any) -> None:
    benchmark.group = "co-visitation scores of 1,000 candidates"
    w = workload()
    history = w.model.recent_items(w.profile)
    keys = [str(c) for c in w.candidates]
    result = benchmark(w.model.scores, history, keys)
    expected = reference().covisitation([int(h) for h in history], w.candidates)
    np.testing.assert_allclose(result, expected, rtol=1e-9)


def test_covisitation_scores_numpy_reference(benchmark: Any) -> None:
    benchmark.group = "co-visitation scores of 1,000 candidates"
    w = workload()
    history = [int(h) for h in w.model.recent_items(w.profile)]
    benchmark(reference().covisitation, history, w.candidates)


LEARN = 20_000


def test_learn_events(benchmark: Any) -> None:
    benchmark.group = f"learn {LEARN:,} events"
    users, items, times = events(LEARN, seed=2)

    def learn() -> penchant.CoVisitation:
        model = penchant.CoVisitation()
        model.observe_many(users, items, times)
        return model

    model = benchmark(learn)
    assert model.events == LEARN


def test_learn_events_python_reference(benchmark: Any) -> None:
    """Dicts in plain Python, the research prototype's way (no pruning bound is hit here)."""
    benchmark.group = f"learn {LEARN:,} events"
    users, items, _ = events(LEARN, seed=2)
    lags = [math.exp(-d / 5.0) for d in range(20)]

    def learn() -> list[dict[str, float]]:
        rows: dict[str, dict[str, float]] = {}
        recent: dict[str, list[str]] = {}
        for u, i in zip(users, items, strict=True):
            previous = recent.setdefault(u, [])
            row_i = rows.setdefault(i, {})
            for d, h in enumerate(previous):
                if h != i:
                    row_h = rows.setdefault(h, {})
                    row_h[i] = row_h.get(i, 0.0) + lags[d]
                    row_i[h] = row_i.get(h, 0.0) + lags[d]
            previous.insert(0, i)
            del previous[20:]
        return list(rows.values())

    benchmark(learn)


def test_bytes_round_trip(benchmark: Any) -> None:
    benchmark.group = "save and load the 100,000-event model"
    w = workload()
    copy = benchmark(lambda: penchant.CoVisitation.from_bytes(w.model.to_bytes()))
    assert copy.to_bytes() == w.model.to_bytes()
