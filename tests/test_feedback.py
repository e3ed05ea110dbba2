"""Feedback: types, the weight table, dwell and scroll, the collector, bad input, idempotency,
order independence, and a user whose taste changes."""

from __future__ import annotations

import math
import time
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import penchant
from penchant import (
    DEFAULT_FEEDBACK_RULES,
    ExplicitFeedback,
    Feedback,
    FeedbackCollector,
    FeedbackProcessor,
    FeedbackType,
    ImplicitFeedback,
    InterestModel,
    ProfileManager,
    rank_items,
)
from penchant.feedback_collector import Signal
from penchant.profile_store import InMemoryProfileStore

DAY = 86_400.0
NOW = time.time()
JAZZ = {"id": "j1", "features": {"genre:jazz": 1.0, "mood:calm": 1.0}, "attributes": {"price": 12.0}}
SCIFI = {"id": "s1", "features": ["genre:sci-fi", "tag:space"], "attributes": {"price": 8}}


def collector(**model: Any) -> FeedbackCollector:
    store = InMemoryProfileStore(model=InterestModel(**model))
    return FeedbackCollector(store, FeedbackProcessor(model=store.model))


# -- the weight table --------------------------------------------------------------------------


def test_every_type_has_a_rule_and_negatives_are_negative() -> None:
    assert set(DEFAULT_FEEDBACK_RULES) == set(FeedbackType)
    negative = {t for t, rule in DEFAULT_FEEDBACK_RULES.items() if rule.weight < 0}
    assert negative == {
        FeedbackType.THUMBS_DOWN,
        FeedbackType.DISLIKE,
        FeedbackType.SKIP,
        FeedbackType.DISMISS,
        FeedbackType.IMPRESSION,
    }
    assert all(rule.half_life > 0 for rule in DEFAULT_FEEDBACK_RULES.values())


def test_weights_and_half_lives_are_configurable_per_type() -> None:
    processor = FeedbackProcessor(weights={"click": 0.25, FeedbackType.SKIP: -2.0}, half_lives={"click": 3_600})
    c = FeedbackCollector(processor=processor)
    signals = processor.signals(
        [processor.feedback("u", JAZZ, "click"), processor.feedback("u", JAZZ, "skip")], now=NOW
    )
    assert [s.weight for s in signals] == [0.25, -2.0]
    assert [s.half_life for s in signals] == [3_600.0, DEFAULT_FEEDBACK_RULES[FeedbackType.SKIP].half_life]
    c.record("u", JAZZ, "click", timestamp=NOW)
    profile = c.store.get("u")
    assert profile is not None
    assert "+3600" in profile.interests["genre:jazz"].sums
    with pytest.raises(penchant.ValidationError, match="unknown feedback type"):
        FeedbackProcessor(weights={"clik": 1.0})
    with pytest.raises(penchant.ValidationError, match="half_life"):
        FeedbackProcessor(half_lives={"click": 0})


@pytest.mark.parametrize(("rating", "expected"), [(5, 2.0), (1, -2.0), (3, 0.0), (4, 1.0)])
def test_ratings_are_centred_on_the_scale(rating: float, expected: float) -> None:
    assert FeedbackProcessor().event_weight("rating", rating) == pytest.approx(expected)


def test_rating_scale_is_configurable() -> None:
    processor = FeedbackProcessor(rating_scale=(0, 10))
    assert processor.event_weight("rating", 10) == pytest.approx(2.0)
    assert processor.event_weight("rating", 5) == pytest.approx(0.0)
    with pytest.raises(penchant.ValidationError, match="outside the scale"):
        processor.event_weight("rating", 11)
    with pytest.raises(penchant.ValidationError):
        FeedbackProcessor(rating_scale=(5, 5))


def test_dwell_is_normalised_saturating_and_short_bounces_are_negative() -> None:
    p = FeedbackProcessor(expected_dwell=30.0, bounce_dwell=5.0)
    scores = [p.event_weight("dwell", d) for d in (0, 2, 5, 10, 30, 300, 3_600)]
    assert scores[0] == pytest.approx(-1.0)
    assert scores[1] < 0
    assert scores[2] == pytest.approx(0.0)
    assert scores == sorted(scores)
    assert scores[-1] <= 1.0
    assert scores[-1] - scores[-2] < 0.001  # an hour is barely more than ten minutes
    # Per item: the same 60 s on a long read (expected 600 s) says less than on a short clip.
    long_read = p.event_weight("dwell", 60, {"expected_dwell": 600.0})
    short_clip = p.event_weight("dwell", 60, {"expected_dwell": 20.0})
    assert 0 < long_read < short_clip


