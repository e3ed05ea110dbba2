"""The seed's data models: fields as the seed gives them, validated on construction."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

import penchant
from penchant.feedback_collector import Signal
from penchant.user_profile import Interest, InterestModel, channel_key, parse_channel_key


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_seed_fields_come_first_and_in_order() -> None:
    assert field_names(penchant.UserProfile)[:7] == [
        "user_id",
        "preferences",
        "interests",
        "interaction_history",
        "explicit_preferences",
        "created_at",
        "updated_at",
    ]
    assert field_names(penchant.Preference)[:6] == ["name", "value", "confidence", "source", "category", "last_updated"]
    assert field_names(penchant.Feedback)[:6] == [
        "user_id",
        "item_id",
        "feedback_type",
        "value",
        "context",
        "timestamp",
    ]


def test_preference_validates_and_coerces() -> None:
    p = penchant.Preference("max_price", 20, 0.9, "explicit", "numeric", last_updated=datetime(2026, 1, 1))
    assert p.source is penchant.PreferenceSource.EXPLICIT
    assert p.category is penchant.PreferenceCategory.NUMERIC
    assert p.last_updated.tzinfo is not None
    with pytest.raises(penchant.ValidationError, match=r"lie in \[0, 1\]"):
        penchant.Preference("x", 1, 1.5, "explicit", "numeric")
    with pytest.raises(ValueError, match="'guess' is not a valid PreferenceSource"):
        penchant.Preference("x", 1, 0.5, "guess", "numeric")


def test_datetimes_become_aware_utc() -> None:
    profile = penchant.UserProfile("u", created_at=datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert profile.created_at == datetime(2026, 1, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["", "x" * 300, "a\nb", 5, None])
def test_user_ids_are_validated(bad: object) -> None:
    with pytest.raises(penchant.ValidationError):
        penchant.UserProfile(bad)  # type: ignore[arg-type]


def test_feedback_parses_types_and_generates_event_ids() -> None:
    f = penchant.Feedback("u", 42, "Click")  # type: ignore[arg-type]
    assert f.feedback_type is penchant.FeedbackType.CLICK
    assert f.item_id == "42"
    assert len(f.event_id) == 32
    assert penchant.Feedback("u", "i", penchant.FeedbackType.RATING, 4.0).event_id != f.event_id
    assert penchant.FeedbackType.RATING.is_explicit
    assert not penchant.FeedbackType.DWELL.is_explicit
    with pytest.raises(penchant.ValidationError, match="unknown feedback type 'stare'"):
        penchant.Feedback("u", "i", "stare")  # type: ignore[arg-type]
    with pytest.raises(penchant.ValidationError, match="finite"):
        penchant.Feedback("u", "i", "rating", float("nan"))


def test_interest_evidence_is_kept_apart_and_decays() -> None:
    interest = Interest("genre:x", sums={channel_key(True, 10.0): 4.0, channel_key(False, 20.0): 2.0})
    assert interest.evidence(now=0.0, landmark=0.0) == (4.0, 2.0)
    assert interest.evidence(now=20.0, landmark=0.0) == (1.0, 1.0)
    assert interest.weight(now=20.0, landmark=0.0) == 0.0
    assert parse_channel_key("-604800") == (False, 604800.0)
    for bad in ["", "x10", "+", "+abc", "+-5"]:
        with pytest.raises(penchant.ValidationError):
            parse_channel_key(bad)
    with pytest.raises(penchant.ValidationError):
        Interest("genre:x", sums={"+10": -1.0})


def signal(event_id: str, t: float, weight: float, features: dict[str, float], half_life: float = 100.0) -> Signal:
    return Signal(event_id, "u", "item", penchant.FeedbackType.CLICK, 1.0, weight, half_life, t, features)


def test_interest_model_applies_forward_decayed_increments() -> None:
    profile = penchant.UserProfile("u", landmark=0.0)
    model = InterestModel(max_history=2)
    model.apply(profile, [signal("1", 0.0, 1.0, {"a": 1.0}), signal("2", 100.0, -2.0, {"a": 0.5, "b": 1.0})])
    weights = profile.interest_weights(100.0)
    assert weights["a"] == pytest.approx(0.5 - 1.0)
    assert weights["b"] == pytest.approx(-2.0)
    assert profile.version == 1
    assert len(profile.interaction_history) == 2
    model.apply(profile, [signal("3", 200.0, 1.0, {"c": 1.0})])
    assert [i.event_id for i in profile.interaction_history] == ["2", "3"]
    assert profile.version == 2


def test_interest_model_rebases_far_future_events_without_changing_values() -> None:
    profile = penchant.UserProfile("u", landmark=0.0)
    model = InterestModel()
    model.apply(profile, [signal("1", 0.0, 1.0, {"a": 1.0}, half_life=1.0)])
    model.apply(profile, [signal("2", 10_000.0, 1.0, {"a": 1.0}, half_life=1.0)])
    assert profile.landmark == 10_000.0
    assert profile.interest_weights(10_000.0)["a"] == pytest.approx(1.0)
