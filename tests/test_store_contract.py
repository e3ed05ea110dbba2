"""The ProfileStore contract, run against every store on the real servers (one shared suite, as
implicit's model tests: a new store passes these or is not a store)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from penchant import ConflictError, ValidationError
from penchant.profile_store import InMemoryProfileStore, ProfileStore
from penchant.user_profile import InterestModel, Preference, UserProfile

from .store_support import (
    STORE_KINDS,
    T0,
    assert_same_interests,
    make_store,
    mixed_signals,
    signal,
)


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ProfileStore:
    with make_store(request.param, tmp_path) as opened:
        yield opened


def reference(signals: list, max_history: int = 50) -> UserProfile:
    memory = InMemoryProfileStore(model=InterestModel(max_history=max_history))
    return memory.apply_feedback(signals[0].user_id, signals)


def test_missing_profile(store: ProfileStore) -> None:
    assert store.get("nobody") is None
    assert store.get_shared("nobody") is None
    assert not store.exists("nobody")
    assert store.get_many(["nobody", "nobody-else"]) == {}
    assert store.delete("nobody") is False


def test_put_versions_and_conflicts(store: ProfileStore) -> None:
    profile = UserProfile(user_id="alice", explicit_preferences={"language": "fr", "max_price": 20})
    profile.preferences["genre"] = Preference("genre", "jazz", 0.9, "explicit", "categorical")
    first = store.put(profile)
    assert first.version == 1
    assert profile.version == 0, "put must not change the caller's object"
    second = store.put(first, expected_version=1)
    assert second.version == 2
    with pytest.raises(ConflictError):
        store.put(first, expected_version=1)
    with pytest.raises(ConflictError):
        store.put(UserProfile(user_id="bob"), expected_version=3)
    assert store.get("bob") is None
    stored = store.get("alice")
    assert stored is not None
    assert stored.version == 2
    assert stored.explicit_preferences == {"language": "fr", "max_price": 20}
    assert stored.preferences["genre"].value == "jazz"
    assert stored.preferences["genre"].confidence == 0.9


def test_get_returns_a_copy_the_caller_owns(store: ProfileStore) -> None:
    store.apply_feedback("alice", mixed_signals("alice", 5))
    first = store.get("alice")
    assert first is not None
    first.interests.clear()
    first.explicit_preferences["x"] = 1
    again = store.get("alice")
    assert again is not None
    assert again.interests, "changing a returned profile changed the store"
    assert "x" not in again.explicit_preferences


def test_apply_feedback_matches_the_in_memory_model_and_is_idempotent(store: ProfileStore) -> None:
    signals = mixed_signals("alice", 40)
    after_first = store.apply_feedback("alice", signals[:25])
    assert after_first.version == 1
    after = store.apply_feedback("alice", signals)  # 25 repeats, 15 new
    assert after.version == 2
    again = store.apply_feedback("alice", signals[10:30])  # all repeats
    assert again.version == 2
    stored = store.get("alice")
    assert stored is not None
    expected = reference(signals)
    assert_same_interests(stored, expected)
    assert stored.interaction_history == expected.interaction_history
    assert stored.landmark == expected.landmark


def test_apply_feedback_moves_the_landmark_like_the_model(store: ProfileStore) -> None:
    hour = 3600.0
    # 300 half-lives apart: the second event is past the rebase threshold of the first landmark.
    signals = [
        signal(1, "alice", half_life=hour, timestamp=T0),
        signal(2, "alice", half_life=hour, timestamp=T0 + 300 * hour, features={"genre:1": 1.0}),
        signal(3, "alice", half_life=30 * 86_400.0, timestamp=T0 + 301 * hour),
    ]
    store.apply_feedback("alice", signals[:1])
    store.apply_feedback("alice", signals[1:])
    stored = store.get("alice")
    assert stored is not None
    expected = reference(signals)
    got = stored.interest_weights(T0 + 302 * hour)
    want = expected.interest_weights(T0 + 302 * hour)
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-300)
    assert all(math.isfinite(v) for i in stored.interests.values() for v in i.sums.values())


def test_apply_feedback_many_and_get_many(store: ProfileStore) -> None:
    batch = mixed_signals("u1", 10) + mixed_signals("u2", 4) + mixed_signals("u3", 1)
    versions = store.apply_feedback_many(batch)
    assert versions == {"u1": 1, "u2": 1, "u3": 1}
    assert store.apply_feedback_many(batch) == {"u1": 1, "u2": 1, "u3": 1}
    found = store.get_many(["u1", "u3", "nobody", "u1"])
    assert sorted(found) == ["u1", "u3"]
    assert_same_interests(found["u1"], reference(mixed_signals("u1", 10)))
    shared = store.get_many(["u2", "nobody"], shared=True)
    assert sorted(shared) == ["u2"]
    assert_same_interests(shared["u2"], reference(mixed_signals("u2", 4)))


def test_apply_feedback_without_signals_stores_nothing(store: ProfileStore) -> None:
    profile = store.apply_feedback("alice", [])
    assert profile.user_id == "alice"
    assert profile.version == 0
    assert store.get("alice") is None


def test_delete_then_recreate(store: ProfileStore) -> None:
    signals = mixed_signals("alice", 6)
    store.apply_feedback("alice", signals)
    assert store.delete("alice") is True
    assert store.get("alice") is None
    assert store.delete("alice") is False
    # Deleting forgets the events too: the same events build the profile anew.
    recreated = store.apply_feedback("alice", signals)
    assert recreated.version == 1
    assert_same_interests(recreated, reference(signals))


def test_bad_signals_change_nothing(store: ProfileStore) -> None:
    store.apply_feedback("alice", mixed_signals("alice", 3))
    before = store.get("alice")
    bad_batches = [
        [*mixed_signals("alice", 3, start=10), signal(99, "bob")],  # another user's signal
        [*mixed_signals("alice", 3, start=20), signal(98, "alice", half_life=0.0)],
        [*mixed_signals("alice", 3, start=30), signal(97, "alice", weight=math.nan)],
        [*mixed_signals("alice", 3, start=40), signal(96, "alice", features={"bad\nname": 1.0})],
    ]
    for bad in bad_batches:
        with pytest.raises(ValidationError):
            store.apply_feedback("alice", bad)
    with pytest.raises(ValidationError):
        store.apply_feedback("alice", signal(1, "alice"))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.apply_feedback_many([*mixed_signals("carol", 2), "not a signal"])  # type: ignore[list-item]
    after = store.get("alice")
    assert after is not None
    assert before is not None
    assert after.version == before.version
    assert_same_interests(after, before)
    assert store.get("carol") is None


def test_invalid_profiles_are_refused(store: ProfileStore) -> None:
    profile = UserProfile(user_id="alice")
    profile.landmark = math.inf  # broken after construction
    with pytest.raises(ValidationError):
        store.put(profile)
    with pytest.raises(ValidationError):
        store.put({"user_id": "alice"})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.put(UserProfile(user_id="alice"), expected_version=-1)
    assert store.get("alice") is None


@pytest.mark.parametrize("bad_id", ["", "line\nbreak", "tab\there", "x" * 10_240, 42, None])
def test_invalid_ids_are_refused(store: ProfileStore, bad_id: object) -> None:
    for call in (
        lambda: store.get(bad_id),  # type: ignore[arg-type]
        lambda: store.delete(bad_id),  # type: ignore[arg-type]
        lambda: store.exists(bad_id),  # type: ignore[arg-type]
        lambda: store.get_many(["ok", bad_id]),  # type: ignore[list-item]
        lambda: store.apply_feedback(bad_id, []),  # type: ignore[arg-type]
        lambda: store.touch(bad_id),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValidationError):
            call()


@pytest.mark.parametrize("odd_id", ["{alice}", "a}b{c", "*", "user:1:profile", "%7B", "ünïcødé", "x" * 250])
def test_ids_with_key_syntax_are_kept_apart(store: ProfileStore, odd_id: str) -> None:
    store.apply_feedback(odd_id, mixed_signals(odd_id, 3))
    store.apply_feedback("plain", mixed_signals("plain", 2))
    found = store.get(odd_id)
    assert found is not None
    assert found.user_id == odd_id
    assert_same_interests(found, reference(mixed_signals(odd_id, 3)))
    plain = store.get("plain")
    assert plain is not None
    assert_same_interests(plain, reference(mixed_signals("plain", 2)))
    assert store.delete(odd_id)
    assert store.get("plain") is not None


def test_async_api_runs_the_same_operations(store: ProfileStore) -> None:
    signals = mixed_signals("alice", 12)

    async def scenario() -> None:
        assert await store.aget("alice") is None
        applied = await store.aapply_feedback("alice", signals[:8])
        assert applied.version == 1
        versions = await store.aapply_feedback_many(signals)
        assert versions == {"alice": 2}
        stored = await store.aget("alice")
        assert stored is not None
        assert_same_interests(stored, reference(signals))
        assert (await store.aget_shared("alice")) is not None
        put = await store.aput(stored, expected_version=2)
        assert put.version == 3
        with pytest.raises(ConflictError):
            await store.aput(stored, expected_version=2)
        assert (await store.aput_many([UserProfile(user_id="bob")]))[0].version == 1
        assert sorted(await store.aget_many(["alice", "bob", "carol"])) == ["alice", "bob"]
        assert await store.aexists("bob")
        assert await store.atouch("bob")
        ttl = await store.attl("bob")
        assert ttl is None or ttl > 0
        assert await store.adelete("bob")
        assert not await store.aexists("bob")

    asyncio.run(scenario())
    # The sync API sees what the async one wrote.
    stored = store.get("alice")
    assert stored is not None
    assert stored.version == 3


def test_async_api_under_concurrency(store: ProfileStore) -> None:
    async def scenario() -> None:
        users = [f"user{i}" for i in range(5)]
        await asyncio.gather(*(store.aapply_feedback(u, mixed_signals(u, 6)) for u in users))
        await asyncio.gather(*(store.aapply_feedback(u, mixed_signals(u, 6, start=6)) for u in users))
        found = await store.aget_many(users)
        for user in users:
            assert_same_interests(found[user], reference(mixed_signals(user, 12)))

    asyncio.run(scenario())


def test_put_many(store: ProfileStore) -> None:
    stored = store.put_many([UserProfile(user_id="a"), UserProfile(user_id="b", explicit_preferences={"k": [1, 2]})])
    assert [p.version for p in stored] == [1, 1]
    again = store.put_many(stored)
    assert [p.version for p in again] == [2, 2]
    b = store.get("b")
    assert b is not None
    assert b.explicit_preferences == {"k": [1, 2]}


def test_touch_and_ttl(store: ProfileStore) -> None:
    assert store.touch("alice") is False
    store.apply_feedback("alice", mixed_signals("alice", 1))
    assert store.touch("alice") is True
    ttl = store.ttl("alice")
    assert ttl is None or 0 < ttl <= 30 * 86_400.0


def test_context_manager_closes(tmp_path: Path) -> None:
    with make_store("sqlite", tmp_path) as opened:
        pass
    from penchant import StoreUnavailableError

    with pytest.raises(StoreUnavailableError):
        opened.get("alice")