def test_scroll_depth_counts_in_proportion() -> None:
    p = FeedbackProcessor()
    assert p.event_weight("scroll_depth", 0.5) == pytest.approx(0.25)
    assert p.event_weight("scroll_depth", 1.0) == pytest.approx(0.5)


def test_counts_multiply_and_flags_take_no_value() -> None:
    p = FeedbackProcessor()
    assert p.event_weight("purchase", 2) == pytest.approx(6.0)
    assert p.event_weight("thumbs_up", 1) == pytest.approx(2.0)
    with pytest.raises(penchant.ValidationError, match="takes no value"):
        p.event_weight("thumbs_up", 5)


def test_features_are_spread_over_the_item_in_proportion() -> None:
    p = FeedbackProcessor()
    signal = p.signal(p.feedback("u", {"id": 1, "features": {"a": 3.0, "b": 1.0}}, "like"), now=NOW)
    assert dict(signal.features) == {"a": 0.75, "b": 0.25}
    assert signal.item_id == "1"


def test_processed_signals_are_ordinary_signals() -> None:
    p = FeedbackProcessor()
    feedback = p.feedback("u", JAZZ, "dwell", 45.0, timestamp=NOW, context={"page": "home"})
    signal = p.signal(feedback, now=NOW)
    expected = Signal(
        event_id=feedback.event_id,
        user_id="u",
        item_id="j1",
        feedback_type=FeedbackType.DWELL,
        value=45.0,
        weight=p.event_weight("dwell", 45.0),
        half_life=DEFAULT_FEEDBACK_RULES[FeedbackType.DWELL].half_life,
        timestamp=feedback.timestamp.timestamp(),
        features={"genre:jazz": 0.5, "mood:calm": 0.5},
        attributes={"price": 12.0},
        context={"page": "home"},
    )
    assert signal == expected
    assert type(signal) is Signal
    with pytest.raises(FrozenInstanceError):
        signal.weight = 3.0  # type: ignore[misc]
    # The signal owns its mappings: changing the feedback afterwards changes nothing.
    feedback.attributes["price"] = 99.0
    feedback.context["page"] = "other"
    assert signal.attributes == {"price": 12.0}
    assert signal.context == {"page": "home"}


def test_explicit_and_implicit_feedback_classes() -> None:
    p = FeedbackProcessor()
    assert isinstance(p.feedback("u", JAZZ, "rating", 4), ExplicitFeedback)
    assert isinstance(p.feedback("u", JAZZ, "dwell", 40), ImplicitFeedback)
    with pytest.raises(penchant.ValidationError, match="implicit"):
        ExplicitFeedback("u", "i", FeedbackType.CLICK)
    with pytest.raises(penchant.ValidationError, match="explicit"):
        ImplicitFeedback("u", "i", FeedbackType.LIKE)


@dataclass
class Article:
    id: str
    features: list[str]
    attributes: dict[str, float] = field(default_factory=dict)


def test_items_may_be_objects_with_features_as_lists_or_mappings() -> None:
    c = collector()
    c.record("u", Article("a1", ["topic:rust"], {"length": 1200.0}), "click", timestamp=NOW)
    c.record("u", {"id": 7, "features": {"topic:python": 2.0}}, "click", timestamp=NOW)
    profile = c.store.get("u")
    assert profile is not None
    assert set(profile.interests) == {"topic:rust", "topic:python"}
    by_item = {i.item_id: i for i in profile.interaction_history}
    assert by_item["a1"].attributes == {"length": 1200.0}
    assert by_item["7"].features == {"topic:python": 1.0}


# -- idempotency -------------------------------------------------------------------------------


