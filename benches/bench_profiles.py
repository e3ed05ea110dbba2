"""Profiles: preference extraction over 10,000 interactions (budget 5 ms), the accumulation
kernel, and the interest weights that ranking reads; each beside a plain NumPy/Python
reference of the same computation.

Run: ``pytest benches/bench_profiles.py --benchmark-columns=min,median,mean,rounds``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from penchant import FeedbackProcessor, InterestModel, PreferenceExtractor, UserProfile, _core
from tests import profile_reference as ref

DAY = 86_400.0
NOW = time.time() - DAY
ITEMS = [
    {
        "id": f"item-{k}",
        "features": [f"genre:g{k % 20}", f"tag:t{k % 97}", f"author:a{k % 400}"],
        "attributes": {"price": float(k % 50), "length": float(100 + k % 300)},
    }
    for k in range(5_000)
]
KINDS = [("click", None), ("click", None), ("dwell", 45.0), ("skip", None), ("rating", 4), ("purchase", None)]


@pytest.fixture(scope="module")
def profile_10k() -> UserProfile:
    """A user with 10,000 interactions in the history and about 500 interests."""
    processor = FeedbackProcessor(model=InterestModel(max_history=10_000, refresh_every=0))
    profile = UserProfile("u")
    events = []
    for k in range(10_000):
        kind, value = KINDS[k % len(KINDS)]
        events.append(processor.feedback("u", ITEMS[(k * 13) % 5_000], kind, value, timestamp=NOW - 90 * DAY + k * 700))
    processor.apply(profile, events)
    assert len(profile.interaction_history) == 10_000
    return profile


@pytest.mark.benchmark(group="profiles: preference extraction, 10,000 interactions")
def test_extract_penchant(benchmark: Any, profile_10k: UserProfile) -> None:
    extractor = PreferenceExtractor()
    found = benchmark(extractor.extract, profile_10k, NOW)
    assert "range:price" in found


@pytest.mark.benchmark(group="profiles: preference extraction, 10,000 interactions")
def test_extract_reference(benchmark: Any, profile_10k: UserProfile) -> None:
    def extract() -> dict[str, Any]:
        history = profile_10k.interaction_history
        return {
            **ref.categorical_preferences(profile_10k, NOW),
            **ref.numeric_preferences(history, NOW),
            **ref.temporal_preferences(history, NOW),
        }

    assert "range:price" in benchmark(extract)


@pytest.fixture(scope="module")
def signal_columns() -> tuple[Any, ...]:
    """Columns of 100,000 signals with 3 features each over 2,000 features, 4 half-lives."""
    rng = np.random.default_rng(7)
    n = 100_000
    times = (NOW - rng.uniform(0, 30 * DAY, n)).tolist()
    weights = rng.uniform(-2, 3, n).tolist()
    channels = rng.integers(0, 4, n).tolist()
    indptr = list(range(0, 3 * n + 1, 3))
    feature_ids = rng.integers(0, 2_000, 3 * n).tolist()
    feature_weights = [1 / 3] * (3 * n)
    return times, weights, channels, [3_600.0, DAY, 7 * DAY, 30 * DAY], indptr, feature_ids, feature_weights


@pytest.mark.benchmark(group="profiles: accumulate 100,000 signals")
def test_accumulate_penchant(benchmark: Any, signal_columns: tuple[Any, ...]) -> None:
    benchmark(_core.accumulate_signals, *signal_columns, NOW, 2_000)


@pytest.mark.benchmark(group="profiles: accumulate 100,000 signals")
def test_accumulate_numpy_reference(benchmark: Any, signal_columns: tuple[Any, ...]) -> None:
    def numpy_accumulate() -> Any:
        times, weights, channels, half_lives, _indptr, feature_ids, feature_weights = signal_columns
        t, w, c = np.asarray(times), np.asarray(weights), np.asarray(channels)
        rows = np.repeat(np.arange(len(t)), 3)
        amounts = (w[rows] * np.asarray(feature_weights)) * np.exp2((t[rows] - NOW) / np.asarray(half_lives)[c[rows]])
        keys = (np.asarray(feature_ids) * len(half_lives) + c[rows]) * 2 + (amounts < 0)
        unique, inverse = np.unique(keys, return_inverse=True)
        return unique, np.bincount(inverse, weights=np.abs(amounts))

    benchmark(numpy_accumulate)


@pytest.mark.benchmark(group="profiles: interest weights of a profile with ~500 interests")
def test_interest_weights_penchant(benchmark: Any, profile_10k: UserProfile) -> None:
    benchmark(profile_10k.interest_weights, NOW)


@pytest.mark.benchmark(group="profiles: interest weights of a profile with ~500 interests")
def test_interest_weights_reference(benchmark: Any, profile_10k: UserProfile) -> None:
    benchmark(lambda: {n: i.weight(NOW, profile_10k.landmark) for n, i in profile_10k.interests.items()})
