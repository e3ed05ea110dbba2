"""ProfileManager: lifecycle, versions and conflicts, export, the serialized form, and merging
an anonymous profile into a known user."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import penchant
from penchant import (
    SCHEMA_VERSION,
    FeedbackCollector,
    FeedbackProcessor,
    InterestModel,
    ProfileManager,
    UserProfile,
)
from penchant.profile_store import InMemoryProfileStore

DAY = 86_400.0
NOW = time.time() - DAY
ITEMS = [
    {"id": f"i{k}", "features": [f"genre:g{k % 4}", f"tag:t{k % 7}"], "attributes": {"price": k}} for k in range(30)
]


def setup(**model: Any) -> tuple[FeedbackCollector, ProfileManager]:
    store = InMemoryProfileStore(model=InterestModel(**model))
    return FeedbackCollector(store, FeedbackProcessor(model=store.model)), ProfileManager(store)


def events(user: str, numbers: range | list[int], kind: str = "click") -> list[dict[str, Any]]:
    return [
        {
            "user_id": user,
            "item": ITEMS[k % 30],
            "feedback_type": kind,
            "timestamp": NOW - (100 - k) * 3_600,
            "event_id": f"evt-{k}",
        }
        for k in numbers
    ]


def test_create_get_and_create_twice() -> None:
    _, m = setup()
    assert m.get("alice") is None
    created = m.create("alice", explicit_preferences={"never:genre:horror": True})
    assert created.version == 1
    assert created.preferences["never:genre:horror"].confidence == 1.0
    fetched = m.get("alice")
    assert fetched is not None
    assert fetched.to_dict() == created.to_dict()
    with pytest.raises(penchant.ConflictError):
        m.create("alice")
    assert m.get_or_create("alice").version == 1
    assert m.get_or_create("bob").version == 1


def test_every_change_raises_the_version_by_one() -> None:
    c, m = setup()
    versions = [m.create("u").version]
    c.record("u", ITEMS[0], "click", timestamp=NOW)
    versions.append(m.get("u").version)  # type: ignore[union-attr]
    c.record_many(events("u", range(5)))
    versions.append(m.get("u").version)  # type: ignore[union-attr]
    versions.append(m.set_preference("u", "like", "genre:g1").version)
    versions.append(m.remove_preference("u", "like", "genre:g1").version)
    versions.append(m.refresh_preferences("u").version)
    profile = m.get("u")
    assert profile is not None
    profile.taste_vector = [0.1, 0.2]
    versions.append(m.update(profile).version)
    versions.append(m.reset("u").version)
    assert versions == list(range(1, 9))
    # No change, no new version.
    assert m.remove_preference("u", "like", "genre:nothing").version == 8
    c.record("u", ITEMS[0], "click", timestamp=NOW, event_id="again")
    c.record("u", ITEMS[0], "click", timestamp=NOW, event_id="again")
    assert m.get("u").version == 9  # type: ignore[union-attr]


def test_update_with_a_stale_version_raises_conflict_and_changes_nothing() -> None:
    c, m = setup()
    c.record_many(events("u", range(3)))
    read = m.get("u")
    assert read is not None
    c.record("u", ITEMS[5], "like", timestamp=NOW)  # someone else changes the profile
    stored = m.get("u")
    assert stored is not None
    read.taste_vector = [1.0]
    with pytest.raises(penchant.ConflictError, match="version"):
        m.update(read, expected_version=read.version)
    assert m.get("u").to_dict() == stored.to_dict()  # type: ignore[union-attr]
    with pytest.raises(penchant.ConflictError):
        m.set_preference("u", "never", "genre:g0", expected_version=read.version)
    with pytest.raises(penchant.ConflictError):
        m.reset("u", expected_version=read.version)
    stored.taste_vector = [1.0]
    assert m.update(stored, expected_version=stored.version).version == stored.version + 1


def test_update_validates_the_profile() -> None:
    _, m = setup()
    profile = m.create("u")
    profile.landmark = float("nan")
    with pytest.raises(penchant.ValidationError, match="landmark"):
        m.update(profile)
    assert m.get("u").landmark == 0.0  # type: ignore[union-attr]


def test_delete_removes_every_trace() -> None:
    c, m = setup()
    c.record_many(events("u", range(10)))
    assert m.delete("u") is True
    assert m.get("u") is None
    assert m.export("u")["profile"] is None
    assert m.delete("u") is False
    # Even the record of which events were applied is gone: the same event ids count anew.
    c.record_many(events("u", range(10)))
    assert m.get("u").event_count == 10  # type: ignore[union-attr]


def test_reset_forgets_what_was_learned() -> None:
    c, m = setup()
    c.record_many(events("u", range(10)))
    m.set_preference("u", "never", "genre:g3")
    before = m.get("u")
    assert before is not None
    profile = m.reset("u")
    assert profile.interests == {}
    assert profile.interaction_history == []
    assert profile.event_count == 0
    assert profile.explicit_preferences == {"never:genre:g3": True}
    assert profile.created_at == before.created_at
    # Events recorded before the reset stay recorded: resending one teaches nothing.
    c.record_many(events("u", range(3)))
    assert m.get("u").interests == {}  # type: ignore[union-attr]
    assert m.reset("u", keep_explicit=False).explicit_preferences == {}
    with pytest.raises(penchant.ValidationError, match="no profile"):
        m.reset("nobody")


def test_export_is_a_json_document_of_everything() -> None:
    c, m = setup()
    c.record_many(events("u", range(12)))
    m.set_preference("u", "max", "price", 20)
    document = m.export("u", now=NOW)
    text = json.dumps(document)
    again = json.loads(text)
    assert again["schema_version"] == SCHEMA_VERSION
    assert again["profile"]["schema_version"] == SCHEMA_VERSION
    assert len(again["profile"]["interaction_history"]) == 12
    assert again["profile"]["explicit_preferences"] == {"max:price": 20.0}
    summary = {entry["feature"]: entry for entry in again["interest_summary"]}
    profile = m.get("u")
    assert profile is not None
    assert summary.keys() == profile.interests.keys()
    for name, weight in profile.interest_weights(NOW).items():
        assert summary[name]["weight"] == pytest.approx(weight)
        assert 0 <= summary[name]["confidence"] < 1
    # The profile part reads back into the same profile.
    assert UserProfile.from_dict(again["profile"]).to_dict() == profile.to_dict()


def test_serialized_form_carries_a_schema_version_and_tolerates_new_fields() -> None:
    c, m = setup()
    c.record_many(events("u", range(5)))
    data = m.get("u").to_dict()  # type: ignore[union-attr]
    data["a_field_from_the_future"] = {"x": 1}
    assert UserProfile.from_dict(data).event_count == 5
    with pytest.raises(penchant.ValidationError, match="schema version 2"):
        UserProfile.from_dict({**data, "schema_version": SCHEMA_VERSION + 1})
    for broken in (
        {"schema_version": 1},
        {**data, "interests": {"f": {"sums": {"+60": -1.0}}}},
        {**data, "created_at": "yesterday"},
        {**data, "interaction_history": [{"item_id": "x"}]},
        [1, 2],
    ):
        with pytest.raises(penchant.ValidationError):
            UserProfile.from_dict(broken)  # type: ignore[arg-type]


# -- merging -----------------------------------------------------------------------------------


def profile_from(all_events: list[dict[str, Any]], **model: Any) -> UserProfile:
    c, m = setup(**model)
    c.record_many(all_events)
    profile = m.get(all_events[0]["user_id"])
    assert profile is not None
    return profile


def assert_same_interests(a: UserProfile, b: UserProfile) -> None:
    wa, wb = a.interest_weights(NOW, explicit=False), b.interest_weights(NOW, explicit=False)
    assert wa.keys() == wb.keys()
    for name, value in wa.items():
        assert wb[name] == pytest.approx(value, rel=1e-9)
    assert {n: i.count for n, i in a.interests.items()} == {n: i.count for n, i in b.interests.items()}


def test_merge_combines_history_and_interests_counting_shared_events_once() -> None:
    c, m = setup()
    c.record_many(events("anon-1", range(0, 12)))
    c.record_many(events("alice", range(8, 20)))  # events 8-11 were recorded under both ids
    m.set_preference("anon-1", "never", "genre:g2")
    m.set_preference("anon-1", "like", "genre:g1")
    m.set_preference("alice", "dislike", "genre:g1")  # alice's own statement wins
    merged = m.merge("anon-1", "alice")
    expected = profile_from(events("alice", range(20)))
    assert_same_interests(merged, expected)
    assert [i.event_id for i in merged.interaction_history] == [f"evt-{k}" for k in range(20)]
    assert merged.event_count == 20
    assert merged.explicit_preferences == {"never:genre:g2": True, "dislike:genre:g1": 20.0}
    assert m.get("anon-1") is None
    # Merging again, or recording an anonymous event again under alice, adds nothing.
    version = merged.version
    assert m.merge("anon-1", "alice").version == version
    c.record_many(events("alice", range(0, 3)))
    assert_same_interests(m.get("alice"), expected)  # type: ignore[arg-type]


def test_merge_keeps_evidence_from_events_that_left_the_history() -> None:
    c, m = setup(max_history=5)
    c.record_many(events("anon-1", range(0, 12)))
    c.record_many(events("alice", range(12, 15)))
    merged = m.merge("anon-1", "alice")
    expected = profile_from(events("alice", range(15)), max_history=5)
    assert_same_interests(merged, expected)
    assert [i.event_id for i in merged.interaction_history] == [i.event_id for i in expected.interaction_history]
    assert merged.event_count == 15
    # A retried merge (the anonymous profile still there) adds nothing twice.
    c.record_many(events("anon-2", range(30, 40)))
    once = m.merge("anon-2", "alice")
    m.store.put(UserProfile("anon-2", interests=dict(once.interests)))
    twice = m.merge("anon-2", "alice")
    assert_same_interests(once, twice)


def test_merge_into_a_new_user_and_from_nobody() -> None:
    c, m = setup()
    c.record_many(events("anon-1", range(6)))
    merged = m.merge("anon-1", "new-user")
    assert_same_interests(merged, profile_from(events("new-user", range(6))))
    assert m.merge("anon-none", "new-user").version == merged.version
    with pytest.raises(penchant.ValidationError, match="itself"):
        m.merge("new-user", "new-user")
    with pytest.raises(penchant.ValidationError):
        m.merge("", "new-user")


@given(
    st.lists(st.sampled_from(["anonymous", "both", "user"]), min_size=1, max_size=30),
    st.randoms(use_true_random=False),
)
@settings(max_examples=40, deadline=None)
def test_merge_counts_nothing_twice(owners: list[str], random: Any) -> None:
    """Whatever events were recorded under the anonymous id, the user's or both, in whatever
    order, the merged profile is the profile of every event once (the anonymous history holds
    all its events here, so every shared event can be recognised)."""
    c, m = setup()
    anonymous_events = events("anon", [k for k, owner in enumerate(owners) if owner != "user"])
    user_events = events("alice", [k for k, owner in enumerate(owners) if owner != "anonymous"])
    random.shuffle(anonymous_events)
    random.shuffle(user_events)
    if anonymous_events:
        c.record_many(anonymous_events)
    if user_events:
        c.record_many(user_events)
    merged = m.merge("anon", "alice")
    expected = profile_from(events("alice", range(len(owners))))
    assert_same_interests(merged, expected)
    assert [i.event_id for i in merged.interaction_history] == [i.event_id for i in expected.interaction_history]
    assert merged.event_count == len(owners)
    # Recording any of the events again, under either id's events, changes nothing.
    c.record_many(events("alice", range(len(owners))))
    assert_same_interests(m.get("alice"), expected)  # type: ignore[arg-type]


def test_a_profile_merged_into_the_anonymous_one_is_not_merged_again() -> None:
    c, m = setup(max_history=3)
    c.record_many(events("anon-a", range(0, 8)))  # five of these leave the history: residual
    kept = m.store.get("anon-a")
    assert kept is not None
    m.merge("anon-a", "anon-b")
    merged = m.merge("anon-b", "alice")
    assert merged.merged_from == ["anon-a", "anon-b"]
    # A retried first merge finds anon-a again (say its delete was lost): nothing is added.
    m.store.put(kept)
    again = m.merge("anon-a", "alice")
    assert_same_interests(again, merged)
    assert again.event_count == merged.event_count == 8


def test_merge_keeps_the_anonymous_taste_vector_only_when_the_user_has_none() -> None:
    _, m = setup()
    m.store.put(UserProfile("anon-1", taste_vector=[1.0, 0.0]))
    m.store.put(UserProfile("anon-2", taste_vector=[0.0, 1.0]))
    assert m.merge("anon-1", "alice").taste_vector == [1.0, 0.0]
    assert m.merge("anon-2", "alice").taste_vector == [1.0, 0.0]