def test_event_ids_are_generated_and_a_repeated_id_has_no_second_effect() -> None:
    c = collector()
    first = c.record("u", JAZZ, "click", timestamp=NOW)
    second = c.record("u", JAZZ, "click", timestamp=NOW)
    assert first.event_id
    assert second.event_id
    assert first.event_id != second.event_id
    c.record("u", JAZZ, "like", timestamp=NOW, event_id="evt-1")
    before = c.store.get("u")
    assert before is not None
    c.record("u", JAZZ, "like", timestamp=NOW, event_id="evt-1")
    c.record_many([{"user_id": "u", "item": JAZZ, "feedback_type": "like", "event_id": "evt-1", "timestamp": NOW}])
    after = c.store.get("u")
    assert after is not None
    assert after.interest_weights(NOW) == before.interest_weights(NOW)
    assert after.event_count == before.event_count == 3
    assert after.version == before.version


def test_record_many_skips_repeats_within_the_batch() -> None:
    c = collector()
    event = {"user_id": "u", "item": JAZZ, "feedback_type": "click", "event_id": "same", "timestamp": NOW}
    ids = c.record_many([event, event, {**event, "event_id": "other"}])
    assert ids == ["same", "same", "other"]
    profile = c.store.get("u")
    assert profile is not None
    assert profile.event_count == 2


def test_record_many_takes_feedback_objects_and_mappings_for_many_users() -> None:
    c = collector()
    p = c.processor
    events: list[Feedback | dict[str, Any]] = [
        p.feedback("a", JAZZ, "click", timestamp=NOW),
        {"user_id": "b", "item": SCIFI, "feedback_type": "rating", "value": 5, "timestamp": NOW},
        {"user_id": "a", "item": SCIFI, "feedback_type": FeedbackType.SKIP},
    ]
    ids = c.record_many(events)
    assert len(set(ids)) == 3
    a, b = c.store.get("a"), c.store.get("b")
    assert a is not None
    assert b is not None
    assert a.interest_weights(NOW)["genre:jazz"] > 0 > a.interest_weights(NOW)["genre:sci-fi"]
    assert b.interest_weights(NOW)["genre:sci-fi"] > 0
    assert a.version == 1  # one step per user per batch


# -- bad input ---------------------------------------------------------------------------------

BAD_RECORDS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown type", {"feedback_type": "clicked"}, "unknown feedback type"),
    ("rating above the scale", {"feedback_type": "rating", "value": 6}, "outside the scale"),
    ("rating below the scale", {"feedback_type": "rating", "value": 0}, "outside the scale"),
    ("rating without a value", {"feedback_type": "rating"}, "needs a value"),
    ("negative dwell", {"feedback_type": "dwell", "value": -1}, "must not be negative"),
    ("scroll above 1", {"feedback_type": "scroll_depth", "value": 1.5}, r"\[0, 1\]"),
    ("scroll below 0", {"feedback_type": "scroll_depth", "value": -0.1}, r"\[0, 1\]"),
    ("NaN value", {"feedback_type": "dwell", "value": math.nan}, "finite"),
    ("infinite value", {"feedback_type": "purchase", "value": math.inf}, "finite"),
    ("negative count", {"feedback_type": "click", "value": -2}, "must lie in"),
    ("future timestamp", {"timestamp": NOW + 10 * DAY}, "future"),
    ("NaN timestamp", {"timestamp": math.nan}, "finite"),
    ("empty user id", {"user_id": ""}, "user_id must not be empty"),
    ("oversized user id", {"user_id": "u" * 300}, "the limit is 256"),
    ("control character in user id", {"user_id": "u\n1"}, "control characters"),
    ("oversized event id", {"event_id": "e" * 300}, "event_id is 300 bytes"),
    ("item without features", {"item": {"id": "x"}}, "no features"),
    ("item with empty features", {"item": {"id": "x", "features": []}}, "no features"),
    ("item with zero weights", {"item": {"id": "x", "features": {"a": 0.0}}}, "no features"),
    ("item with NaN feature weight", {"item": {"id": "x", "features": {"a": math.nan}}}, "finite"),
    ("item with negative feature weight", {"item": {"id": "x", "features": {"a": -1.0}}}, "negative weight"),
    ("item with empty feature name", {"item": {"id": "x", "features": [""]}}, "feature name must not be empty"),
    ("item without id", {"item": {"features": ["a"]}}, "no id"),
    ("item with empty id", {"item": {"id": "", "features": ["a"]}}, "item_id must not be empty"),
    ("item that is only an id", {"item": "j1"}, "learns from the item's features"),
    ("item with NaN attribute", {"item": {"id": "x", "features": ["a"], "attributes": {"p": math.nan}}}, "finite"),
    ("context not a mapping", {"context": ["a"]}, "context must be a mapping"),
    ("flag with a value", {"feedback_type": "like", "value": 3}, "takes no value"),
]


