"""Preference extraction (categorical, numeric, temporal) and explicit preferences: hard
filters, strong priors, and the rule by which implicit evidence overtakes a stated like."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import penchant
from penchant import (
    ExplicitRule,
    FeedbackCollector,
    FeedbackProcessor,
    InterestModel,
    PreferenceCategory,
    PreferenceExtractor,
    PreferenceSource,
    ProfileManager,
    UserProfile,
    rank_items,
)
from penchant.profile_store import InMemoryProfileStore
from penchant.user_profile import EXPLICIT_STRENGTH, Interaction

from . import profile_reference as ref

DAY = 86_400.0
# A Monday, 00:00 UTC, in the past so that no event lies in the future.
MONDAY = datetime(2024, 3, 4, tzinfo=UTC).timestamp()
NOW = MONDAY + 30 * DAY


def setup(**model: Any) -> tuple[FeedbackCollector, ProfileManager]:
    model.setdefault("refresh_every", 0)
    store = InMemoryProfileStore(model=InterestModel(**model))
    return FeedbackCollector(store, FeedbackProcessor(model=store.model)), ProfileManager(store)


def item(i: int, *features: str, **attributes: float) -> dict[str, Any]:
    return {"id": f"i{i}", "features": list(features), "attributes": attributes}


def click(c: FeedbackCollector, it: dict[str, Any], t: float, kind: str = "click", value: float | None = None) -> None:
    c.record("u", it, kind, value, timestamp=t)


# -- categorical -------------------------------------------------------------------------------


def test_categorical_preferences_are_the_top_features_with_confidence() -> None:
    c, m = setup()
    for k in range(8):
        click(c, item(k, "genre:jazz"), NOW - k * 3_600)
    for k in range(2):
        click(c, item(10 + k, "genre:rock"), NOW - k * 3_600)
    for k in range(6):
        click(c, item(20 + k, "genre:country"), NOW - k * 3_600, "dismiss")
    click(c, item(30, "genre:polka"), NOW)
    prefs = m.refresh_preferences("u", now=NOW).preferences
    jazz, rock, country = prefs["like:genre:jazz"], prefs["like:genre:rock"], prefs["dislike:genre:country"]
    assert jazz.category is PreferenceCategory.CATEGORICAL
    assert jazz.source is PreferenceSource.IMPLICIT
    assert jazz.value > rock.value > 0 > country.value
    assert jazz.confidence > rock.confidence >= 0.3
    assert country.confidence > 0.8
    # One click (confidence 0.5 at best, less once decayed) is below min_confidence 0.6 here.
    strict = PreferenceExtractor(min_confidence=0.6, max_features=1).extract(m.get("u"), NOW)  # type: ignore[arg-type]
    assert "like:genre:polka" not in strict
    assert [k for k in strict if k.startswith("like:")] == ["like:genre:jazz"]


# -- numeric -----------------------------------------------------------------------------------


def test_numeric_preference_is_the_price_range_of_liked_items() -> None:
    c, m = setup()
    prices = [8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]
    for k, price in enumerate(prices):
        click(c, item(k, "genre:jazz", price=price), NOW - k * 60, "purchase")
    # Disliked items do not move the range.
    for k in range(5):
        click(c, item(50 + k, "genre:jazz", price=500.0), NOW - k * 60, "dismiss")
    prefs = m.refresh_preferences("u", now=NOW).preferences
    price = prefs["range:price"]
    assert price.category is PreferenceCategory.NUMERIC
    assert 8.0 <= price.value["low"] <= 10.0
    assert 12.0 <= price.value["median"] <= 13.0
    assert 15.0 <= price.value["high"] <= 17.0
    assert price.confidence == pytest.approx(10 / 15, rel=0.05)  # n/(n + 5) with n ≈ 10


def test_numeric_preference_needs_enough_liked_items() -> None:
    c, m = setup()
    for k in range(4):
        click(c, item(k, "genre:jazz", price=10.0 + k), NOW - k)
    assert "range:price" not in m.refresh_preferences("u", now=NOW).preferences


# -- temporal ----------------------------------------------------------------------------------


def test_temporal_preferences_when_activity_is_concentrated() -> None:
    c, m = setup()
    # Evenings (20:00-21:59 UTC) on Saturdays and Sundays, for three weeks.
    for week in range(3):
        for day in (5, 6):
            for minute in range(0, 120, 20):
                t = MONDAY + week * 7 * DAY + day * DAY + 20 * 3_600 + minute * 60
                click(c, item(int(t) % 97, "genre:jazz"), t)
    prefs = m.refresh_preferences("u", now=MONDAY + 21 * DAY).preferences
    assert prefs["active_hours"].value == [20, 21] or prefs["active_hours"].value in ([20], [21])
    assert prefs["active_days"].value in (["saturday", "sunday"], ["saturday"], ["sunday"])
    assert prefs["active_hours"].category is PreferenceCategory.TEMPORAL
    assert 0.5 < prefs["active_hours"].confidence < 1


def test_no_temporal_preference_from_even_or_scarce_activity() -> None:
    c, m = setup()
    for h in range(48):  # every hour of two days
        click(c, item(h, "genre:jazz"), MONDAY + h * 3_600 + 7 * 3_600 * (h % 7))
    prefs = m.refresh_preferences("u", now=NOW).preferences
    assert "active_hours" not in prefs
    c2, m2 = setup()
    for k in range(5):  # concentrated, but only five events
        click(c2, item(k, "genre:jazz"), MONDAY + 20 * 3_600 + k * 60)
    assert "active_hours" not in m2.refresh_preferences("u", now=NOW).preferences


def test_extraction_runs_on_a_plain_history() -> None:
    history = [
        Interaction(f"i{k}", "click", 1.0, 1.0, {"f": 1.0}, {"price": float(k)}, MONDAY + k * 60, f"e{k}")  # type: ignore[arg-type]
        for k in range(30)
    ]
    profile = UserProfile("u", interaction_history=history)
    prefs = PreferenceExtractor().extract(profile, MONDAY + DAY)
    assert prefs["range:price"].value["median"] in (14.0, 15.0)
    assert prefs["active_hours"].value == [0]


def test_extraction_reads_a_stored_history_without_decoding_it_and_gives_the_same() -> None:
    """A profile read from a store keeps its history encoded: extraction (and the latest
    event's time) reads it from the stored bytes and leaves it encoded, with the preferences
    that the decoded history gives. A history the fast reader does not know (times stored as
    text, which decoding accepts) is decoded instead, to the same result."""
    import msgspec

    from penchant.profile_store.serializer import ProfileSerializer

    c, m = setup(refresh_every=0)
    for k in range(40):
        it = item(k, f"genre:{k % 3}", price=float(k % 7), year=2000.0 + k)
        click(c, it, MONDAY + k * 3_600 + (k % 5) * 7 * 3_600)
    profile = m.get("u")
    assert profile is not None
    serializer = ProfileSerializer()
    extractor = PreferenceExtractor()
    want = extractor.extract(profile, NOW)
    assert {"range:price", "range:year", "active_days"} <= want.keys()
    stored = serializer.decode(serializer.encode(profile))
    assert stored.last_event_time() == profile.last_event_time()
    assert extractor.extract(stored, NOW) == want
    assert serializer.history_is_encoded(stored)
    as_text = [{**msgspec.to_builtins(i), "timestamp": i.timestamp.isoformat()} for i in profile.interaction_history]
    entries = [msgspec.msgpack.encode(entry) for entry in as_text]
    serializer.keep_history_encoded(stored, serializer.pack_history(entries))
    assert stored.last_event_time() == profile.last_event_time()
    assert extractor.extract(stored, NOW) == want
    assert not serializer.history_is_encoded(stored)  # decoded, the general way


def test_extractor_settings_are_validated() -> None:
    with pytest.raises(penchant.ValidationError):
        PreferenceExtractor(quantiles=(0.9, 0.1))
    with pytest.raises(penchant.ValidationError):
        PreferenceExtractor(min_confidence=2.0)
    with pytest.raises(penchant.ValidationError):
        PreferenceExtractor(max_features=-1)


# -- explicit preferences ----------------------------------------------------------------------

CATALOG = [
    {"id": "horror-1", "features": ["genre:horror"], "attributes": {"price": 5.0}},
    {"id": "jazz-cheap", "features": ["genre:jazz"], "attributes": {"price": 9.0}},
    {"id": "jazz-dear", "features": ["genre:jazz"], "attributes": {"price": 45.0}},
    {"id": "rock-1", "features": ["genre:rock"], "attributes": {"price": 15.0}},
    {"id": "pop-1", "features": ["genre:pop"], "attributes": {"price": 19.0}},
]


def ids(profile: UserProfile, **kwargs: Any) -> list[Any]:
    return [r.id for r in rank_items(profile, CATALOG, now=NOW, **kwargs)]


def test_never_and_max_are_hard_filters_in_ranking() -> None:
    c, m = setup()
    for k in range(20):  # a strong taste for horror...
        click(c, CATALOG[0], NOW - k * 60, "purchase")
    assert ids(m.get("u"))[0] == "horror-1"  # type: ignore[arg-type]
    m.set_preference("u", "never", "genre:horror")  # ...is overruled by "never show horror"
    assert "horror-1" not in ids(m.get("u"))  # type: ignore[arg-type]
    m.set_preference("u", "max", "price", 20)
    assert set(ids(m.get("u"))) == {"jazz-cheap", "rock-1", "pop-1"}  # type: ignore[arg-type]
    m.set_preference("u", "min", "price", 10)
    assert set(ids(m.get("u"))) == {"rock-1", "pop-1"}  # type: ignore[arg-type]
    # The caller's own filters combine with the user's; contradictory ranges leave nothing.
    assert ids(m.get("u"), filters={"attribute_ranges": {"price": (16, None)}}) == ["pop-1"]  # type: ignore[arg-type]
    assert ids(m.get("u"), filters={"attribute_ranges": {"price": (30, None)}}) == []  # type: ignore[arg-type]
    catalog = penchant.Catalog(CATALOG)
    assert {r.id for r in catalog.rank(m.get("u"), now=NOW)} == {"rock-1", "pop-1"}  # type: ignore[arg-type]
    compiled = catalog.compile(m.get("u"), now=NOW)  # type: ignore[arg-type]
    assert {r.id for r in catalog.rank(compiled, now=NOW)} == {"rock-1", "pop-1"}
    assert catalog.rank(compiled, now=NOW, filters={"attribute_ranges": {"price": (None, 12)}}) == []
    m.remove_preference("u", "never", "genre:horror")
    m.remove_preference("u", "min", "price")
    assert ids(m.get("u"))[0] == "horror-1"  # type: ignore[arg-type]


def test_a_stated_like_is_a_strong_prior_with_high_confidence() -> None:
    c, m = setup()
    for k in range(5):
        click(c, CATALOG[3], NOW - k * 60)  # five rock clicks
    profile = m.set_preference("u", "like", "genre:jazz")
    assert ids(profile)[:2] == ["jazz-cheap", "jazz-dear"]
    stated = profile.preferences["like:genre:jazz"]
    assert stated.source is PreferenceSource.EXPLICIT
    assert stated.confidence == pytest.approx(EXPLICIT_STRENGTH / (EXPLICIT_STRENGTH + 1))
    assert stated.confidence > 0.9
    assert profile.interest_weights(NOW)["genre:jazz"] == pytest.approx(EXPLICIT_STRENGTH)
    assert profile.interest_weights(NOW, explicit=False).get("genre:jazz", 0.0) == 0.0


def test_implicit_evidence_overtakes_a_stated_like_only_when_stronger_than_it() -> None:
    c, m = setup()
    m.set_preference("u", "like", "genre:jazz", 4.0)  # strength E = 4
    jazz = {"id": "j", "features": ["genre:jazz"]}
    # Each dislike weighs -2 on the single feature; the half-life is 90 days, so events an
    # hour apart hardly decay. One dislike (N ≈ 2 < E): still liked, with less confidence.
    click(c, jazz, NOW - 3 * 3_600, "dislike")
    profile = m.refresh_preferences("u", now=NOW)
    assert profile.interest_weights(NOW)["genre:jazz"] > 0
    assert 0 < profile.preferences["like:genre:jazz"].confidence < 4 / 5
    assert "dislike:genre:jazz" not in profile.preferences
    # Two dislikes: N ≈ 4 = E minus a little decay, not yet overtaken.
    click(c, jazz, NOW - 2 * 3_600, "dislike")
    profile = m.refresh_preferences("u", now=NOW)
    assert 0 < profile.interest_weights(NOW)["genre:jazz"] < 0.01
    # Three: the net implicit evidence against (≈ 6) exceeds E; the weight turns negative, the
    # statement keeps no confidence and an implicit dislike is reported.
    click(c, jazz, NOW - 3_600, "dislike")
    profile = m.refresh_preferences("u", now=NOW)
    weight = profile.interest_weights(NOW)["genre:jazz"]
    positive, negative = profile.interest_evidence(NOW)["genre:jazz"]
    assert positive == 0.0
    assert negative == pytest.approx(6.0, rel=1e-3)
    assert weight == pytest.approx(4.0 - negative)
    assert weight < 0
    assert profile.preferences["like:genre:jazz"].confidence == 0.0
    # An implicit dislike is reported once it is confident enough (0.3): two more dislikes.
    assert "dislike:genre:jazz" not in profile.preferences  # 2/11 ≈ 0.18
    click(c, jazz, NOW - 1_800, "dislike")
    click(c, jazz, NOW - 900, "dislike")
    profile = m.refresh_preferences("u", now=NOW)
    weight = profile.interest_weights(NOW)["genre:jazz"]
    _, negative = profile.interest_evidence(NOW)["genre:jazz"]
    overtaken = profile.preferences["dislike:genre:jazz"]
    assert overtaken.source is PreferenceSource.IMPLICIT
    assert overtaken.confidence == pytest.approx(abs(weight) / (4.0 + negative + 1.0))
    # The statement itself stays until the user removes it.
    assert profile.explicit_preferences["like:genre:jazz"] == 4.0


def test_stated_like_confidence_updates_with_each_event() -> None:
    c, m = setup(refresh_every=100)  # no periodic refresh: the event itself re-scores the like
    m.set_preference("u", "like", "genre:jazz")
    c.record("u", {"id": "j", "features": ["genre:jazz"]}, "dislike", timestamp=NOW)
    profile = m.get("u")
    assert profile is not None
    expected = (EXPLICIT_STRENGTH - 2.0) / (EXPLICIT_STRENGTH + 2.0 + 1.0)
    assert profile.preferences["like:genre:jazz"].confidence == pytest.approx(expected)


def test_setting_a_rule_replaces_its_contradiction() -> None:
    _, m = setup()
    m.set_preference("u", "dislike", "genre:jazz")
    profile = m.set_preference("u", "like", "genre:jazz", 7)
    assert profile.explicit_preferences == {"like:genre:jazz": 7.0}
    profile = m.set_preference("u", "never", "genre:jazz")
    assert profile.explicit_preferences == {"never:genre:jazz": True}
    assert "like:genre:jazz" not in profile.preferences
    profile = m.set_preference("u", "like", "genre:jazz", 9)  # update: set again
    assert profile.explicit_preferences == {"like:genre:jazz": 9.0}
    assert profile.hard_filters().blocked_features == frozenset()


@pytest.mark.parametrize(
    ("rule", "target", "value", "message"),
    [
        ("always", "genre:jazz", None, "unknown explicit preference rule"),
        ("max", "price", None, "needs a value"),
        ("max", "price", math.nan, "finite"),
        ("like", "genre:jazz", -1, "strength"),
        ("like", "", None, "must not be empty"),
        ("never", "genre:jazz", 3, "takes no value"),
        ("min", "price", 50, "would exceed its max"),
    ],
)
def test_bad_explicit_preferences_raise_and_change_nothing(rule: str, target: str, value: Any, message: str) -> None:
    _, m = setup()
    before = m.set_preference("u", "max", "price", 20)
    with pytest.raises(penchant.ValidationError, match=message):
        m.set_preference("u", rule, target, value)
    after = m.get("u")
    assert after is not None
    assert after.to_dict() == before.to_dict()


def test_explicit_rules_are_documented_as_filters_or_priors() -> None:
    assert {r for r in ExplicitRule if r.is_hard_filter} == {ExplicitRule.NEVER, ExplicitRule.MIN, ExplicitRule.MAX}
    assert {r for r in ExplicitRule if not r.is_hard_filter} == {ExplicitRule.LIKE, ExplicitRule.DISLIKE}


@st.composite
def histories(draw: st.DrawFn) -> list[Interaction]:
    n = draw(st.integers(0, 60))
    out = []
    for k in range(n):
        attributes: dict[str, Any] = {}
        for name in draw(st.lists(st.sampled_from(["price", "length", "expected_dwell", "year"]), unique=True)):
            attributes[name] = draw(st.one_of(st.floats(-1e6, 1e6), st.integers(0, 100), st.just("text")))
        out.append(
            Interaction(
                f"i{k}",
                "click",
                1.0,
                draw(st.floats(-3, 3)),
                {"f": 1.0},
                attributes,
                MONDAY + draw(st.floats(0, 28 * DAY)),  # type: ignore[arg-type]
                f"e{k}",
                draw(st.sampled_from([3_600.0, 7 * DAY, 90 * DAY])),
            )
        )
    out.sort(key=lambda i: (i.timestamp, i.event_id))
    return out


@given(histories())
@settings(max_examples=150, deadline=None)
def test_numeric_and_temporal_extraction_match_the_numpy_reference(history: list[Interaction]) -> None:
    now = MONDAY + 28 * DAY
    got = PreferenceExtractor().extract(UserProfile("u", interaction_history=history), now)
    numeric = {name: p for name, p in got.items() if p.category is PreferenceCategory.NUMERIC}
    expected_numeric = ref.numeric_preferences(history, now)
    assert numeric.keys() == expected_numeric.keys()
    for name, ((low, median, high), sure) in expected_numeric.items():
        assert numeric[name].value == {"low": low, "median": median, "high": high}
        assert numeric[name].confidence == pytest.approx(sure, rel=1e-9)
    temporal = {name: p for name, p in got.items() if p.category is PreferenceCategory.TEMPORAL}
    expected_temporal = ref.temporal_preferences(history, now)
    assert temporal.keys() == expected_temporal.keys()
    for name, (peaks, sure) in expected_temporal.items():
        assert temporal[name].value == peaks
        assert temporal[name].confidence == pytest.approx(sure, rel=1e-9)


def test_numeric_preferences_skip_events_decayed_beyond_a_floats_range() -> None:
    """Liked events with an hour's half-life four weeks before one with 90 days': their weights
    relative to it are ~1e-202, whose squares are 0.0. Found by hypothesis (a division by zero)."""
    now = MONDAY + 28 * DAY
    old = [
        Interaction(f"i{k}", "click", 1.0, 1.0, {"f": 1.0}, {"price": float(k)}, MONDAY, f"e{k}", 3_600.0)  # type: ignore[arg-type]
        for k in range(6)
    ]
    recent = Interaction("r", "click", 1.0, 1.0, {"f": 1.0}, {}, now, "r", 90 * DAY)  # type: ignore[arg-type]
    history = [*old, recent]
    got = PreferenceExtractor().extract(UserProfile("u", interaction_history=history), now)
    assert "range:price" not in got
    assert ref.numeric_preferences(history, now) == {}
    # One of them recent: it alone carries weight (an effective sample of one).
    fresher = [*old[:-1], Interaction("i5", "click", 1.0, 1.0, {"f": 1.0}, {"price": 5.0}, now, "e5", 3_600.0)]  # type: ignore[arg-type]
    price = PreferenceExtractor().extract(UserProfile("u", interaction_history=fresher), now)["range:price"]
    assert price.confidence == pytest.approx(1 / (1 + 5.0))
    assert ref.numeric_preferences(fresher, now)["range:price"][1] == pytest.approx(price.confidence)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f"]), st.floats(-3, 3), st.floats(0, 20 * DAY)),
        max_size=40,
    ),
    st.integers(1, 4),
)
@settings(max_examples=100, deadline=None)
def test_categorical_extraction_matches_the_reference(events: list[tuple[str, float, float]], top: int) -> None:
    from penchant.feedback_collector import FeedbackType, Signal

    profile = UserProfile("u")
    signals = [
        Signal(f"e{k}", "u", "i", FeedbackType.CLICK, 1.0, w, 7 * DAY, MONDAY + t, {name: 1.0, "shared": 0.5})
        for k, (name, w, t) in enumerate(events)
    ]
    InterestModel(refresh_every=0).apply(profile, signals)
    now = MONDAY + 21 * DAY
    got = {
        p.name: (p.value, p.confidence)
        for p in PreferenceExtractor(max_features=top).extract(profile, now).values()
        if p.category is PreferenceCategory.CATEGORICAL
    }
    expected = ref.categorical_preferences(profile, now, max_features=top)
    assert got.keys() == expected.keys()
    for name, (value, sure) in expected.items():
        assert got[name][0] == pytest.approx(value, rel=1e-12)
        assert got[name][1] == pytest.approx(sure, rel=1e-12)
