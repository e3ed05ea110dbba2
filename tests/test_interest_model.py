"""InterestModel: forward decay, confidence, positive and negative evidence, history, versions."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import penchant
from penchant.feedback_collector import FeedbackType, Signal
from penchant.user_profile import (
    CONFIDENCE_PRIOR,
    REBASE_EXPONENT,
    Interest,
    InterestModel,
    UserProfile,
    channel_key,
    confidence,
    parse_channel_key,
)

from . import profile_reference as ref

DAY = 86_400.0
WEEK = 7 * DAY
T0 = 1_700_000_000.0


def sig(
    event_id: str,
    features: dict[str, float],
    *,
    weight: float = 1.0,
    t: float = T0,
    half_life: float = WEEK,
    user: str = "u",
) -> Signal:
    return Signal(event_id, user, f"item-{event_id}", FeedbackType.CLICK, 1.0, weight, half_life, t, features)


def model(**kwargs: int) -> InterestModel:
    # No automatic preference extraction unless a test asks: these tests look at interests.
    kwargs.setdefault("refresh_every", 0)
    return InterestModel(**kwargs)


def test_an_interest_halves_every_half_life() -> None:
    profile = UserProfile("u")
    model().apply(profile, [sig("e1", {"genre:jazz": 1.0}, weight=2.0)])
    assert profile.interest_weights(T0)["genre:jazz"] == pytest.approx(2.0)
    assert profile.interest_weights(T0 + WEEK)["genre:jazz"] == pytest.approx(1.0)
    assert profile.interest_weights(T0 + 3 * WEEK)["genre:jazz"] == pytest.approx(0.25)


def test_positive_and_negative_evidence_stay_apart() -> None:
    profile = UserProfile("u")
    model().apply(
        profile,
        [sig("like", {"genre:sci-fi": 1.0}, weight=3.0), sig("dislike", {"genre:sci-fi": 1.0}, weight=-3.0)],
    )
    interest = profile.interests["genre:sci-fi"]
    assert set(interest.sums) == {channel_key(True, WEEK), channel_key(False, WEEK)}
    positive, negative = interest.evidence(T0, profile.landmark)
    assert positive == pytest.approx(3.0)
    assert negative == pytest.approx(3.0)
    # Net zero, and no confidence in either direction; "no opinion" has no interest at all.
    assert interest.weight(T0, profile.landmark) == pytest.approx(0.0, abs=1e-12)
    assert interest.confidence(T0, profile.landmark) == pytest.approx(0.0, abs=1e-12)
    assert "genre:jazz" not in profile.interests


@pytest.mark.parametrize(
    ("positive", "negative", "expected"),
    [(1.0, 0.0, 0.5), (10.0, 0.0, 10 / 11), (0.0, 3.0, 0.75), (5.0, 5.0, 0.0), (4.0, 1.0, 0.5)],
)
def test_confidence_follows_the_documented_formula(positive: float, negative: float, expected: float) -> None:
    assert CONFIDENCE_PRIOR == 1.0
    profile = UserProfile("u")
    signals = []
    if positive:
        signals.append(sig("p", {"f": 1.0}, weight=positive))
    if negative:
        signals.append(sig("n", {"f": 1.0}, weight=-negative))
    model().apply(profile, signals)
    assert profile.interests["f"].confidence(T0, profile.landmark) == pytest.approx(expected)
    assert profile.interest_confidences(T0)["f"] == pytest.approx(expected)
    assert confidence(positive, negative) == pytest.approx(expected)


def test_confidence_grows_with_evidence_and_fades_with_time() -> None:
    profile = UserProfile("u")
    values = []
    for i in range(5):
        model().apply(profile, [sig(f"e{i}", {"f": 1.0})])
        values.append(profile.interest_confidences(T0)["f"])
    assert values == sorted(values)
    assert values[0] == pytest.approx(0.5)
    assert profile.interest_confidences(T0 + 4 * WEEK)["f"] < values[-1]


@st.composite
def signal_lists(draw: st.DrawFn) -> list[Signal]:
    n = draw(st.integers(1, 25))
    out = []
    for i in range(n):
        names = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=3, unique=True))
        weights = draw(st.lists(st.floats(0.1, 2.0), min_size=len(names), max_size=len(names)))
        out.append(
            sig(
                f"e{i}",
                dict(zip(names, weights, strict=True)),
                weight=draw(st.floats(-3, 3).filter(lambda w: abs(w) > 1e-3)),
                # 30 days are 720 half-lives of the shortest channel: more than REBASE_EXPONENT,
                # so the landmark must move, yet short of float64 underflow (2^-1074), where an
                # old event's evidence would vanish differently in the two orders.
                t=T0 + draw(st.floats(0, 30 * DAY)),
                half_life=draw(st.sampled_from([3_600.0, DAY, WEEK])),
            )
        )
    return out


@given(signal_lists())
@settings(max_examples=100, deadline=None)
def test_batch_apply_equals_the_stores_increments_and_direct_decay(signals: list[Signal]) -> None:
    batch = UserProfile("u")
    model().apply(batch, signals)
    one_by_one = UserProfile("u")
    ref.apply_one_by_one(one_by_one, signals)
    now = max(s.timestamp for s in signals)
    expected = ref.direct_interest_weights(signals, now)
    got = batch.interest_weights(now)
    assert got.keys() == one_by_one.interest_weights(now).keys() == expected.keys()
    scale = max(abs(s.weight) for s in signals)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12 * scale)
        assert one_by_one.interest_weights(now)[name] == pytest.approx(value, rel=1e-9, abs=1e-12 * scale)
        assert batch.interests[name].count == one_by_one.interests[name].count


def test_landmark_moves_before_the_exponent_grows_too_large() -> None:
    profile = UserProfile("u")
    hour = 3_600.0
    late = T0 + (REBASE_EXPONENT + 10) * hour
    model().apply(profile, [sig("e1", {"f": 1.0}, t=T0, half_life=hour)])
    first_landmark = profile.landmark
    model().apply(profile, [sig("e2", {"f": 1.0}, t=late, half_life=hour)])
    assert profile.landmark > first_landmark
    expected = 2.0 ** (-(late - T0) / hour) + 1.0
    assert profile.interest_weights(late)["f"] == pytest.approx(expected)
    for total in profile.interests["f"].sums.values():
        assert math.isfinite(total)


def test_history_is_bounded_in_time_order_and_order_free() -> None:
    signals = [sig(f"e{i:02d}", {"f": 1.0}, t=T0 + (i * 7919 % 20) * 60) for i in range(20)]
    forward, backward = UserProfile("u"), UserProfile("u")
    for s in signals:
        model(max_history=5).apply(forward, [s])
    model(max_history=5).apply(backward, list(reversed(signals)))
    ids = [i.event_id for i in forward.interaction_history]
    assert ids == [i.event_id for i in backward.interaction_history]
    assert len(ids) == 5
    times = [i.timestamp for i in forward.interaction_history]
    assert times == sorted(times)
    assert times[0].timestamp() == T0 + 15 * 60
    assert forward.event_count == backward.event_count == 20


def test_each_change_raises_the_version_by_one_and_repeats_change_nothing() -> None:
    profile = UserProfile("u")
    m = model()
    m.apply(profile, [sig("e1", {"f": 1.0}), sig("e1", {"f": 1.0})])
    assert profile.version == 1
    assert profile.interests["f"].count == 1
    m.apply(profile, [])
    assert profile.version == 1
    m.apply(profile, [sig("e2", {"f": 1.0}), sig("e3", {"g": 1.0})])
    assert profile.version == 2
    assert profile.event_count == 3


def test_a_bad_signal_leaves_the_profile_unchanged() -> None:
    profile = UserProfile("u")
    m = model()
    m.apply(profile, [sig("e1", {"f": 1.0})])
    before = profile.to_dict()
    for bad in (
        [sig("e2", {"f": 1.0}), sig("e3", {"f": 1.0}, weight=math.nan)],
        [sig("e2", {"f": 1.0}), sig("e3", {"f": math.inf})],
        [sig("e2", {"f": 1.0}, half_life=0.0)],
        [sig("e2", {"f": 1.0}, t=math.nan)],
        [sig("e2", {"": 1.0})],
        [sig("e2", {"f": 1.0}, user="someone-else")],
    ):
        with pytest.raises(penchant.ValidationError):
            m.apply(profile, bad)
        assert profile.to_dict() == before


@given(st.floats(min_value=1e-3, max_value=1e12, allow_nan=False), st.booleans())
def test_channel_keys_keep_the_exact_half_life(half_life: float, positive: bool) -> None:
    key = channel_key(positive, half_life)
    assert parse_channel_key(key) == (positive, half_life)


def test_channel_keys_of_whole_seconds_are_integers() -> None:
    assert channel_key(True, 604_800.0) == "+604800"
    assert channel_key(False, 30 * DAY) == "-2592000"
    with pytest.raises(penchant.ValidationError):
        parse_channel_key("*604800")
    with pytest.raises(penchant.ValidationError):
        parse_channel_key("+-5")


def test_interest_refuses_negative_or_nan_evidence() -> None:
    with pytest.raises(penchant.ValidationError):
        Interest("f", sums={"+60": -1.0})
    with pytest.raises(penchant.ValidationError):
        Interest("f", sums={"+60": math.nan})


def test_large_batches_pause_the_collector_and_always_restore_it() -> None:
    import gc

    from penchant import _gc

    assert gc.isenabled()
    with _gc.paused(_gc.MIN_BATCH - 1):
        assert gc.isenabled()
    with _gc.paused(_gc.MIN_BATCH):
        assert not gc.isenabled()
        with _gc.paused(10 * _gc.MIN_BATCH):
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _gc.paused(_gc.MIN_BATCH):
        raise RuntimeError("a failing batch")
    assert gc.isenabled()
    gc.disable()
    try:
        with _gc.paused(_gc.MIN_BATCH):
            pass
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
    # A failing large batch through the model leaves the collector on.
    signals = [sig(f"e{i}", {"f": 1.0}) for i in range(_gc.MIN_BATCH)] + [sig("bad", {"f": math.nan})]
    with pytest.raises(penchant.ValidationError):
        model().apply(UserProfile("u"), signals)
    assert gc.isenabled()


@given(signal_lists(), st.integers(0, 8))
@settings(max_examples=100, deadline=None)
def test_one_event_at_a_time_makes_the_same_profile_as_one_batch(signals: list[Signal], max_history: int) -> None:
    """Applying one signal takes a path of its own (no batch kernel); it must add exactly what
    the batch path adds, bit for bit while the landmark stays put, and keep the same history."""
    batch, single = UserProfile("u"), UserProfile("u")
    model(max_history=max_history).apply(batch, sorted(signals, key=lambda s: s.timestamp))
    m = model(max_history=max_history)
    for s in sorted(signals, key=lambda s: s.timestamp):
        m.apply(single, [s])
    now = max(s.timestamp for s in signals)
    first = min(s.timestamp for s in signals)
    # After the first event sets it, the landmark moves again only for an event far past it;
    # one at a time that rescales the sums (rounding), in one batch it does not.
    landmark_stays = all((s.timestamp - first) / s.half_life <= REBASE_EXPONENT for s in signals)
    assert single.interests.keys() == batch.interests.keys()
    scale = max(abs(s.weight) for s in signals)
    for name, interest in batch.interests.items():
        assert single.interests[name].count == interest.count
        assert single.interests[name].last_updated == interest.last_updated
        assert single.interests[name].weight(now, single.landmark) == pytest.approx(
            interest.weight(now, batch.landmark), rel=1e-9, abs=1e-12 * scale
        )
        if landmark_stays:
            assert single.interests[name].sums == interest.sums
    assert [i.__dict__ for i in single.interaction_history] == [i.__dict__ for i in batch.interaction_history]
    assert single.event_count == batch.event_count == len(signals)
    assert single.version == len(signals)


def test_one_event_of_an_unusual_form_takes_the_batch_path_and_is_still_checked() -> None:
    """Ints where floats are usual, a mapping that is not a dict: accepted as the batch path
    accepts them; and a bad single event is refused with the profile unchanged."""
    from types import MappingProxyType

    profile = UserProfile("u")
    m = model()
    m.apply(profile, [Signal("e1", "u", "i1", FeedbackType.CLICK, 1.0, 1, WEEK, T0, {"f": 1})])  # type: ignore[arg-type]
    m.apply(profile, [sig("e2", MappingProxyType({"f": 1.0}))])  # type: ignore[arg-type]
    assert profile.interests["f"].count == 2
    assert profile.interest_weights(T0)["f"] == pytest.approx(2.0)
    before = profile.to_dict()
    for bad in (
        sig("e3", {"\x00": 1.0}),
        sig("e3", {"f": 1.0, "": 1.0}),
        sig("e3", {"f": 1.0}, user="someone-else"),
        sig("e3", {"f": 1.0}, weight=1e308, t=T0 + 2 * WEEK),  # evidence overflows
        Signal("e3", "u", "", FeedbackType.CLICK, 1.0, 1.0, WEEK, T0, {"f": 1.0}),
        Signal("e3", "u", "i3", FeedbackType.CLICK, math.nan, 1.0, WEEK, T0, {"f": 1.0}),
    ):
        with pytest.raises(penchant.ValidationError):
            m.apply(profile, [bad])
        assert profile.to_dict() == before


def test_places_before_says_when_apply_needs_more_than_the_newest_entry() -> None:
    """A store may hand apply the newest history entry alone unless one of the events sorts
    before that entry (by its time in microseconds, then its event id)."""
    m = InterestModel(refresh_every=10, max_history=5)
    profile = UserProfile("u")
    m.apply(profile, [sig("e5", {"a": 1.0}, t=T0 + 5.0)])
    last = profile.interaction_history[-1]
    newer = [sig("e6", {"a": 1.0}, t=T0 + 6.0), sig("e7", {"a": 1.0}, t=T0 + 7.0)]
    assert not m.places_before(last, newer)
    assert not m.places_before(last, [sig("e50", {"a": 1.0}, t=T0 + 5.0)])  # same time, later id
    assert m.places_before(last, [sig("e4", {"a": 1.0}, t=T0 + 5.0)])  # same time, earlier id
    assert m.places_before(last, [*newer, sig("e0", {"a": 1.0}, t=T0 + 4.0)])
    # An event 0.1 µs before the entry falls in its microsecond: then its id decides.
    assert not m.places_before(last, [sig("e9", {"a": 1.0}, t=T0 + 5.0 - 1e-7)])
    assert m.places_before(last, [sig("e0", {"a": 1.0}, t=T0 + 5.0 - 1e-7)])
    assert not m.places_before(None, [sig("e0", {"a": 1.0})])
    assert not InterestModel(max_history=0).places_before(last, [sig("e0", {"a": 1.0}, t=T0)])


def test_refresh_preferences_extracts_at_the_latest_event_time_a_caller_gives() -> None:
    """A store that knows its profile's latest event time passes it (``latest``) instead of
    having the history read through for it; without it, the profile's own is used."""
    m = InterestModel(refresh_every=0)
    profile = UserProfile("u")
    m.apply(profile, [sig(f"e{n}", {"genre:a": 1.0}, t=T0 + 60.0 * n) for n in range(6)])
    later = profile.last_event_time() + 86_400.0  # type: ignore[operator]
    assert m.refresh_preferences(profile, 0, (), crossed=True, latest=later)
    assert profile.preferences
    assert {p.last_updated for p in profile.preferences.values()} == {datetime.fromtimestamp(later, UTC)}
    assert m.refresh_preferences(profile, 0, (), crossed=True)
    stamps = {p.last_updated.timestamp() for p in profile.preferences.values()}
    assert stamps == {profile.last_event_time()}


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0.0, 1e6, T0, 2e9, 2.5e11]),
    st.integers(-3, 3),
    st.integers(-30, 30).map(lambda tenths: tenths * 1e-7) | st.floats(-1e-4, 1e-4),
    st.sampled_from(["e4", "e5", "e6"]),
)
@example(T0, 0, 3e-7, "e4")  # within the entry's microsecond: the id decides
@example(2.5e11, 0, 3.1e-5, "e4")  # the next float, a microsecond past the entry's
def test_places_before_orders_events_as_the_history_does(
    base: float, micros: int, offset: float, event_id: str
) -> None:
    """Whatever the float time (a few microseconds around the newest entry's, at any epoch,
    where a float's ulp may exceed a microsecond), an event is placed before the entry exactly
    when its history key (time in whole microseconds, then event id) sorts before the entry's."""
    m = InterestModel(max_history=5)
    profile = UserProfile("u")
    m.apply(profile, [sig("e5", {"a": 1.0}, t=base + micros * 1e-6)])
    last = profile.interaction_history[-1]
    t = last.timestamp.timestamp() + offset
    expected = (datetime.fromtimestamp(t, UTC), event_id) < (last.timestamp, last.event_id)
    assert m.places_before(last, [sig(event_id, {"a": 1.0}, t=t)]) == expected