@pytest.fixture
def used_collector() -> FeedbackCollector:
    c = collector()
    c.record("u", JAZZ, "click", timestamp=NOW - DAY)
    c.record("u", SCIFI, "rating", 2, timestamp=NOW - DAY)
    return c


@pytest.mark.parametrize(("case", "change", "message"), BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_bad_input_raises_and_leaves_the_profile_unchanged(
    used_collector: FeedbackCollector, case: str, change: dict[str, Any], message: str
) -> None:
    before = used_collector.store.get("u")
    assert before is not None
    bad: dict[str, Any] = {"user_id": "u", "item": JAZZ, "feedback_type": "click", **change}
    arguments = dict(bad)
    with pytest.raises(penchant.ValidationError, match=message):
        used_collector.record(
            arguments.pop("user_id"), arguments.pop("item"), arguments.pop("feedback_type"), **arguments
        )
    # In a batch, one bad event stops the good ones too.
    good = {"user_id": "u", "item": SCIFI, "feedback_type": "click", "timestamp": NOW}
    with pytest.raises(penchant.ValidationError, match=message):
        used_collector.record_many([good, bad])
    after = used_collector.store.get("u")
    assert after is not None
    assert after.to_dict() == before.to_dict()


def test_record_many_names_the_bad_event_and_stores_nothing() -> None:
    c = collector()
    good = {"user_id": "a", "item": JAZZ, "feedback_type": "click", "timestamp": NOW}
    with pytest.raises(penchant.ValidationError, match=r"event 2: .*outside the scale"):
        c.record_many([good, {**good, "user_id": "b"}, {**good, "feedback_type": "rating", "value": 9}])
    assert c.store.get("a") is None
    assert c.store.get("b") is None
    with pytest.raises(penchant.ValidationError, match="unknown field"):
        c.record_many([{**good, "colour": "red"}])
    with pytest.raises(penchant.ValidationError, match="expected a Feedback or a mapping"):
        c.record_many([("a", JAZZ, "click")])  # type: ignore[list-item]


def test_a_feedback_without_features_is_refused_by_the_processor() -> None:
    c = collector()
    with pytest.raises(penchant.ValidationError, match="carries no features"):
        c.record_many([Feedback("u", "item-1", FeedbackType.CLICK)])
    assert c.store.get("u") is None


# -- order independence ------------------------------------------------------------------------

ITEMS = [
    {"id": f"i{i}", "features": features, "attributes": {"price": float(5 * i + 3)}}
    for i, features in enumerate(
        [
            ["genre:jazz", "mood:calm"],
            {"genre:sci-fi": 2.0, "tag:space": 1.0},
            ["genre:jazz", "tag:live"],
            {"genre:horror": 1.0},
            ["genre:sci-fi", "tag:robots", "mood:dark"],
        ]
    )
]
TYPES_AND_VALUES = st.one_of(
    st.tuples(st.sampled_from(["click", "skip", "dismiss", "impression", "bookmark", "like", "dislike"]), st.none()),
    st.tuples(st.just("rating"), st.integers(1, 5)),
    st.tuples(st.just("dwell"), st.floats(0, 600)),
    st.tuples(st.just("scroll_depth"), st.floats(0, 1)),
    st.tuples(st.just("purchase"), st.integers(1, 3)),
)


@st.composite
def event_logs(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 40))
    events = []
    for i in range(n):
        kind, value = draw(TYPES_AND_VALUES)
        event: dict[str, Any] = {
            "user_id": "u",
            "item": draw(st.sampled_from(ITEMS)),
            "feedback_type": kind,
            "timestamp": NOW - draw(st.floats(0, 60 * DAY)),
            "event_id": f"e{i}",
        }
        if value is not None:
            event["value"] = value
        events.append(event)
    return events


