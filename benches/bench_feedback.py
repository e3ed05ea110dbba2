"""The feedback path: one event in memory (budget 50 µs), and replaying 100,000 events (budget
over 100,000 events/s), each beside a plain Python/NumPy reference of the same work: the
store-style path that adds ``InterestModel.increments`` one signal at a time.

Run: ``pytest benches/bench_feedback.py --benchmark-columns=min,median,mean,rounds``."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from penchant import Feedback, FeedbackCollector, FeedbackProcessor, Interaction, UserProfile
from penchant.profile_store import InMemoryProfileStore
from tests import profile_reference as ref

DAY = 86_400.0
NOW = time.time() - DAY
ITEMS = [
    {
        "id": f"item-{k}",
        "features": [f"genre:g{k % 20}", f"tag:t{k % 97}", f"author:a{k % 400}"],
        "attributes": {"price": float(k % 50)},
    }
    for k in range(5_000)
]
KINDS = [("click", None), ("click", None), ("dwell", 45.0), ("skip", None), ("rating", 4), ("scroll_depth", 0.7)]
REPLAY_SIZE = 100_000


def warm_profile(processor: FeedbackProcessor) -> UserProfile:
    """A user with a full history (500 events) and a few hundred interests."""
    profile = UserProfile("u")
    events = [processor.feedback("u", ITEMS[k], "click", timestamp=NOW - 30 * DAY + k * 60) for k in range(600)]
    processor.apply(profile, events)
    return profile


def next_event(processor: FeedbackProcessor) -> Any:
    """A pedantic-benchmark setup that makes the next event (outside the timing)."""
    counter = itertools.count()

    def setup() -> tuple[tuple[Feedback], dict[str, Any]]:
        k = next(counter)
        kind, value = KINDS[k % len(KINDS)]
        return (processor.feedback("u", ITEMS[k % len(ITEMS)], kind, value, timestamp=NOW + k * 1e-3),), {}

    return setup


@pytest.mark.benchmark(group="feedback: one event in memory")
def test_process_one_event_penchant(benchmark: Any) -> None:
    """FeedbackProcessor.apply of one validated event: its signal, then interests, history and
    preferences (re-extracted every 50 events, so the mean carries that and the median not)."""
    processor = FeedbackProcessor()
    profile = warm_profile(processor)
    benchmark.pedantic(lambda feedback: processor.apply(profile, [feedback]), setup=next_event(processor), rounds=5_000)


@pytest.mark.benchmark(group="feedback: one event in memory")
def test_process_one_event_reference(benchmark: Any) -> None:
    """The same event through the plain path: increments one by one, history appended."""
    processor = FeedbackProcessor()
    profile = warm_profile(processor)

    def one(feedback: Feedback) -> None:
        signal = processor.signal(feedback)
        ref.apply_one_by_one(profile, [signal])
        profile.interaction_history.append(
            Interaction(signal.item_id, str(signal.feedback_type), signal.value, signal.weight, dict(signal.features))
        )
        del profile.interaction_history[:-500]

    benchmark.pedantic(one, setup=next_event(processor), rounds=5_000)


@pytest.mark.benchmark(group="feedback: one event in memory")
def test_validate_and_process_one_raw_event_penchant(benchmark: Any) -> None:
    """From the raw arguments of ``record``: validate the item and value, then process."""
    processor = FeedbackProcessor()
    profile = warm_profile(processor)
    counter = itertools.count()

    def one() -> None:
        k = next(counter)
        kind, value = KINDS[k % len(KINDS)]
        feedback = processor.feedback("u", ITEMS[k % len(ITEMS)], kind, value, timestamp=NOW + k * 1e-3)
        processor.apply(profile, [feedback])

    benchmark(one)


@pytest.mark.benchmark(group="feedback: one event in memory")
def test_one_event_collector_with_in_memory_store(benchmark: Any) -> None:
    """``FeedbackCollector.record`` end to end into ``InMemoryProfileStore``, which copies the
    whole profile twice per call (so its cost grows with the profile)."""
    collector = FeedbackCollector()
    collector.record_many(
        [collector.processor.feedback("u", ITEMS[k], "click", timestamp=NOW - 30 * DAY + k * 60) for k in range(600)]
    )
    counter = itertools.count()

    def one() -> None:
        k = next(counter)
        collector.record("u", ITEMS[k % len(ITEMS)], "click", timestamp=NOW + k * 1e-3)

    benchmark(one)


@pytest.fixture(scope="module")
def replay_log() -> list[Feedback]:
    """100,000 recorded events of 1,000 users, as an event log holds them."""
    processor = FeedbackProcessor()
    log = []
    for k in range(REPLAY_SIZE):
        kind, value = KINDS[k % len(KINDS)]
        log.append(
            processor.feedback(
                f"user-{k % 1_000}", ITEMS[(k * 7) % len(ITEMS)], kind, value, timestamp=NOW - 60 * DAY + k * 50
            )
        )
    return log


@pytest.mark.benchmark(group="feedback: replay 100,000 events")
def test_replay_into_one_profile_penchant(benchmark: Any, replay_log: list[Feedback]) -> None:
    processor = FeedbackProcessor()
    log = [
        Feedback("u", f.item_id, f.feedback_type, f.value, {}, f.timestamp, f.event_id, f.features, f.attributes)
        for f in replay_log
    ]
    benchmark.pedantic(lambda: processor.apply(UserProfile("u"), log), rounds=3, iterations=1)


@pytest.mark.benchmark(group="feedback: replay 100,000 events")
def test_replay_into_one_profile_reference(benchmark: Any, replay_log: list[Feedback]) -> None:
    processor = FeedbackProcessor()
    log = [
        Feedback("u", f.item_id, f.feedback_type, f.value, {}, f.timestamp, f.event_id, f.features, f.attributes)
        for f in replay_log
    ]

    def replay() -> None:
        ref.apply_one_by_one(UserProfile("u"), processor.signals(log))

    benchmark.pedantic(replay, rounds=1, iterations=1)


@pytest.mark.benchmark(group="feedback: replay 100,000 events")
def test_replay_log_of_1000_users_through_the_collector(benchmark: Any, replay_log: list[Feedback]) -> None:
    """``record_many`` of the whole log into a fresh in-memory store: one step per user."""

    def setup() -> tuple[tuple[FeedbackCollector], dict[str, Any]]:
        return (FeedbackCollector(InMemoryProfileStore()),), {}

    benchmark.pedantic(lambda c: c.record_many(replay_log), setup=setup, rounds=3, iterations=1)
