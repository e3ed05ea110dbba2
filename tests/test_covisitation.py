"""penchant.CoVisitation: the Rust kernel against a plain reference, the feedback path that
feeds it, ranking with it, persistence and hostile input."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import penchant
from penchant import CoVisitation, ValidationError

from .covisit_reference import ReferenceCoVisitation

ITEMS = [f"i{k}" for k in range(12)]


def sequences_strategy() -> st.SearchStrategy[list[tuple[int, str]]]:
    return st.lists(st.tuples(st.integers(0, 4), st.sampled_from(ITEMS)), min_size=1, max_size=120)


def replay_both(events: list[tuple[int, str]], window: int, lag_scale: float, max_neighbours: int):
    model = CoVisitation(window=window, lag_scale=lag_scale, max_neighbours=max_neighbours)
    reference = ReferenceCoVisitation(window, lag_scale, max_neighbours)
    history: dict[int, list[str]] = {}
    for user, item in events:
        previous = history.setdefault(user, [])
        model.observe(item, previous)
        reference.observe(item, previous)
        previous.insert(0, item)
    return model, reference, history


@settings(max_examples=150, deadline=None)
@given(
    events=sequences_strategy(),
    window=st.integers(1, 6),
    lag_scale=st.sampled_from([0.5, 2.0, math.inf]),
    max_neighbours=st.sampled_from([0, 1, 2, 3]),
)
def test_learning_matches_the_reference(events, window, lag_scale, max_neighbours) -> None:
    model, reference, _ = replay_both(events, window, lag_scale, max_neighbours)
    assert len(model) == len(reference.ids)
    assert model.events == len(events)
    for item in reference.ids:
        assert dict(model.neighbours(item, 10_000)) == reference.neighbours(item)
    np.testing.assert_array_equal(model.counts(list(reference.ids)), reference.counts)


@settings(max_examples=150, deadline=None)
@given(
    events=sequences_strategy(),
    history=st.lists(st.sampled_from([*ITEMS, "never-seen"]), max_size=8),
    recent=st.integers(1, 8),
    recency_scale=st.sampled_from([1.0, 4.0, math.inf]),
    alpha=st.sampled_from([0.0, 0.3, 1.0]),
    beta=st.sampled_from([0.0, 0.5, 2.0]),
)
def test_scores_match_the_reference(events, history, recent, recency_scale, alpha, beta) -> None:
    model, reference, _ = replay_both(events, 4, 5.0, 3)
    candidates = [*ITEMS, "never-seen"]
    options = {"recent": recent, "recency_scale": recency_scale, "alpha": alpha, "beta": beta}
    got = model.scores(history, candidates, **options)
    np.testing.assert_allclose(got, reference.scores(history, candidates, **options), rtol=1e-12, atol=0)


@settings(max_examples=60, deadline=None)
@given(events=sequences_strategy(), max_neighbours=st.sampled_from([0, 2]))
def test_a_batch_learns_what_single_events_learn(events, max_neighbours) -> None:
    single, _, _ = replay_both(events, 3, 2.0, max_neighbours)
    batch = CoVisitation(window=3, lag_scale=2.0, max_neighbours=max_neighbours)
    batch.observe_many([str(u) for u, _ in events], [i for _, i in events], np.zeros(len(events)))
    assert batch.to_bytes() == single.to_bytes()


def test_hand_computed_weights_and_scores() -> None:
    model = CoVisitation(window=2, lag_scale=1.0, max_neighbours=0, recency_scale=2.0, alpha=0.5, beta=1.0)
    # One user took a, b, c: pairs (b, a) at lag 1, (c, b) at lag 1, (c, a) at lag 2.
    model.observe("a", [])
    model.observe("b", ["a"])
    model.observe("c", ["b", "a"])
    assert dict(model.neighbours("a")) == pytest.approx({"b": 1.0, "c": math.exp(-1)})
    assert [name for name, _ in model.neighbours("c")] == ["b", "a"]  # heaviest first
    assert [w for _, w in model.neighbours("c")] == pytest.approx([1.0, math.exp(-1)])
    # A user who just took c, then a before it (newest first: c, a); every count is 1.
    # b: 1·C[c][b]/1 + e^(−1/2)·C[a][b]/1 = 1 + e^(−1/2); unknown and history items alike score.
    got = model.scores(["c", "a"], ["b", "zzz"])
    assert got.tolist() == pytest.approx([1.0 + math.exp(-0.5), 0.0])


def test_bounded_memory() -> None:
    model = CoVisitation(window=10, max_neighbours=5)
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in rng.integers(0, 300, 20_000)]
    users = [f"u{k}" for k in rng.integers(0, 50, 20_000)]
    model.observe_many(users, items, np.arange(20_000.0))
    assert all(len(model.neighbours(f"i{k}", 1_000)) < 10 for k in range(300))
    assert model.entries < 300 * 10


def test_decay_halves_old_evidence() -> None:
    day = 86_400.0
    model = CoVisitation(window=1, half_life=day, max_neighbours=0)
    model.observe("a", [], 0.0)
    model.observe("b", ["a"], 0.0)
    model.observe("c", ["a"], day)
    weights = dict(model.neighbours("a"))
    assert weights["c"] == pytest.approx(1.0, rel=1e-6)
    assert weights["b"] == pytest.approx(0.5, rel=1e-6)
    assert model.counts(["a", "b", "c"]).tolist() == pytest.approx([0.5, 0.5, 1.0], rel=1e-6)


def test_bytes_round_trip_and_damaged_bytes() -> None:
    model = CoVisitation(window=3, max_neighbours=2, alpha=0.4)
    model.observe_many(list("uuuvvv"), list("abcacb"), np.arange(6.0))
    data = model.to_bytes()
    back = CoVisitation.from_bytes(data)
    assert back.to_bytes() == data
    assert back.options == model.options
    assert back.scores(["a"], ["b", "c"]).tolist() == model.scores(["a"], ["b", "c"]).tolist()
    for cut in range(len(data)):
        with pytest.raises(ValidationError):
            CoVisitation.from_bytes(data[:cut])
    for bad in (data + b"\0", b"PNCOVIS1" + b"\xff" * 40, b"not a model"):
        with pytest.raises(ValidationError):
            CoVisitation.from_bytes(bad)
    rng = np.random.default_rng(1)
    for _ in range(300):  # flipped bytes: an error or a valid model, never a crash
        damaged = bytearray(data)
        damaged[int(rng.integers(len(damaged)))] ^= int(rng.integers(1, 256))
        with contextlib.suppress(ValidationError):
            CoVisitation.from_bytes(bytes(damaged)).scores(["a"], ["b"])
    with pytest.raises(ValidationError):
        CoVisitation.from_bytes("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"window": 0},
        {"window": True},
        {"lag_scale": 0.0},
        {"lag_scale": math.nan},
        {"max_neighbours": -1},
        {"half_life": 0.0},
        {"half_life": math.inf},
        {"recent": 0},
        {"recency_scale": -1.0},
        {"alpha": -0.1},
        {"beta": math.nan},
        {"dedupe_window": -1},
    ],
)
def test_bad_options(options) -> None:
    with pytest.raises(ValidationError):
        CoVisitation(**options)


def test_bad_events_and_requests() -> None:
    model = CoVisitation()
    for item in ("", "x" * 2_000, 1.5, True, None, 2**70):
        with pytest.raises(ValidationError):
            model.observe(item, [])  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        model.observe("a", "abc")  # a str is not a sequence of ids
    with pytest.raises(ValidationError):
        model.observe("a", [], math.nan)
    with pytest.raises(ValidationError):
        model.observe_many(["u"], ["a", "b"], [0.0, 1.0])
    with pytest.raises(ValidationError):
        model.observe_many(["u", "u"], ["a", "b"], [0.0, math.inf])
    with pytest.raises(ValidationError):
        model.scores(["a"], ["b"], recent=0)
    with pytest.raises(ValidationError):
        model.scores(["a"], ["b"], beta=-1.0)
    with pytest.raises(ValidationError):
        model.scores(["a"], ["b"], unknown_option=1)
    assert len(model) == 0
    assert model.events == 0


def test_integer_ids_are_their_decimal_strings() -> None:
    model = CoVisitation(window=1)
    model.observe(7, [])
    model.observe("8", [7])
    assert model.neighbours("7") == [("8", 1.0)]
    assert model.scores([7], [8, "8"]).tolist()[0] == model.scores(["7"], ["8"]).tolist()[0] > 0


# -- the feedback path --------------------------------------------------------------------------


def item(item_id: str) -> dict[str, object]:
    return {"id": item_id, "features": ["genre:x"]}


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(1_600_000_000 + seconds, UTC)


def test_the_collector_feeds_it_in_each_users_sequence() -> None:
    collector = penchant.FeedbackCollector(covisitation=CoVisitation(window=2, lag_scale=1.0, max_neighbours=0))
    collector.record("u", item("a"), "click", timestamp=at(0))
    collector.record("v", item("z"), "click", timestamp=at(1))
    collector.record("u", item("b"), "click", timestamp=at(2))
    # A batch of u's: it continues u's sequence a, b.
    collector.record_many(
        [
            {"user_id": "u", "item": item("c"), "feedback_type": "click", "timestamp": at(3)},
            {"user_id": "v", "item": item("a"), "feedback_type": "click", "timestamp": at(3)},
            {"user_id": "u", "item": item("d"), "feedback_type": "click", "timestamp": at(4)},
        ]
    )
    model = collector.covisitation
    assert model is not None
    assert dict(model.neighbours("c")) == pytest.approx({"b": 1.0, "a": math.exp(-1), "d": 1.0})
    assert dict(model.neighbours("a")) == pytest.approx({"b": 1.0, "c": math.exp(-1), "z": 1.0})
    assert model.events == 6


def test_a_recorded_event_teaches_once_and_non_engagement_teaches_nothing() -> None:
    collector = penchant.FeedbackCollector(covisitation=CoVisitation(window=2))
    collector.record("u", item("a"), "click", timestamp=at(0), event_id="e1")
    collector.record("u", item("b"), "click", timestamp=at(1), event_id="e2")
    collector.record("u", item("b"), "click", timestamp=at(1), event_id="e2")
    collector.record_many([{"user_id": "u", "item": item("b"), "feedback_type": "click", "event_id": "e2"}])
    collector.record("u", item("c"), "impression", timestamp=at(2))
    collector.record("u", item("d"), "skip", timestamp=at(3))
    model = collector.covisitation
    assert model is not None
    assert model.events == 2
    assert model.neighbours("a") == [("b", 1.0)]
    assert model.neighbours("c") == []


def test_the_batch_may_be_longer_than_the_profiles_history() -> None:
    processor = penchant.FeedbackProcessor(model=penchant.InterestModel(max_history=3))
    collector = penchant.FeedbackCollector(processor=processor, covisitation=CoVisitation(window=1, max_neighbours=0))
    events = [{"user_id": "u", "item": item(f"i{k}"), "feedback_type": "click", "timestamp": at(k)} for k in range(8)]
    collector.record_many(events)
    model = collector.covisitation
    assert model is not None
    for k in range(1, 7):
        assert {n for n, _ in model.neighbours(f"i{k}")} == {f"i{k - 1}", f"i{k + 1}"}


def test_rebuild_from_the_log_equals_the_collectors_model() -> None:
    rng = np.random.default_rng(3)
    log = [
        penchant.ImplicitFeedback(
            user_id=f"u{rng.integers(6)}",
            item_id=f"i{rng.integers(15)}",
            feedback_type="click",
            timestamp=at(k),
            event_id=f"e{k:04d}",
            features={"genre:x": 1.0},
        )
        for k in range(300)
    ]
    rebuilt = CoVisitation.rebuild(reversed(log), max_neighbours=2)
    # One at a time, as a live service would, or in batches of any size: the same model, even
    # with pruning (which depends on the order of learning).
    for size in (1, 7, 300):
        collector = penchant.FeedbackCollector(covisitation=CoVisitation(max_neighbours=2))
        for start in range(0, len(log), size):
            collector.record_many(log[start : start + size])
        assert collector.covisitation is not None
        assert rebuilt.to_bytes() == collector.covisitation.to_bytes(), size


def test_the_async_collector_teaches_what_the_sync_one_does(tmp_path) -> None:
    """arecord and arecord_many run the same operations as record and record_many, on any
    store: co-visitation learns the same from both, here over an SQLite store."""
    rng = np.random.default_rng(4)
    log = [
        penchant.ImplicitFeedback(
            user_id=f"u{rng.integers(4)}",
            item_id=f"i{rng.integers(12)}",
            feedback_type="click",
            timestamp=at(k),
            event_id=f"e{k:04d}",
            features={"genre:x": 1.0},
        )
        for k in range(60)
    ]
    sync = penchant.FeedbackCollector(covisitation=CoVisitation(window=3))
    sync.record_many(log[:40])
    for f in log[40:]:
        sync.record(f.user_id, {"id": f.item_id, "features": ["genre:x"]}, "click", timestamp=f.timestamp)

    async def learn(store: penchant.ProfileStore) -> CoVisitation:
        collector = penchant.FeedbackCollector(store, covisitation=CoVisitation(window=3))
        await collector.arecord_many(log[:40])
        for f in log[40:]:
            await collector.arecord(
                f.user_id, {"id": f.item_id, "features": ["genre:x"]}, "click", timestamp=f.timestamp
            )
        assert collector.covisitation is not None
        return collector.covisitation

    with penchant.SQLiteProfileStore(tmp_path / "p.db") as store:
        model = asyncio.run(learn(store))
    assert sync.covisitation is not None
    assert model.events == sync.covisitation.events == 60
    assert model.to_bytes() == sync.covisitation.to_bytes()


# -- ranking with it ----------------------------------------------------------------------------


def trained() -> CoVisitation:
    model = CoVisitation(window=1, lag_scale=1.0, max_neighbours=0, alpha=0.0, beta=0.0)
    for user in range(3):  # everybody goes a → b; one user a → c
        model.observe_many([f"u{user}"] * 2, ["a", "b"], [0.0, 1.0])
    model.observe_many(["w", "w"], ["a", "c"], [0.0, 1.0])
    return model


def test_catalog_ranking_with_the_factors() -> None:
    model = trained()
    catalog = penchant.Catalog([{"id": k, "features": ["genre:x"]} for k in ["c", "b", "a", "new"]])
    ranked = catalog.rank(
        {}, ["c", "b", "new"], scorers=model.scorers(["a"]), weights=penchant.DEFAULT_COVISITATION_WEIGHTS
    )
    assert [r.id for r in ranked] == ["b", "c", "new"]
    # Again, with the model grown by an item the catalog already had ("new"): realigned.
    model.observe_many(["x", "x", "y", "y"], ["a", "new", "a", "new"], [2.0, 3.0, 4.0, 5.0])
    ranked = catalog.rank({}, ["c", "b", "new"], scorers=model.scorers(["a"]), weights={"learned_popularity": 0.0})
    assert [r.id for r in ranked] == ["b", "new", "c"]


def test_rank_items_over_dicts_and_profiles() -> None:
    model = trained()
    profile = penchant.UserProfile("u9")
    processor = penchant.FeedbackProcessor()
    processor.apply(profile, [processor.feedback("u9", item("a"), "click", timestamp=at(0))])
    items = [{"id": k, "features": ["genre:x"], "score": 0.0} for k in ["c", "b"]]
    ranked = penchant.rank_items(profile, items, scorers=model.scorers(profile), explain=True)
    assert [r.id for r in ranked] == ["b", "c"]
    assert ranked[0].contributions is not None
    assert ranked[0].contributions["covisitation"] == 1.0
    assert model.recent_items(profile) == ["a"]
    # Without the scorers rank_items behaves as before: a tie keeps the input order.
    assert [r.id for r in penchant.rank_items(profile, items)] == ["c", "b"]


def test_one_thread_learns_while_others_score() -> None:
    model = CoVisitation(window=5, max_neighbours=10)
    stop = threading.Event()
    errors: list[BaseException] = []

    def learn() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            n = 500
            model.observe_many(
                [f"u{k}" for k in rng.integers(0, 20, n)], [f"i{k}" for k in rng.integers(0, 200, n)], np.zeros(n)
            )

    def score() -> None:
        try:
            for _ in range(300):
                model.scores(["i1", "i2"], [f"i{k}" for k in range(200)])
                CoVisitation.from_bytes(model.to_bytes())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    learner = threading.Thread(target=learn)
    learner.start()
    scorers = [threading.Thread(target=score) for _ in range(3)]
    for t in scorers:
        t.start()
    for t in scorers:
        t.join()
    stop.set()
    learner.join()
    assert not errors
    assert model.events > 0