def profile_state(manager: ProfileManager) -> dict[str, Any]:
    profile = manager.refresh_preferences("u", now=NOW)
    return {
        "weights": profile.interest_weights(NOW),
        "confidences": profile.interest_confidences(NOW),
        "counts": {name: i.count for name, i in profile.interests.items()},
        "history": [(i.event_id, i.timestamp) for i in profile.interaction_history],
        "events": profile.event_count,
        "preferences": {name: (p.value, p.confidence) for name, p in profile.preferences.items()},
    }


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["history"] == b["history"]
    assert a["events"] == b["events"]
    assert a["counts"] == b["counts"]
    for key in ("weights", "confidences"):
        assert a[key].keys() == b[key].keys()
        for name, value in a[key].items():
            assert b[key][name] == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert a["preferences"].keys() == b["preferences"].keys()
    for name, (value, sure) in a["preferences"].items():
        assert b["preferences"][name][1] == pytest.approx(sure, rel=1e-9, abs=1e-12)
        if isinstance(value, float):
            assert b["preferences"][name][0] == pytest.approx(value, rel=1e-9, abs=1e-12)
        else:
            assert b["preferences"][name][0] == value


@given(event_logs(), st.randoms(use_true_random=False), st.integers(1, 7))
@settings(max_examples=60, deadline=None)
def test_replaying_the_same_events_in_any_order_gives_the_same_profile(
    events: list[dict[str, Any]], random: Any, chunk: int
) -> None:
    stores = [InMemoryProfileStore(model=InterestModel(max_history=15)) for _ in range(2)]
    in_order = FeedbackCollector(stores[0], FeedbackProcessor(model=stores[0].model))
    shuffled_collector = FeedbackCollector(stores[1], FeedbackProcessor(model=stores[1].model))
    in_order.record_many(events)
    shuffled = list(events)
    random.shuffle(shuffled)
    # Another order, in batches of another size, some events twice.
    for start in range(0, len(shuffled), chunk):
        shuffled_collector.record_many(shuffled[start : start + chunk])
    shuffled_collector.record_many(shuffled[: chunk // 2])
    assert_same_state(profile_state(ProfileManager(stores[0])), profile_state(ProfileManager(stores[1])))


# -- a user whose taste changes ----------------------------------------------------------------


def test_a_week_of_sci_fi_then_jazz_makes_jazz_dominate_and_ranking_follow() -> None:
    c = collector()
    click_half_life = DEFAULT_FEEDBACK_RULES[FeedbackType.CLICK].half_life
    catalog = [
        *({"id": f"scifi-{i}", "features": ["genre:sci-fi", f"tag:s{i % 4}"]} for i in range(20)),
        *({"id": f"jazz-{i}", "features": ["genre:jazz", f"tag:j{i % 4}"]} for i in range(20)),
    ]
    scifi, jazz = catalog[:20], catalog[20:]
    start = NOW - 8 * click_half_life
    # A week of sci-fi only: several clicks a day.
    for day in range(7):
        for k in range(4):
            c.record("u", scifi[(day * 4 + k) % 20], "click", timestamp=start + day * DAY + k * 3_600)
    switch = start + 7 * DAY
    profile = c.store.get("u")
    assert profile is not None
    top = rank_items(profile, catalog, k=10, now=switch)
    assert all(r.id.startswith("scifi") for r in top)  # type: ignore[union-attr]
    # Then jazz only, one click a day, for three half-lives of a click.
    days = int(3 * click_half_life / DAY)
    for day in range(days):
        c.record("u", jazz[day % 20], "click", timestamp=switch + day * DAY)
    later = switch + days * DAY
    profile = c.store.get("u")
    assert profile is not None
    weights = profile.interest_weights(later)
    assert weights["genre:jazz"] > 5 * weights["genre:sci-fi"] > 0
    top = rank_items(profile, catalog, k=10, now=later)
    assert all(r.id.startswith("jazz") for r in top)  # type: ignore[union-attr]
    likes = ProfileManager(c.store).refresh_preferences("u", now=later).preferences
    assert likes["like:genre:jazz"].confidence > likes["like:genre:sci-fi"].confidence
