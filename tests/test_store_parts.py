"""The store's parts that need no server, and the ones whose behaviour is easiest to pin alone:
serializer, URLs, TTLs and LRU bounds, the SQLite file, the schema, the sans-I/O runner."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio

import penchant
import penchant.profile_store as profile_store
import penchant.profile_store.serializer as serializer_module
from penchant import StoreUnavailableError, ValidationError
from penchant.profile_store import (
    InMemoryProfileStore,
    KeyTTL,
    PostgresProfileStore,
    ProfileSerializer,
    RedisProfileStore,
    SQLiteProfileStore,
    TieredProfileStore,
    open_database,
    open_store,
    redis_store,
    user_keys,
)
from penchant.profile_store._effects import Effect, run_async, run_sync
from penchant.profile_store.redis_store import parse_cluster_url
from penchant.user_profile import (
    ENCODED_FIELDS,
    REBASE_EXPONENT,
    SCHEMA_VERSION,
    Interaction,
    Interest,
    InterestModel,
    Preference,
    UserProfile,
)

from .store_support import T0, cluster_url, mixed_signals, new_tenant, postgres_url, redis_url, signal


def rich_profile() -> UserProfile:
    store = InMemoryProfileStore(model=InterestModel(max_history=10))
    profile = store.apply_feedback("alice", mixed_signals("alice", 15))
    profile.preferences["genre"] = Preference("genre", ["jazz", "soul"], 0.8, "implicit", "categorical")
    profile.explicit_preferences = {"language": "fr", "nested": {"a": [1, 2.5, None]}}
    profile.taste_vector = [0.25, -1.0, 3.5]
    return profile


# -- serializer ----------------------------------------------------------------------------------


def test_serializer_round_trip_keeps_everything() -> None:
    serializer = ProfileSerializer()
    profile = rich_profile()
    decoded = serializer.decode(serializer.encode(profile))
    assert decoded == profile
    assert type(decoded) is UserProfile
    assert all(type(i) is Interest for i in decoded.interests.values())
    assert type(decoded.preferences["genre"]) is Preference
    assert decoded.preferences["genre"].source is penchant.PreferenceSource.IMPLICIT


def test_a_document_writes_preferences_still_encoded_as_they_are() -> None:
    """encode_document of a decoded profile whose preferences nobody read copies their bytes
    (decoding them only to encode them again cost most of the call): the same document as once
    they are read, and the profile's own copy stays encoded."""
    serializer = ProfileSerializer()
    data = serializer.encode(rich_profile())
    unread = serializer.decode(data)
    document = serializer.encode_document(unread)
    assert "preferences" not in vars(unread)
    assert vars(unread)[ENCODED_FIELDS]["preferences"].raw is not None  # never decoded
    read = serializer.decode(data)
    assert read.preferences
    assert serializer.encode_document(read) == document
    assert serializer.decode(document).preferences == read.preferences


def test_serializer_round_trip_through_redis_parts() -> None:
    serializer = ProfileSerializer()
    profile = rich_profile()
    fields = serializer.interest_fields(profile)
    members = sorted(serializer.history_member(i) for i in profile.interaction_history)
    state = [
        str(profile.version).encode(),
        repr(profile.landmark).encode(),
        repr(profile.updated_at.timestamp()).encode(),
        str(profile.event_count).encode(),
        serializer.encode_document(profile),
        b"\x1e".join(part.encode() for item in fields.items() for part in item),
        members,
    ]
    decoded, snapshot = serializer.decode_state(state)
    assert "interaction_history" not in vars(decoded), "the history is decoded when first read"
    assert decoded == profile
    assert type(decoded.interaction_history[0]) is Interaction
    assert all(type(i) is Interest for i in decoded.interests.values())
    # Members sort like the model's history: by time, then event id.
    assert [i.event_id for i in decoded.interaction_history] == [i.event_id for i in profile.interaction_history]
    # The snapshot made from the parts (without decoding the history) is the profile's own.
    assert snapshot == serializer.encode_snapshot(profile)
    meta = {"version": state[0], "landmark": state[1], "updated_at": state[2], "event_count": state[3]}
    from_snapshot = serializer.decode_snapshot(snapshot, **meta)
    assert "interaction_history" not in vars(from_snapshot)
    assert from_snapshot == profile
    assert all(type(i) is Interest for i in from_snapshot.interests.values())
    # The snapshot holds the landmark, updated_at and event count as the hash gives them.
    assert serializer.decode_snapshot(snapshot, version=state[0]) == from_snapshot
    empty = UserProfile(user_id="bob")
    assert serializer.decode_snapshot(serializer.encode_snapshot(empty), **meta).interaction_history == []
    assert serializer.decode_snapshot(serializer.encode_snapshot(empty), version=1).interaction_history == []


def test_decoding_leaves_the_history_encoded_until_it_is_read() -> None:
    serializer = ProfileSerializer()
    profile = rich_profile()
    decoded = serializer.decode(serializer.encode(profile))
    assert "interaction_history" not in vars(decoded)
    assert decoded.interaction_history == profile.interaction_history
    assert all(type(i) is Interaction for i in decoded.interaction_history)
    assert "interaction_history" in vars(decoded)
    # An empty history needs no decoding later; a stored profile without the field (not
    # written by penchant) gets the default.
    empty = serializer.decode(serializer.encode(UserProfile(user_id="bob")))
    assert vars(empty)["interaction_history"] == []
    raw = msgspec.msgpack.decode(serializer.encode(profile))
    del raw["profile"]["interaction_history"]
    assert serializer.decode(msgspec.msgpack.encode(raw)).interaction_history == []


def test_snapshot_frames_its_doc_interests_and_history_as_bytes() -> None:
    """A reader skips the doc, the interests and the history without walking them; the frames
    hold what encode_document, the interests and the history entries encode. The meta is what
    a read of the profile's hash gives."""
    serializer = ProfileSerializer()
    profile = rich_profile()
    profile.updated_at = datetime(2024, 5, 6, 7, 8, 9, 123457, tzinfo=UTC)
    document, interests, history, meta = msgspec.msgpack.decode(serializer.encode_snapshot(profile))
    assert document == serializer.encode_document(profile)
    assert interests == msgspec.msgpack.encode(profile.interests)
    entries = msgspec.msgpack.decode(history)
    assert [e["event_id"] for e in entries] == [i.event_id for i in profile.interaction_history]
    read_back = serializer.decode_snapshot(
        serializer.encode_snapshot(profile),
        version=1,
        landmark=repr(float(profile.landmark)).encode(),
        updated_at=repr(profile.updated_at.timestamp()).encode(),
        event_count=str(profile.event_count).encode(),
    )
    assert meta == [read_back.landmark, read_back.updated_at, read_back.event_count]
    assert meta == [profile.landmark, profile.updated_at, profile.event_count]


def test_snapshot_decoding_reads_the_earlier_forms_and_ignores_later_elements() -> None:
    serializer = ProfileSerializer()
    profile = rich_profile()
    document = serializer.encode_document(profile)
    history = msgspec.msgpack.encode(profile.interaction_history)
    meta = {"version": 3, "landmark": repr(profile.landmark), "updated_at": "1700000000.5", "event_count": 15}
    expected = serializer.decode_snapshot(serializer.encode_snapshot(profile), **meta)
    assert expected.interaction_history == profile.interaction_history
    interests = msgspec.msgpack.encode(profile.interests)
    # The first snapshots held the doc and the history inline, as a map and an array; later
    # ones the interests inline, as a map; then none held the landmark, updated_at and event
    # count (they come from the hash).
    inline = b"\x93" + document + interests + history
    unframed = msgspec.msgpack.encode([document, msgspec.Raw(interests), history])
    without_meta = msgspec.msgpack.encode([document, interests, history])
    for earlier in (inline, unframed, without_meta):
        decoded = serializer.decode_snapshot(earlier, **meta)
        assert "interests" not in vars(decoded)
        assert decoded == expected
        assert type(decoded.preferences["genre"]) is Preference
        assert all(type(i) is Interest for i in decoded.interests.values())
        assert all(type(i) is Interaction for i in decoded.interaction_history)
        with pytest.raises(ValidationError, match="holds no landmark"):
            serializer.decode_snapshot(earlier, version=3)
    # A later format may append elements: this one reads the four it knows.
    snapshot_meta = [profile.landmark, datetime.fromtimestamp(1700000000.5, UTC), 15]
    later = msgspec.msgpack.encode([document, interests, history, snapshot_meta, {"new": 1}])
    assert serializer.decode_snapshot(later, **meta) == expected
    assert serializer.decode_snapshot(later, version=3) == expected
    for bad in (b"\x93\xc4", b"\x92\xa1x\xa1y", b"\x93\x01\x02"):
        with pytest.raises(ValidationError, match="cannot be decoded"):
            serializer.decode_snapshot(bad, **meta)
    # Damaged interests are kept encoded like the rest, and refused when read.
    for damaged_interests in (msgspec.msgpack.encode({"x": 1}), msgspec.Raw(msgspec.msgpack.encode({"x": 1}))):
        damaged = serializer.decode_snapshot(msgspec.msgpack.encode([document, damaged_interests, history]), **meta)
        with pytest.raises(ValidationError, match="stored interests cannot be decoded"):
            _ = damaged.interests


ENCODED = ("preferences", "interests", "interaction_history")


def redis_state(serializer: ProfileSerializer, profile: UserProfile) -> list[Any]:
    """The parts a Redis script sends for ``profile`` (see ``ProfileSerializer.decode_state``)."""
    fields = serializer.interest_fields(profile)
    return [
        str(profile.version).encode(),
        repr(profile.landmark).encode(),
        repr(profile.updated_at.timestamp()).encode(),
        str(profile.event_count).encode(),
        serializer.encode_document(profile),
        b"\x1e".join(part.encode() for item in fields.items() for part in item),
        sorted(serializer.history_member(i) for i in profile.interaction_history),
    ]


def decode_paths(serializer: ProfileSerializer, profile: UserProfile) -> dict[str, Callable[[], UserProfile]]:
    """Every way a store decodes ``profile``, each making a new profile per call, by the
    fields each leaves encoded (the parts' interests are read in Rust, for the snapshot)."""
    encoded = serializer.encode(profile)
    snapshot = serializer.encode_snapshot(profile)
    state = redis_state(serializer, profile)
    meta = dict(zip(("version", "landmark", "updated_at", "event_count"), state[:4], strict=True))
    return {
        "decode": lambda: serializer.decode(encoded),
        "decode_snapshot": lambda: serializer.decode_snapshot(snapshot, version=state[0]),
        "decode_snapshot_with_meta": lambda: serializer.decode_snapshot(snapshot, **meta),  # type: ignore[arg-type]
        "decode_state": lambda: serializer.decode_state(state)[0],
    }


LEFT_ENCODED = {
    "decode": ENCODED,
    "decode_snapshot": ENCODED,
    "decode_snapshot_with_meta": ENCODED,
    "decode_state": ("preferences", "interaction_history"),
}


def eager(serializer: ProfileSerializer, profile: UserProfile) -> UserProfile:
    """``profile`` decoded with every field made at once (and every check of the classes)."""
    return serializer.checked_copy(profile)[0]


@pytest.mark.parametrize("path", list(LEFT_ENCODED))
def test_every_decode_path_leaves_the_big_fields_encoded_until_read(path: str) -> None:
    serializer = ProfileSerializer()
    profile = rich_profile()
    expected = eager(serializer, profile)
    decode = decode_paths(serializer, profile)[path]
    decoded = decode()
    for name in LEFT_ENCODED[path]:
        assert name not in vars(decoded), f"{name} is decoded when first read"
    assert decoded == expected
    assert repr(decoded) == repr(expected)
    assert all(name in vars(decoded) for name in ENCODED)
    assert "_encoded_fields" not in vars(decoded), "the map of encoded fields goes once all are read"
    # Each field alone, with the public classes (not the decoder's subclasses).
    for name in ENCODED:
        alone = decode()
        value = getattr(alone, name)
        assert value == getattr(expected, name)
        assert getattr(alone, name) is value, "decoded once"
    alone = decode()
    assert all(type(p) is Preference for p in alone.preferences.values())
    assert alone.preferences["genre"].source is penchant.PreferenceSource.IMPLICIT
    assert all(type(i) is Interest for i in decode().interests.values())
    assert all(type(i) is Interaction for i in decode().interaction_history)
    # What reads the interests in Rust, and ranking, read the encoded ones alike.
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert decode().interest_weights(now) == expected.interest_weights(now)
    items = [{"id": f"i{n}", "score": 0.5, "features": [f"genre:{n}", f"tag:{n % 3}"]} for n in range(12)]
    assert [r.id for r in penchant.rank_items(decode(), items, now=now)] == [
        r.id for r in penchant.rank_items(expected, items, now=now)
    ]


@pytest.mark.parametrize("path", list(LEFT_ENCODED))
def test_a_value_assigned_to_an_encoded_field_wins(path: str) -> None:
    serializer = ProfileSerializer()
    profile = rich_profile()
    decode = decode_paths(serializer, profile)[path]
    decoded = decode()
    mine = Preference("mine", 1, 0.5, "explicit", "categorical")
    decoded.preferences = {"mine": mine}
    decoded.interests = {}
    assert decoded.preferences == {"mine": mine}
    assert decoded.interests == {}
    assert decoded.interaction_history == profile.interaction_history  # still encoded until here
    assert "_encoded_fields" not in vars(decoded)
    for copy_ in (copy.copy(decoded), copy.deepcopy(decoded), serializer.decode(serializer.encode(decoded))):
        assert copy_.preferences == {"mine": mine}
        assert copy_.interests == {}
        assert copy_ == decoded
    # Assigned while another field is still encoded: the copies keep both right.
    other = decode()
    other.interaction_history = []
    for copy_ in (copy.copy(other), copy.deepcopy(other), serializer.decode(serializer.encode(other))):
        assert copy_.interaction_history == []
        assert copy_.preferences == profile.preferences
    # The model's own updates replace and change them in place.
    refreshed = decode()
    InterestModel().apply(refreshed, mixed_signals("alice", 3, start=100))
    expected = eager(serializer, profile)
    InterestModel().apply(expected, mixed_signals("alice", 3, start=100))
    refreshed.updated_at = expected.updated_at  # the time of the update
    assert refreshed == expected


@pytest.mark.parametrize("path", list(LEFT_ENCODED))
def test_copies_and_encodings_of_a_profile_with_encoded_fields(path: str) -> None:
    serializer = ProfileSerializer()
    profile = rich_profile()
    expected = eager(serializer, profile)
    decode = decode_paths(serializer, profile)[path]
    # A shallow copy shares each field with its original, whichever of them reads it first.
    decoded = decode()
    shallow = copy.copy(decoded)
    assert shallow.interests is decoded.interests
    assert decoded.preferences is shallow.preferences
    assert shallow.interaction_history is decoded.interaction_history
    # A deep copy is equal and shares nothing, read before or after the original.
    for read_first in (False, True):
        decoded = decode()
        if read_first:
            assert decoded == expected
        deep = copy.deepcopy(decoded)
        assert deep == expected
        assert decoded == expected
        for name in ENCODED:
            assert getattr(deep, name) is not getattr(decoded, name)
        deep.interests["genre:1"].sums.clear()
        deep.preferences.clear()
        deep.interaction_history[0].features.clear()
        assert decoded == expected
    # Encoded again before any field is read: the same bytes and the same profile.
    for encode in (serializer.encode, serializer.encode_snapshot, serializer.encode_document):
        assert encode(decode()) == encode(expected)
    assert msgspec.msgpack.encode(decode()) == msgspec.msgpack.encode(expected)
    assert serializer.decode(serializer.encode(decode())) == expected
    assert serializer.checked_copy(decode())[0] == expected
    assert dataclasses.replace(decode(), version=9) == dataclasses.replace(expected, version=9)
    assert dataclasses.asdict(decode()) == dataclasses.asdict(expected)
    assert decode().to_dict() == expected.to_dict()


def test_damaged_encoded_fields_are_refused_when_read() -> None:
    serializer = ProfileSerializer()
    profile = rich_profile()
    raw = msgspec.msgpack.decode(serializer.encode(profile))
    raw["profile"]["preferences"] = {"genre": {"name": "genre", "confidence": "high"}}
    raw["profile"]["interests"] = {"genre:1": [1, 2]}
    raw["profile"]["interaction_history"] = [{"item_id": 5}]
    damaged = serializer.decode(msgspec.msgpack.encode(raw))
    assert damaged.user_id == "alice"
    for name, what in (("preferences", "preferences"), ("interests", "interests"), ("interaction_history", "history")):
        for _ in range(2):  # refused on every read, not once
            with pytest.raises(ValidationError, match=f"stored {what} cannot be decoded"):
                getattr(damaged, name)
    with pytest.raises(ValidationError, match="stored preferences cannot be decoded"):
        copy.deepcopy(damaged).preferences  # noqa: B018
    # Bytes that are not MessagePack at all are refused at once: the fields cannot be skipped.
    encoded = serializer.encode(profile)
    with pytest.raises(ValidationError, match="cannot be decoded"):
        serializer.decode(encoded[: len(encoded) // 3])
    snapshot = serializer.encode_snapshot(profile)
    with pytest.raises(ValidationError, match="snapshot cannot be decoded"):
        serializer.decode_snapshot(snapshot[:-10], version=1, landmark=0, updated_at=0, event_count=1)


def read_in_two_threads(
    targets: tuple[UserProfile, UserProfile], name: str, monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    """``getattr(target, name)`` of each target in a thread of its own, both threads decoding
    at once: a barrier holds each inside the decoder until both have decoded."""
    barrier = threading.Barrier(2, timeout=10)
    original = serializer_module._Field.decode

    def decode_together(self: Any, raw: Any) -> Any:
        value = original(self, raw)
        barrier.wait()
        return value

    monkeypatch.setattr(serializer_module._Field, "decode", decode_together)
    got: list[Any] = []
    errors: list[BaseException] = []

    def read(target: UserProfile) -> None:
        try:
            got.append(getattr(target, name))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.setattr(serializer_module._Field, "decode", original)
    assert not errors
    assert len(got) == 2
    return got


THREADED = [(path, name) for path, names in LEFT_ENCODED.items() for name in names]


@pytest.mark.parametrize(("path", "name"), THREADED)
def test_two_threads_reading_an_encoded_field_first_get_one_object(
    path: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both end with the one value the profile keeps, as readers of a shared (read-only)
    profile need."""
    serializer = ProfileSerializer()
    profile = rich_profile()
    decoded = decode_paths(serializer, profile)[path]()
    first, second = read_in_two_threads((decoded, decoded), name, monkeypatch)
    assert first is second
    assert vars(decoded)[name] is first
    assert first == getattr(eager(serializer, profile), name)


@pytest.mark.parametrize(("path", "name"), THREADED)
def test_a_shallow_copy_and_its_original_read_in_two_threads_share_the_field(
    path: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    serializer = ProfileSerializer()
    profile = rich_profile()
    decoded = decode_paths(serializer, profile)[path]()
    shallow = copy.copy(decoded)
    first, second = read_in_two_threads((decoded, shallow), name, monkeypatch)
    assert first is second
    assert vars(decoded)[name] is vars(shallow)[name] is first
    assert first == getattr(eager(serializer, profile), name)


def test_serializer_tolerates_unknown_and_missing_fields() -> None:
    serializer = ProfileSerializer()
    raw = msgspec.msgpack.decode(serializer.encode(rich_profile()))
    raw["profile"]["added_by_a_newer_penchant"] = {"x": 1}
    raw["profile"]["interaction_history"][0]["new_field"] = [1, 2]
    raw["profile"]["interests"]["genre:1"]["confidence"] = 0.5
    del raw["profile"]["taste_vector"]  # written by an older penchant
    decoded = serializer.decode(msgspec.msgpack.encode(raw))
    assert decoded.user_id == "alice"
    assert decoded.taste_vector is None
    assert decoded.interests["genre:1"].sums


def test_serializer_reads_a_newer_schema_best_effort() -> None:
    serializer = ProfileSerializer()
    raw = msgspec.msgpack.decode(serializer.encode(rich_profile()))
    raw["schema"] = SCHEMA_VERSION + 1
    raw["profile"]["version"] = "seven"  # a field whose type changed: refused clearly
    with pytest.raises(ValidationError, match="cannot be decoded"):
        serializer.decode(msgspec.msgpack.encode(raw))


def test_serializer_enforces_size_limits() -> None:
    serializer = ProfileSerializer(max_profile_bytes=4096)
    profile = UserProfile(user_id="alice", explicit_preferences={"blob": "x" * 10_000})
    with pytest.raises(ValidationError, match="limit"):
        serializer.encode(profile)
    with pytest.raises(ValidationError, match="limit"):
        serializer.decode(b"\x00" * 5000)
    with pytest.raises(ValidationError):
        ProfileSerializer(max_profile_bytes=10)
    big_context = signal(1)
    object.__setattr__(big_context, "context", {"blob": "x" * 100_000})
    with pytest.raises(ValidationError, match="limit"):
        serializer.encode_signal(big_context)


def test_serializer_encodes_a_profile_apart_from_its_history_and_checks_the_whole() -> None:
    """An SQL store's snapshot body without the history, with the size of the whole encoding
    (never made) checked against the limit; the body and the packed history decode to the
    profile."""
    serializer = ProfileSerializer()
    profile = rich_profile()
    assert profile.interaction_history
    history = serializer.pack_history([serializer.encode_interaction(i) for i in profile.interaction_history])
    body, size = serializer.encode_apart(profile, history)
    assert size == len(serializer.encode(profile))
    assert serializer.decode_with_history(body, history) == serializer.decode(serializer.encode(profile))
    assert ProfileSerializer(max_profile_bytes=size).encode_apart(profile, history) == (body, size)
    with pytest.raises(ValidationError, match=f"is {size} bytes encoded; the limit is {size - 1}"):
        ProfileSerializer(max_profile_bytes=size - 1).encode_apart(profile, history)


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"\x92\x01", msgspec.msgpack.encode({"schema": 1})])
def test_serializer_refuses_garbage(garbage: bytes) -> None:
    with pytest.raises(ValidationError):
        ProfileSerializer().decode(garbage)


def test_serializer_refuses_values_msgpack_cannot_hold() -> None:
    profile = UserProfile(user_id="alice", explicit_preferences={"callback": object()})
    with pytest.raises(ValidationError):
        ProfileSerializer().encode(profile)
    store = InMemoryProfileStore()
    with pytest.raises(ValidationError):
        store.put(profile)
    assert store.get("alice") is None


def test_signals_round_trip() -> None:
    serializer = ProfileSerializer()
    original = signal(3, "alice")
    encoded = serializer.encode_signal(original)
    assert serializer.decode_signal(encoded) == original
    assert msgspec.msgpack.decode(encoded)["schema"] == SCHEMA_VERSION
    # Mappings other than dicts take the general path and read back as dicts.
    proxied = dataclasses.replace(original, features=MappingProxyType({"genre:x": 1.0}), context={"page": 2})
    back = serializer.decode_signal(serializer.encode_signal(proxied))
    assert back.features == {"genre:x": 1.0}
    assert back.context == {"page": 2}
    assert msgspec.msgpack.decode(serializer.encode_signal(proxied))["schema"] == SCHEMA_VERSION
    with pytest.raises(ValidationError, match="cannot be stored"):
        serializer.encode_signal(dataclasses.replace(original, context={"bad": object()}))


def test_no_pickle_anywhere_in_the_store() -> None:
    source = Path(profile_store.__file__).parent
    for path in source.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"import (c?pickle|marshal|shelve)|(pickle|marshal)\.(loads?|dumps?|Unpickler)", text), (
            path
        )
        assert not re.search(r"(?<![A-Za-z_])(eval|exec)\(", text), path


# -- keys and URLs ----------------------------------------------------------------------------------


def test_keys_share_one_hash_tag_and_escape_key_syntax() -> None:
    keys = user_keys("acme", "u:{1}%")
    assert keys == (
        "penchant:{acme:u%3A%7B1%7D%25}:profile",
        "penchant:{acme:u%3A%7B1%7D%25}:interests",
        "penchant:{acme:u%3A%7B1%7D%25}:history",
        "penchant:{acme:u%3A%7B1%7D%25}:events",
    )
    assert user_keys("a:b", "c") != user_keys("a", "b:c")
    with pytest.raises(ValidationError):
        user_keys("acme", "x" * 300)


def test_cluster_urls() -> None:
    nodes, options = parse_cluster_url("rediss+cluster://user:p%40ss@10.0.0.1:7000,[::1]:7001")
    assert nodes == [("10.0.0.1", 7000), ("::1", 7001)]
    assert options == {"ssl": True, "username": "user", "password": "p@ss"}
    # A redis:// URL's options, read as redis-py reads them.
    _, options = parse_cluster_url(
        "rediss+cluster://h:1,h:2/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=none&socket_timeout=3"
    )
    assert options == {"ssl": True, "ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "none", "socket_timeout": 3.0}
    assert parse_cluster_url("redis+cluster://h:1")[1] == {"ssl": False}
    for bad in ["redis+cluster://nohost", "redis+cluster://h:1/2", "redis+cluster://h:1?socket_timeout=soon"]:
        with pytest.raises(ValidationError):
            parse_cluster_url(bad)


def test_database_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    relative = open_database("sqlite:///rel/p.db")
    assert isinstance(relative, SQLiteProfileStore)
    assert relative.path == "rel/p.db"
    absolute = open_database(f"sqlite:///{tmp_path}/a.db?synchronous=normal")
    assert absolute.path == f"{tmp_path}/a.db"
    assert isinstance(open_database("postgresql://u@h:5/db"), PostgresProfileStore)
    assert isinstance(open_database("postgres://u@h:5/db"), PostgresProfileStore)
    for bad in ["mysql://x", "sqlite://host/p.db", "sqlite:///", "sqlite:///p.db?journal=off", "nonsense"]:
        with pytest.raises(ValidationError):
            open_database(bad)
    with pytest.raises(ValidationError):
        open_store("http://localhost", f"sqlite:///{tmp_path}/x.db")


def test_sqlite_page_cache_is_64_mib_unless_the_url_or_the_caller_says(tmp_path: Path) -> None:
    def cache_kib(store: SQLiteProfileStore) -> int:
        store.apply_feedback("alice", mixed_signals("alice", 1))  # opens the connection
        (size,) = store._db._connect().execute("PRAGMA cache_size").fetchone()  # type: ignore[attr-defined]
        store.close()
        return -int(size)

    assert cache_kib(SQLiteProfileStore(tmp_path / "default.db")) == 64 * 1024
    assert cache_kib(SQLiteProfileStore(tmp_path / "small.db", cache_mib=3)) == 3 * 1024
    url = f"sqlite:///{tmp_path}/url.db?synchronous=normal&cache_mib=256"
    assert cache_kib(open_database(url)) == 256 * 1024  # type: ignore[arg-type]
    for bad in ["0", "-1", "1.5", "x", "2000000", "9" * 5000, "\u0663"]:
        with pytest.raises(ValidationError, match="cache_mib"):
            open_database(f"sqlite:///{tmp_path}/bad.db?cache_mib={bad}")
    for value in [0, -1, 1.5, "64", True, None]:
        with pytest.raises(ValidationError, match="cache_mib"):
            SQLiteProfileStore(tmp_path / "bad.db", cache_mib=value)  # type: ignore[arg-type]


def test_embedded_default_is_a_cache_and_a_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PENCHANT_REDIS_URL", raising=False)
    monkeypatch.delenv("PENCHANT_DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with open_store() as store:
        assert isinstance(store, TieredProfileStore)
        assert store.redis is None
        assert store.cache is not None
        assert isinstance(store.database, SQLiteProfileStore)
        store.apply_feedback("alice", mixed_signals("alice", 2))
    # In the user's data directory, not in the working directory.
    default = tmp_path / "data" / "penchant" / "penchant.db"
    assert default.exists()
    assert not (tmp_path / "penchant.db").exists()
    with sqlite3.connect(default) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT version FROM penchant_schema").fetchone()[0] == store.database.schema_version
    monkeypatch.setenv("PENCHANT_DATABASE_URL", f"sqlite:///{tmp_path}/from-env.db")
    with open_store(cache=False) as store:
        assert store.cache is None
        store.apply_feedback("alice", mixed_signals("alice", 1))
    assert (tmp_path / "from-env.db").exists()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with SQLiteProfileStore(tmp_path / "p.db") as store:
        store.put(UserProfile(user_id="alice"))
    with sqlite3.connect(tmp_path / "p.db") as connection:
        connection.execute("UPDATE penchant_schema SET version = 99")
    with SQLiteProfileStore(tmp_path / "p.db") as store, pytest.raises(StoreUnavailableError, match="newer"):
        store.get("alice")


def test_sqlite_opens_a_database_while_another_connection_writes_to_it(tmp_path: Path) -> None:
    """Switching a new database to WAL needs an exclusive lock, and SQLite answers "database is
    locked" at once, without its busy timeout, while another connection holds a write lock (as
    when processes open a new database together): the store tries again until it is free."""
    path = tmp_path / "busy.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.3, other.execute, ("COMMIT",))
    release.start()
    try:
        with SQLiteProfileStore(path) as store:
            assert store.apply_feedback("alice", mixed_signals("alice", 2)).version == 1
    finally:
        release.join()
        other.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_two_processes_share_a_sqlite_file(tmp_path: Path) -> None:
    with SQLiteProfileStore(tmp_path / "p.db") as first, SQLiteProfileStore(tmp_path / "p.db") as second:
        first.apply_feedback("alice", mixed_signals("alice", 3))
        second.apply_feedback("alice", mixed_signals("alice", 6))
        found = first.get("alice")
        assert found is not None
        assert found.version == 2
        assert len(found.interaction_history) == 6


def test_tiers_must_agree(tmp_path: Path) -> None:
    database = SQLiteProfileStore(tmp_path / "p.db", tenant="a")
    with pytest.raises(ValidationError, match="tenant"):
        TieredProfileStore(database, cache=InMemoryProfileStore(tenant="b", model=database.model))
    with pytest.raises(ValidationError, match="InterestModel"):
        TieredProfileStore(database, cache=InMemoryProfileStore(tenant="a"))
    with pytest.raises(ValidationError):
        TieredProfileStore(InMemoryProfileStore())  # type: ignore[arg-type]
    database.close()


# -- TTL and bounds ---------------------------------------------------------------------------------


def _versioned(user_id: str, version: int) -> UserProfile:
    profile = UserProfile(user_id=user_id)
    profile.version = version
    return profile


def test_the_cache_refuses_a_copy_that_an_invalidation_made_stale_while_it_was_read() -> None:
    """A read that began before an invalidation was handled (by another thread or task) must
    not cache what it read, if the invalidation announced a newer version or a deletion."""
    cache = InMemoryProfileStore()
    since = cache.mark()
    cache.forget("alice", below_version=3)  # handled while alice's read was in flight
    cache.remember(_versioned("alice", 2), since=since)
    assert cache.lookup("alice", shared=False) is None
    cache.remember(_versioned("alice", 3), since=since)  # as new as announced: kept
    assert cache.lookup("alice", shared=False).version == 3  # type: ignore[union-attr]
    cache.remember(_versioned("bob", 1), since=since)  # nobody said anything about bob
    assert cache.lookup("bob", shared=False) is not None

    since = cache.mark()
    cache.forget("carol")  # a deletion: no version read before it may come back
    cache.forget("carol", below_version=1)  # a new profile since: the deletion still counts
    cache.remember(_versioned("carol", 9), since=since)
    assert cache.lookup("carol", shared=False) is None
    cache.remember(_versioned("carol", 1), since=cache.mark())  # a read that began afterwards
    assert cache.lookup("carol", shared=False) is not None
    cache.forget("carol")  # no longer cached
    since = cache.mark()  # a read of the re-created profile begins
    cache.forget("carol", below_version=2)  # meanwhile version 2 is announced
    cache.remember(_versioned("carol", 2), since=since)  # what it read: as new, kept
    assert cache.lookup("carol", shared=False).version == 2  # type: ignore[union-attr]

    since = cache.mark()
    cache.clear()  # messages may have been missed: every read in flight is suspect
    cache.remember(_versioned("dave", 5), since=since)
    assert cache.lookup("dave", shared=False) is None
    cache.remember(_versioned("dave", 5))  # a caller that does not say when it read
    assert cache.lookup("dave", shared=False) is not None


def test_the_cache_remembers_invalidations_for_a_while_and_a_bounded_number(monkeypatch: pytest.MonkeyPatch) -> None:
    from penchant.profile_store import memory

    monkeypatch.setattr(memory, "MAX_FORGOTTEN", 3)
    cache = InMemoryProfileStore()
    since = cache.mark()
    for n in range(4):  # the first is dropped: reads older than it are refused, whoever they read
        cache.forget(f"user{n}", below_version=2)
    assert len(cache._forgotten) == 3
    cache.remember(_versioned("someone", 7), since=since)
    assert cache.lookup("someone", shared=False) is None
    recent = cache.mark() - 1  # after the dropped one: still told apart
    cache.remember(_versioned("someone", 7), since=recent)
    assert cache.lookup("someone", shared=False) is not None

    monkeypatch.setattr(memory, "FORGOTTEN_SECONDS", 0.0)
    cache.forget("user9", below_version=2)  # each forget drops those older than that
    assert list(cache._forgotten) == []
    since = cache.mark()
    cache.forget("user10", below_version=2)  # dropped at once: its mark is the horizon
    cache.remember(_versioned("someone else", 1), since=since)
    assert cache.lookup("someone else", shared=False) is None

    monkeypatch.setattr(memory, "FORGOTTEN_SECONDS", 3600.0)
    monkeypatch.setattr(memory, "MAX_FORGOTTEN", 100)
    for n in range(20):
        cache.forget(f"burst{n}", below_version=2)
    monkeypatch.setattr(memory, "FORGOTTEN_SECONDS", 0.0)
    cache.forget("after", below_version=2)  # drops a few, not the whole burst, under the lock
    assert len(cache._forgotten) == 21 - memory._PRUNE_AT_ONCE


def test_a_cache_that_does_not_slide_drops_a_copy_however_often_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from penchant.profile_store import memory

    now = [1000.0]
    with monkeypatch.context() as clock:
        clock.setattr(memory.time, "monotonic", lambda: now[0])
        for sliding in (True, False):
            cache = InMemoryProfileStore(ttl=60, sliding=sliding)
            cache.remember(_versioned("alice", 1))
            for _ in range(8):  # read every 10 s
                now[0] += 10
                found = cache.lookup("alice", shared=True)
            assert (found is not None) == sliding
    with profile_store.open_store(database_url="sqlite:///:memory:") as store:
        assert store.cache is not None
        assert store.cache.sliding is False  # the tiered cache's TTL bounds a copy's age
    for bad in ("no", 0, None):
        with pytest.raises(ValidationError, match="sliding"):
            InMemoryProfileStore(sliding=bad)  # type: ignore[arg-type]


def test_in_memory_store_is_an_lru() -> None:
    store = InMemoryProfileStore(max_entries=3)
    for user in ["a", "b", "c"]:
        store.put(UserProfile(user_id=user))
    assert store.get("a") is not None  # a is now the most recently used
    store.put(UserProfile(user_id="d"))
    assert store.get("b") is None
    assert {u for u in "acd" if store.exists(u)} == {"a", "c", "d"}
    assert len(store) == 3
    with pytest.raises(ValidationError):
        InMemoryProfileStore(max_entries=0)
    with pytest.raises(ValidationError):
        InMemoryProfileStore(ttl=-1)


def test_in_memory_ttl_slides_and_expires() -> None:
    store = InMemoryProfileStore(ttl=0.2)
    store.put(UserProfile(user_id="alice"))
    remaining = store.ttl("alice")
    assert remaining is not None
    assert 0 < remaining <= 0.2
    time.sleep(0.3)
    assert store.get("alice") is None
    assert store.ttl("alice") is None


def test_redis_batches_keep_their_connection_in_step_and_survive_a_closed_one() -> None:
    """A batch is written at once on one pooled connection and its replies read in order: an
    error reply in the middle comes back in its place (the replies after it still match their
    commands, and the connection serves the next batch). A connection the server closed is
    replaced, sync and async (a restarted Redis closes every pooled connection)."""
    from penchant.profile_store.redis_store import RedisConnection

    url = redis_url()
    key = f"{new_tenant()}:k"
    admin = redis.Redis.from_url(url)
    admin.set(key, b"v")
    calls = [("GET", key), ("HGET", key, "f"), ("EXISTS", key), ("PEXPIRE", key, 60_000)]

    def check(replies: list[Any]) -> None:
        assert replies[0] == b"v"
        assert isinstance(replies[1], redis.exceptions.ResponseError)  # WRONGTYPE, in its place
        assert replies[2:] == [1, True]  # the client's reply callbacks apply (PEXPIRE: a bool)

    def kill_clients() -> None:
        for client in admin.client_list():
            if client["name"] == "penchant-batch-test":
                admin.client_kill_filter(_id=client["id"])

    connection = RedisConnection(url)
    client = connection.sync()
    client.client_setname("penchant-batch-test")
    for _ in range(2):
        check(connection._execute_sync(client, calls))
    kill_clients()
    check(connection._execute_sync(client, calls))  # on a new connection

    async def run_async() -> None:
        aclient = await connection.async_()  # as penchant builds it
        await aclient.client_setname("penchant-batch-test")
        check(await connection._execute_async(aclient, calls))
        kill_clients()
        check(await connection._execute_async(aclient, calls))
        check(await connection._execute_async(aclient, calls))
        await connection.close_async()

    asyncio.run(run_async())
    admin.delete(key)
    admin.close()


def test_redis_runs_streamed_commands_while_the_rest_are_made() -> None:
    """Streamed commands reach one Redis server a group at a time as they are made, so that it
    runs the first group while the next are made; the replies come back in order. The async
    executor makes them all first."""
    from penchant.profile_store.redis_store import STREAMED_GROUP, RedisConnection, StreamedCalls

    url = redis_url()
    key = f"{new_tenant()}:n"
    admin = redis.Redis.from_url(url)
    ran_before_the_third_group: list[int] = []

    def made() -> Any:
        for n in range(3 * STREAMED_GROUP):
            if n == 2 * STREAMED_GROUP:
                deadline = time.monotonic() + 10  # ran by now, unless it was never sent
                while int(admin.get(key) or 0) < STREAMED_GROUP and time.monotonic() < deadline:
                    time.sleep(0.001)
                ran_before_the_third_group.append(int(admin.get(key) or 0))
            yield ("INCR", key)

    connection = RedisConnection(url)
    assert connection.run_sync(StreamedCalls(made())) == list(range(1, 3 * STREAMED_GROUP + 1))
    assert ran_before_the_third_group[0] >= STREAMED_GROUP

    async def run_async() -> None:
        replies = await connection.run_async(StreamedCalls(("INCR", key) for _ in range(3)))
        assert replies == [3 * STREAMED_GROUP + n for n in (1, 2, 3)]
        await connection.close_async()

    asyncio.run(run_async())
    connection.close_sync()

    # A client that checks its connection's health before a command older than a second:
    # no check between groups, whose replies it would read.
    def slow() -> Any:
        for n in range(2 * STREAMED_GROUP):
            if n == STREAMED_GROUP:
                time.sleep(1.1)
            yield ("INCR", key)

    checked = RedisConnection(url + "?health_check_interval=1")
    done = 3 * STREAMED_GROUP + 3
    assert checked.run_sync(StreamedCalls(slow())) == list(range(done + 1, done + 2 * STREAMED_GROUP + 1))
    checked.close_sync()
    admin.delete(key)
    admin.close()


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("retries", [0, 1])
def test_redis_batches_are_sent_again_only_as_the_clients_retry_policy_says(retries: int, streamed: bool) -> None:
    """A connection that fails after the batch was sent (its commands may have run) is dropped,
    and the batch sent again only if the client's retry policy allows: a client that retries
    nothing gets the error (penchant's own clients retry once). Streamed commands are sent
    again all at once. A unit test on a stand-in connection whose first reply is lost."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from penchant.profile_store.redis_store import StreamedCalls, _send_and_read

    class Connection:
        retry = Retry(NoBackoff(), retries)
        encoder = None  # packed by redis-py's own packer

        def __init__(self) -> None:
            self.sent = self.dropped = 0
            self.replies: list[Any] = []

        def pack_commands(self, calls: list[tuple[Any, ...]]) -> list[bytes]:
            return [repr(calls).encode()]

        def send_packed_command(self, packed: list[bytes], check_health: bool = True) -> None:
            self.sent += 1
            self.packed = packed
            self.replies = [redis.exceptions.ConnectionError("lost")] if self.sent == 1 else [b"a", b"b"]

        def read_response(self) -> Any:
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply

        def disconnect(self) -> None:
            self.dropped += 1

    class Pool:
        def __init__(self) -> None:
            self.connection, self.released = Connection(), 0

        def get_connection(self) -> Connection:
            return self.connection

        def release(self, connection: Connection) -> None:
            self.released += 1

    class Client:
        def __init__(self) -> None:
            self.connection_pool = Pool()
            self.response_callbacks: dict[str, Any] = {}

    client = Client()
    calls = [("GET", "a"), ("GET", "b")]
    if retries:
        assert _send_and_read(client, StreamedCalls(iter(calls)) if streamed else calls) == [b"a", b"b"]
        assert client.connection_pool.connection.packed == [repr(calls).encode()]  # sent again whole
    else:
        with pytest.raises(redis.exceptions.ConnectionError):
            _send_and_read(client, StreamedCalls(iter(calls)) if streamed else calls)
    connection = client.connection_pool.connection
    assert connection.sent == 1 + retries
    assert connection.dropped >= 1  # never handed back with replies unread
    assert client.connection_pool.released == 1


def test_cluster_batches_go_to_their_nodes_and_follow_redirections() -> None:
    """On a cluster a batch is split by node, written at once on each and read back in the
    caller's order, error replies in their places; a command sent to the wrong node (a stale
    slot map) is redirected and still answered in its place."""
    from penchant.profile_store.redis_store import RedisConnection

    connection = RedisConnection(cluster_url())
    client = connection.sync()
    tenant = new_tenant()
    keys = [f"{tenant}:{i}" for i in range(12)]
    for key in keys:
        client.set(key, key)
    assert len({client.get_node_from_key(k).name for k in keys}) > 1  # spread over the nodes
    calls = [("GET", k) for k in keys] + [("HGET", keys[0], "f"), ("PEXPIRE", keys[1], 60_000)]

    def check(replies: list[Any]) -> None:
        assert replies[: len(keys)] == [k.encode() for k in keys]
        assert isinstance(replies[len(keys)], redis.exceptions.ResponseError)  # WRONGTYPE, in place
        assert replies[-1] is True

    check(connection._execute_sync(client, calls))
    slots = client.nodes_manager.slots_cache
    one = slots[client.keyslot(keys[0])]
    saved = {slot: slots[slot] for slot in {client.keyslot(k) for k in keys}}
    for slot in saved:
        slots[slot] = one  # every key said to be on one node: the others answer MOVED
    try:
        check(connection._execute_sync(client, calls))
    finally:
        for slot, nodes in saved.items():
            slots.setdefault(slot, nodes)
    client.delete(*keys)
    connection.close_sync()


def test_async_cluster_batches_go_to_their_nodes_and_follow_redirections() -> None:
    """The same through the asyncio client: split by node, read back in the caller's order,
    error replies in their places, commands sent to the wrong node redirected; a cancelled
    batch leaves no connection with unread replies behind."""
    from penchant.profile_store.redis_store import RedisConnection

    async def scenario() -> None:
        connection = RedisConnection(cluster_url())
        client = await connection.async_()
        tenant = new_tenant()
        keys = [f"{tenant}:{i}" for i in range(12)]
        for key in keys:
            await client.set(key, key)
        assert len({client.get_node_from_key(k).name for k in keys}) > 1
        calls = [("GET", k) for k in keys] + [("HGET", keys[0], "f"), ("PEXPIRE", keys[1], 60_000)]

        def check(replies: list[Any]) -> None:
            assert replies[: len(keys)] == [k.encode() for k in keys]
            assert isinstance(replies[len(keys)], redis.exceptions.ResponseError)
            assert replies[-1] is True

        check(await connection._execute_async(client, calls))
        slots = client.nodes_manager.slots_cache
        saved = {slot: slots[slot] for slot in {client.keyslot(k) for k in keys}}
        one = slots[client.keyslot(keys[0])]
        for slot in saved:
            slots[slot] = one  # every key said to be on one node: the others answer MOVED
        try:
            check(await connection._execute_async(client, calls))
        finally:
            for slot, nodes in saved.items():
                slots.setdefault(slot, nodes)
        busy = (
            "local function now() local t = redis.call('TIME'); return t[1] * 1000000 + t[2] end "
            "local start = now(); while now() - start < 1500000 do end; return 1"
        )
        slow = [("EVAL", busy, 0)]  # holds its node 1.5 s: the batch is cancelled meanwhile
        task = asyncio.ensure_future(connection._execute_async(client, [*calls, *slow]))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        check(await connection._execute_async(client, calls))  # every connection answers its own
        await client.delete(*keys)
        await connection.close_async()

    asyncio.run(scenario())


def test_redis_keys_expire_per_kind_and_slide() -> None:
    url = redis_url()
    tenant = new_tenant()
    client = redis.Redis.from_url(url)
    ttl = KeyTTL(profile=60, history=120, events=600)
    with RedisProfileStore(url, tenant=tenant, ttl=ttl) as store:
        store.apply_feedback("alice", mixed_signals("alice", 2))
        profile_key, interests_key, history_key, events_key = user_keys(tenant, "alice")
        assert 59_000 < client.pttl(profile_key) <= 60_000
        assert 59_000 < client.pttl(interests_key) <= 60_000
        assert 119_000 < client.pttl(history_key) <= 120_000
        assert 599_000 < client.pttl(events_key) <= 600_000
        client.pexpire(profile_key, 5_000)
        assert store.touch("alice") is True
        assert client.pttl(profile_key) > 59_000  # touched: the full TTL again
        client.pexpire(profile_key, 5_000)
        assert store.get("alice") is not None
        assert client.pttl(profile_key) > 59_000  # a read slides it too
        remaining = store.ttl("alice")
        assert remaining is not None
        assert 59 < remaining <= 60
    with RedisProfileStore(url, tenant=tenant, ttl=KeyTTL(profile=0.2, history=0.2, events=0.2)) as short:
        short.apply_feedback("bob", mixed_signals("bob", 1))
        deadline = time.monotonic() + 10
        while client.exists(*user_keys(tenant, "bob")) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling with the raw client: a read through the store would slide the TTL
        assert client.exists(*user_keys(tenant, "bob")) == 0
        assert short.get("bob") is None
    with RedisProfileStore(url, tenant=tenant, ttl=KeyTTL(None, None, None)) as forever:
        forever.apply_feedback("carol", mixed_signals("carol", 1))
        assert client.pttl(user_keys(tenant, "carol")[0]) == -1
        assert forever.ttl("carol") is None
    client.close()


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_redis_reads_slide_keys_only_once_a_quarter_of_the_ttl_has_passed(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read skips the PEXPIREs when the same store slid the user's keys less than a quarter
    of the shortest TTL ago (so at least 3/4 of every TTL remains), and slides them otherwise;
    another store (process) keeps its own record. The keys' PTTLs are lowered by hand to stand
    for time passing, and the store's clock is moved forward."""
    url = redis_url() if kind == "redis" else cluster_url()
    tenant = new_tenant()
    full = (60_000, 60_000, 120_000, 600_000)  # profile, interests, history, events
    ttl = KeyTTL(profile=60, history=120, events=600)
    elapsed = [0.0]
    with (
        RedisProfileStore(url, tenant=tenant, ttl=ttl) as store,
        RedisProfileStore(url, tenant=tenant, ttl=ttl) as other,
    ):
        store._clock = lambda: time.monotonic() + elapsed[0]
        client = store.connection.sync()
        store.apply_feedback_many(mixed_signals("alice", 3) + mixed_signals("bob", 3))
        users = ["alice", "bob"]
        assert set(store.get_many(users)) == {"alice", "bob"}  # slides and records it

        def age(seconds: int) -> None:  # as if `seconds` had passed since the keys were slid
            for user in users:
                for key, ms in zip(user_keys(tenant, user), full, strict=True):
                    client.pexpire(key, ms - seconds * 1000)

        def remaining(user: str) -> list[int]:
            return [int(client.pttl(key)) for key in user_keys(tenant, user)]

        age(10)
        elapsed[0] = 14.0
        assert store.get("alice") is not None
        assert set(store.get_many(users)) == set(users)
        for user in users:  # within a quarter of 60 s: not slid, and more than 3/4 remains
            assert all(ms * 3 // 4 < left <= ms - 10_000 for left, ms in zip(remaining(user), full, strict=True))
        assert other.get("bob") is not None  # a store that never slid them does
        assert all(ms - 1_000 < left <= ms for left, ms in zip(remaining("bob"), full, strict=True))
        elapsed[0] = 15.5
        assert set(store.get_many(users)) == set(users)  # a quarter has passed: slid again
        for user in users:
            assert all(ms - 1_000 < left <= ms for left, ms in zip(remaining(user), full, strict=True))
        age(10)
        assert store.get("alice") is not None  # slid at 15.5: not yet again
        assert all(left <= ms - 10_000 for left, ms in zip(remaining("alice"), full, strict=True))

        # The record is bounded: when full it starts over, and a forgotten user is slid again.
        monkeypatch.setattr(redis_store, "MAX_SLIDES_REMEMBERED", 1)
        assert store.delete("bob") is True
        store.apply_feedback("carol", mixed_signals("carol", 2))
        assert store.get("carol") is not None
        assert list(store._slid) == ["carol"]
        assert store.get("alice") is not None  # alice was forgotten: slid again
        assert all(ms - 1_000 < left <= ms for left, ms in zip(remaining("alice"), full, strict=True))
        assert list(store._slid) == ["alice"]


def test_redis_reads_from_a_snapshot_slide_every_key_and_survive_a_bad_snapshot() -> None:
    """Reads served from the snapshot (no script) slide each kind of key as a script would;
    a snapshot that cannot be decoded is passed over for the parts and stored again."""
    url = redis_url()
    tenant = new_tenant()
    client = redis.Redis.from_url(url)
    ttl = KeyTTL(profile=60, history=120, events=600)
    with RedisProfileStore(url, tenant=tenant, ttl=ttl) as store:
        store.apply_feedback("alice", mixed_signals("alice", 3))
        keys = user_keys(tenant, "alice")
        first = store.get("alice")  # from the parts: stores the snapshot
        assert first is not None
        assert client.hget(keys[0], "snap_version") == b"1"
        for key in keys:
            client.pexpire(key, 5_000)
        # The first read slid the keys; a read slides them again once a quarter of the shortest
        # TTL (15 s) has passed since, which the store's clock is moved forward to stand for.
        store._clock = lambda: time.monotonic() + 16
        assert store.get("alice") == first  # from the snapshot
        for key, full in zip(keys, (60_000, 60_000, 120_000, 600_000), strict=True):
            assert full - 1_000 < client.pttl(key) <= full
        client.hset(keys[0], "snap", b"\x93\xc4\x01")  # current, but not decodable
        assert store.get("alice") == first
        assert store.get_many(["alice", "nobody"]) == {"alice": first}
        assert store.serializer.decode_snapshot(
            client.hget(keys[0], "snap"), version=1, landmark=first.landmark, updated_at=0, event_count=3
        ) == dataclasses.replace(first, updated_at=datetime.fromtimestamp(0, tz=UTC))
        assert store.get("nobody") is None
        assert client.exists(*user_keys(tenant, "nobody")) == 0
    client.close()


def test_redis_reads_replace_a_current_snapshot_of_an_earlier_form() -> None:
    """A snapshot written before snapshots held their landmark, updated_at and event count (or
    framed their interests) is current but read from the parts, and stored again in the
    current form; the profile read is the same."""
    url = redis_url()
    tenant = new_tenant()
    client = redis.Redis.from_url(url)
    with RedisProfileStore(url, tenant=tenant) as store:
        store.apply_feedback("alice", mixed_signals("alice", 5))
        key = user_keys(tenant, "alice")[0]
        first = store.get("alice")  # from the parts: stores the snapshot
        assert first is not None
        current = client.hget(key, "snap")
        document, interests, history, _ = msgspec.msgpack.decode(current)
        for earlier in (
            msgspec.msgpack.encode([document, interests, history]),
            msgspec.msgpack.encode([document, msgspec.Raw(interests), history]),
        ):
            client.hset(key, "snap", earlier)
            assert store.get_many(["alice"]) == {"alice": first}
            assert client.hget(key, "snap") == current
            assert store.get("alice") == first
    client.close()


def test_key_ttl_checks() -> None:
    with pytest.raises(ValidationError):
        KeyTTL(profile=10, history=5)
    with pytest.raises(ValidationError):
        KeyTTL(profile=None, history=5)
    with pytest.raises(ValidationError):
        KeyTTL(events=0)
    with pytest.raises(ValidationError):
        RedisProfileStore(redis_url(), ttl=60)  # type: ignore[arg-type]


def test_redis_clients_that_decode_responses_are_refused() -> None:
    client = redis.Redis.from_url(redis_url(), decode_responses=True)
    with pytest.raises(ValidationError, match="decode"):
        RedisProfileStore(client=client)
    client.close()


def test_explicit_clients_work_and_stay_open() -> None:
    import redis.asyncio

    tenant = new_tenant()
    client = redis.Redis.from_url(redis_url())
    async_client = redis.asyncio.Redis.from_url(redis_url())
    with RedisProfileStore(client=client, async_client=async_client, tenant=tenant) as store:
        store.apply_feedback("alice", mixed_signals("alice", 2))

        async def read() -> int:
            found = await store.aget("alice")
            assert found is not None
            await async_client.aclose()
            return found.version

        assert asyncio.run(read()) == 1
    assert client.ping()  # the store closed only what it opened
    client.close()


# -- the sans-I/O runner ---------------------------------------------------------------------------


class Echo(Effect[int]):
    def __init__(self, value: int, fail: bool = False) -> None:
        self.value = value
        self.fail = fail

    def run_sync(self) -> int:
        if self.fail:
            raise StoreUnavailableError("sync")
        return self.value * 2

    async def run_async(self) -> int:
        if self.fail:
            raise StoreUnavailableError("async")
        return self.value * 3


def operation(fail_second: bool):  # type: ignore[no-untyped-def]
    first = yield Echo(1)
    try:
        second = yield Echo(10, fail=fail_second)
    except StoreUnavailableError as exc:
        return first, str(exc)
    return first, second


def test_one_operation_runs_sync_and_async() -> None:
    assert run_sync(operation(False)) == (2, 20)
    assert asyncio.run(run_async(operation(False))) == (3, 30)
    assert run_sync(operation(True)) == (2, "sync")
    assert asyncio.run(run_async(operation(True))) == (3, "async")


def test_redis_snapshots_serve_reads_while_current() -> None:
    url = redis_url()
    tenant = new_tenant()
    client = redis.Redis.from_url(url)
    model = InterestModel(max_history=20, refresh_every=3)
    with RedisProfileStore(url, tenant=tenant, model=model) as store:
        profile_key = user_keys(tenant, "alice")[0]

        def snapshot_version() -> int | None:
            value = client.hget(profile_key, "snap_version")
            return None if value is None else int(value)

        store.apply_feedback("alice", mixed_signals("alice", 2))  # no refresh: 2 events
        assert snapshot_version() is None  # a change makes none
        first = store.get("alice")
        assert first is not None
        assert snapshot_version() == 1  # the read stored it
        # A later read is served by it: make the parts unreadable and read again.
        client.hset(user_keys(tenant, "alice")[1], "genre:0\x1f+604800", "not a number")
        second = store.get("alice")
        assert second == first
        client.hdel(user_keys(tenant, "alice")[1], "genre:0\x1f+604800")
        store.apply_feedback("alice", mixed_signals("alice", 1, start=2))  # crosses 3: preferences
        assert snapshot_version() is None  # the refreshed preferences dropped it
        third = store.get("alice")
        assert third is not None
        assert third.version == 2
        assert third.preferences  # refreshed at the third event
        assert snapshot_version() == 2
        store.put(third)
        assert snapshot_version() == 3  # a put writes it
    client.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sql_store_starts_from_its_last_write_only_while_the_row_holds_it(kind: str, tmp_path: Path) -> None:
    """An SQL store keeps the profile it wrote for the user's next event; another writer in
    between (here, a delete and a new profile at the same version) must be seen."""
    tenant = new_tenant()

    def opened() -> profile_store.SQLProfileStore:
        url = f"sqlite:///{tmp_path}/shared.db" if kind == "sqlite" else postgres_url()
        return open_database(url, tenant=tenant)

    with opened() as first, opened() as second:
        a = first.apply_feedback("alice", [signal(1, features={"genre:a": 1.0})])
        assert a.version == 1
        second.delete("alice")
        b = second.apply_feedback("alice", [signal(2, features={"genre:b": 1.0})])
        assert b.version == 1  # the same version as first's write, with other contents
        c = first.apply_feedback("alice", [signal(3, features={"genre:c": 1.0})])
        assert c.version == 2
        assert set(c.interests) == {"genre:b", "genre:c"}
        assert [i.event_id for i in c.interaction_history] == ["alice-e2", "alice-e3"]
        second.apply_feedback("alice", [signal(4, features={"genre:d": 1.0})])
        d = first.apply_feedback("alice", [signal(5, features={"genre:e": 1.0})])
        assert set(d.interests) == {"genre:b", "genre:c", "genre:d", "genre:e"}
        # The profile returned is the caller's: changing it changes nothing stored.
        d.interests.clear()
        e = first.apply_feedback("alice", [signal(6, features={"genre:f": 1.0})])
        assert set(e.interests) == {"genre:b", "genre:c", "genre:d", "genre:e", "genre:f"}
        assert first.get("alice") == e


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sql_store_keeps_its_last_write_through_repeated_events(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events delivered again (at least once) leave the profile an SQL store wrote for the
    user's next write, which reads no history back, even when they come with new events (which
    PostgreSQL applies before it knows which are new); the result is the model's."""
    model = InterestModel(max_history=8)
    url = f"sqlite:///{tmp_path}/repeats.db" if kind == "sqlite" else postgres_url()
    store = open_database(url, tenant=new_tenant(), model=model)
    reference = InMemoryProfileStore(model=model)
    read_back: list[str] = []
    select_history = store._select_history

    def counted(user_ids: Any) -> Any:
        read_back.extend(user_ids)
        return (yield from select_history(user_ids))

    monkeypatch.setattr(store, "_select_history", counted)
    signals = mixed_signals("alice", 24)
    with store:
        store.apply_feedback("alice", signals[:20])
        store.apply_feedback("alice", signals[18:20])  # all repeats: the caller's copy is read back
        read_back.clear()
        after = store.apply_feedback("alice", signals[19:22])  # a repeat and two new events
        assert read_back == []
        store.apply_feedback("alice", signals[22:])
        assert read_back == []
        reference.apply_feedback("alice", signals)
        stored = store.get("alice")
        assert stored is not None
        assert after.version == 2
        assert stored.version == 3
        assert stored.interaction_history == reference.get("alice").interaction_history  # type: ignore[union-attr]
        assert stored.interest_weights(T0) == pytest.approx(reference.get("alice").interest_weights(T0))  # type: ignore[union-attr]


def test_postgres_answers_events_delivered_again_without_a_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """An event delivered again (at-least-once pipelines resend them) is answered by the one
    statement a write tries first, with nothing written, while the row holds what the store
    wrote; after another writer's change, the answer is the newest profile."""
    tenant = new_tenant()
    store = open_database(postgres_url(), tenant=tenant)
    other = open_database(postgres_url(), tenant=tenant)
    with store, other:
        first = store.apply_feedback("alice", [signal(1), signal(2)])
        transactions: list[bool] = []
        transaction = store._db.transaction

        def counted(body: Any, *, write: bool) -> Any:
            transactions.append(write)
            return transaction(body, write=write)

        monkeypatch.setattr(store._db, "transaction", counted)
        again = store.apply_feedback("alice", [signal(2)])
        assert transactions == []
        assert again == first
        again.interests.clear()  # the caller's own copy
        assert store.get("alice") == first
        transactions.clear()  # (the read's)
        both = store.apply_feedback("alice", [signal(1), signal(2)])
        assert both == first
        assert transactions == []
        newer = other.apply_feedback("alice", [signal(3)])
        assert newer.version == 2
        assert store.apply_feedback("alice", [signal(2)]) == newer  # the row changed: read again
        assert transactions == [True]
        store.apply_feedback("alice", [signal(5)])  # (held again)
        other.apply_feedback("alice", [signal(6)])
        assert store.apply_feedback("alice", [signal(1)]).version == 4  # an older one, the same
        mixed = store.apply_feedback("alice", [signal(2), signal(4)])  # one new event among them
        assert mixed.version == 5
        assert [i.event_id for i in mixed.interaction_history] == [f"alice-e{n}" for n in range(1, 7)]
        hostile = 'e"7\\,{x} NULL'  # quotes, a backslash, a comma, braces: one id in the array sent
        seventh = store.apply_feedback("alice", [signal(7, event_id=hostile)])
        transactions.clear()
        assert store.apply_feedback("alice", [signal(7, event_id=hostile)]) == seventh
        assert transactions == []
        monkeypatch.undo()
        logged = run_sync(store._events_op("alice"))
        assert sorted(e.event_id for e in logged) == sorted([*(f"alice-e{n}" for n in range(1, 7)), hostile])


def test_sql_store_keeps_a_bounded_number_of_written_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from penchant.profile_store import sql_store

    monkeypatch.setattr(sql_store, "WRITTEN_BYTES", 20_000)
    with SQLiteProfileStore(tmp_path / "bounded.db") as store:
        for round_ in range(2):
            for n in range(20):
                store.apply_feedback(f"user{n}", mixed_signals(f"user{n}", 5, start=5 * round_))
            kept = store._written
            assert 0 < len(kept) < 20
            assert store._written_bytes == sum(k.size for k in kept.values()) <= 20_000
            assert list(kept)[-1] == "user19"  # the most recent stay
        assert store.get("user0") == store.apply_feedback("user0", [])
        assert store.get("user0").event_count == 10  # type: ignore[union-attr]


def history_rows(store: profile_store.SQLProfileStore, user_id: str, *, live: bool = False) -> list[int]:
    """The ``ord`` of each history row of the user (``live``: those from its snapshot's
    ``history_from`` on), read with a separate connection."""
    query = "SELECT ord FROM penchant_history WHERE tenant = ? AND user_id = ? ORDER BY ord"
    if live:
        query = query.replace(
            "ORDER BY",
            "AND ord >= (SELECT history_from FROM penchant_profiles WHERE tenant = ? AND user_id = ?) ORDER BY",
        )
    params = (store.tenant, user_id) * (2 if live else 1)
    if isinstance(store, SQLiteProfileStore):
        with sqlite3.connect(store.path) as connection:
            return [r[0] for r in connection.execute(query, params)]
    import psycopg

    with psycopg.connect(store._db.url) as connection:  # type: ignore[attr-defined]
        return [r[0] for r in connection.execute(query.replace("?", "%s"), params)]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sql_history_rows_follow_the_profile_history(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history lives in rows of its own: events in time order add rows, and the rows that
    left the window are deleted once ``TRIM_AFTER`` of them gathered; an event older than the
    newest entry and a put rewrite them. Every read equals the in-memory store fed the same
    calls, whatever the rows left behind."""
    from penchant.profile_store import sql_store

    monkeypatch.setattr(sql_store, "TRIM_AFTER", 3)
    tenant = new_tenant()
    model = InterestModel(max_history=5)
    url = f"sqlite:///{tmp_path}/history.db" if kind == "sqlite" else postgres_url()
    reference = InMemoryProfileStore(tenant=tenant, model=model)
    with (
        open_database(url, tenant=tenant, model=model) as store,
        open_database(url, tenant=tenant, model=model) as other,
    ):

        def same(user_id: str = "alice") -> list[str]:
            got, want = store.get(user_id), reference.get(user_id)
            assert got is not None
            assert want is not None
            assert got.interaction_history == want.interaction_history
            assert got.interests == want.interests
            ords = history_rows(store, user_id, live=True)
            assert len(ords) == len(want.interaction_history)
            assert ords == list(range(ords[0], ords[0] + len(ords))) if ords else True
            return [i.event_id for i in got.interaction_history]

        for n in range(3):
            for s in (store, reference):
                s.apply_feedback("alice", [signal(n)])
        assert same() == ["alice-e0", "alice-e1", "alice-e2"]
        assert history_rows(store, "alice") == [0, 1, 2]
        for n in range(3, 9):  # past the window: the oldest rows go, the numbering goes on
            for s in (store, reference):
                s.apply_feedback("alice", [signal(n)])
        assert same() == [f"alice-e{n}" for n in range(4, 9)]
        # 0..2 went with the write that made 3 of them fall out of the window (e7's).
        assert history_rows(store, "alice") == [3, 4, 5, 6, 7, 8]
        for s in (store, reference):  # a batch of several, one of them older than the newest
            s.apply_feedback("alice", [signal(9), signal(10), signal(20, timestamp=T0 + 60.0 * 6.5)])
        assert same() == ["alice-e20", "alice-e7", "alice-e8", "alice-e9", "alice-e10"]
        assert history_rows(store, "alice") == [0, 1, 2, 3, 4]  # rewritten
        for s in (other, reference):  # another writer: the first store must not reuse its copy
            s.apply_feedback("alice", [signal(11)])
        for s in (store, reference):
            s.apply_feedback("alice", [signal(12)])
        assert same()[-2:] == ["alice-e11", "alice-e12"]
        assert history_rows(store, "alice") == list(range(7))  # 0 and 1 left the window
        for s in (store, reference):
            s.apply_feedback("alice", [signal(13)])
        assert same()[-1] == "alice-e13"
        assert history_rows(store, "alice") == [3, 4, 5, 6, 7]
        profile = store.get("alice")
        assert profile is not None
        profile.interaction_history = profile.interaction_history[:2]
        store.put(profile)
        reference.put(profile)
        assert same() == ["alice-e9", "alice-e10"]
        assert history_rows(store, "alice") == [0, 1]
        assert store.apply_feedback("alice", [signal(13)]).version == store.get("alice").version  # type: ignore[union-attr]
        store.delete("alice")
        assert history_rows(store, "alice") == []


def test_postgres_writes_a_held_profile_in_one_statement_and_falls_back_when_it_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-user write of the profile the store wrote last is one statement; a store that
    does not hold the profile reads it first, in one statement too. When another writer changed
    the row, or an event is logged already, the write writes nothing and a transaction does the
    write, unless a second statement finds every event logged already and the row unchanged
    (then nothing is written). Sync and async; every read equals the in-memory store's."""
    from penchant.profile_store import sql_store

    attempts: list[bool | str] = []  # whether each one-statement write wrote; "asked": a check; "read"
    transactions: list[bool] = []
    database = sql_store._PostgresDatabase
    run_sync_, run_async_ = database.run_statement_sync, database.run_statement_async
    transaction = database.transaction

    def attempted(statement: Any, rows: Any) -> None:
        if "count(*) FROM penchant_events" in statement.text:
            attempts.append("asked")
        elif "CROSS JOIN LATERAL" in statement.text:
            attempts.append("read")
        else:
            attempts.append(bool(rows and rows[0][0]))

    def counting_sync(self: Any, statement: Any, meanwhile: Any = None) -> Any:
        rows = run_sync_(self, statement, meanwhile)
        attempted(statement, rows)
        return rows

    async def counting_async(self: Any, statement: Any, meanwhile: Any = None) -> Any:
        rows = await run_async_(self, statement, meanwhile)
        attempted(statement, rows)
        return rows

    def counting_transaction(self: Any, body: Any, *, write: bool) -> Any:
        transactions.append(write)
        return transaction(self, body, write=write)

    def since() -> tuple[list[bool | str], list[bool]]:
        """The statements and the transactions (whether each wrote) since the last call."""
        taken = (attempts[:], transactions[:])
        attempts.clear()
        transactions.clear()
        return taken

    monkeypatch.setattr(database, "run_statement_sync", counting_sync)
    monkeypatch.setattr(database, "run_statement_async", counting_async)
    monkeypatch.setattr(database, "transaction", counting_transaction)
    monkeypatch.setattr(sql_store, "TRIM_AFTER", 3)
    tenant = new_tenant()
    model = InterestModel(max_history=5)
    reference = InMemoryProfileStore(tenant=tenant, model=model)
    with (
        PostgresProfileStore(postgres_url(), tenant=tenant, model=model) as store,
        PostgresProfileStore(postgres_url(), tenant=tenant, model=model) as other,
    ):

        def write(writer: PostgresProfileStore, *signals: Any) -> None:
            for s in (writer, reference):
                s.apply_feedback("alice", list(signals))
            assert_same_learning(store, reference)

        for s in (store, other):
            assert s.get("alice") is None  # (each makes sure of the schema first)
        since()
        write(store, signal(0))
        assert since() == (["read", True], [False])  # no profile yet: created in one statement (then the get)
        for n in range(1, 8):
            write(store, signal(n))
            # The rows that left the window (of 5) go three at a time, in the statement.
            assert len(history_rows(store, "alice")) == min(n + 1, 5) + (max(0, n - 4) % 3)
        assert since() == ([True] * 7, [False] * 7)
        write(other, signal(8))
        assert since() == (["read", True], [False])  # the other store read the profile, then wrote
        write(store, signal(9))
        assert since() == ([False], [True, False])  # the row changed since: a transaction instead
        version = store.get("alice").version  # type: ignore[union-attr]
        write(store, signal(9))  # a replay: the statement fails, the check finds it logged
        assert since() == ([False, "asked"], [False, False])  # (the gets')
        assert store.get("alice").version == version  # type: ignore[union-attr]
        write(store, signal(10), signal(11, event_id="alice-e9"))  # one new, one replayed
        assert since() == ([False, "asked"], [False, True, False])
        write(store, signal(12))
        assert since() == ([True], [False])
        write(store, signal(13), signal(3, timestamp=T0 + 60.0 * 11.5, event_id="alice-old"))  # rewrites the rows
        assert since() == ([], [True, False])  # not tried in one statement, and new: a transaction at once
        for n in (14, 15):
            for s in (store, reference):
                asyncio.run(s.aapply_feedback("alice", [signal(n)]))  # type: ignore[arg-type]
        assert since() == ([True, True], [])
        write(store, signal(3, timestamp=T0 + 60.0 * 11.5, event_id="alice-old"))  # an older event, replayed
        assert since() == (["asked"], [False])
        asyncio.run(store.aapply_feedback("alice", [signal(15)]))  # a replay through the async API
        assert since() == ([False, "asked"], [])
        write(store, signal(16))
        assert since() == ([True], [False])

        def unavailable(self: Any, statement: Any, meanwhile: Any = None) -> Any:
            raise StoreUnavailableError("PostgreSQL is unavailable: injected")

        monkeypatch.setattr(database, "run_statement_sync", unavailable)
        with pytest.raises(StoreUnavailableError):
            store.apply_feedback("alice", [signal(17)])
        assert "alice" not in store._written  # what it held may be half changed: dropped
        monkeypatch.setattr(database, "run_statement_sync", counting_sync)
        since()
        write(store, signal(17))  # read from the row again
        assert since() == (["read", True], [False])
        write(store, signal(18))
        assert since() == ([True], [False])
    with psycopg_connection() as connection:
        logged = connection.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM penchant_events WHERE tenant = %s", (tenant,)
        ).fetchone()
    assert logged == (19, 19)


def assert_same_learning(
    store: profile_store.ProfileStore, reference: profile_store.ProfileStore, user_id: str = "alice"
) -> None:
    """The two stores' profiles of ``user_id`` hold the same history, interests, event count and
    version (their ``updated_at`` comes from the clock)."""
    got, want = store.get(user_id), reference.get(user_id)
    assert got is not None
    assert want is not None
    assert (got.interaction_history, got.interests, got.event_count, got.version) == (
        want.interaction_history,
        want.interests,
        want.event_count,
        want.version,
    )


def psycopg_connection() -> Any:
    import psycopg

    return psycopg.connect(postgres_url())


def test_sql_snapshots_written_with_their_history_inline_are_read_and_moved_into_rows(tmp_path: Path) -> None:
    """A database of schema 1 held each history inside its snapshot: it is migrated, read as
    it is, and the next event moves the history into rows."""
    path = tmp_path / "old.db"
    model = InterestModel(max_history=5)
    old = InMemoryProfileStore(model=model).apply_feedback("alice", [signal(n) for n in range(4)])
    serializer = profile_store.ProfileSerializer()
    with sqlite3.connect(path) as connection:
        from penchant.profile_store.sql_store import _migrations, _SQLiteDatabase

        for text in _migrations(_SQLiteDatabase(str(path), synchronous="FULL", busy_timeout=1, cache_mib=2))[0]:
            connection.execute(text)
        connection.execute("CREATE TABLE penchant_schema (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)")
        connection.execute("INSERT INTO penchant_schema VALUES (1, 1)")
        connection.execute(
            "INSERT INTO penchant_profiles VALUES (?, ?, ?, ?, ?, ?)",
            ("default", "alice", old.version, SCHEMA_VERSION, old.updated_at.timestamp(), serializer.encode(old)),
        )
    with SQLiteProfileStore(path, model=model) as store:
        read = store.get("alice")
        assert read is not None
        assert read.interaction_history == old.interaction_history
        assert history_rows(store, "alice") == []
        after = store.apply_feedback("alice", [signal(4), signal(5)])
        assert [i.event_id for i in after.interaction_history] == [f"alice-e{n}" for n in range(1, 6)]
        assert history_rows(store, "alice") == [0, 1, 2, 3, 4]
        assert store.get("alice") == after
        with sqlite3.connect(path) as connection:
            (body,) = connection.execute("SELECT body FROM penchant_profiles").fetchone()
        assert serializer.decode(body).interaction_history == []


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sql_history_emptied_leaves_no_row_behind(kind: str, tmp_path: Path) -> None:
    """A write that empties the history (a store whose window is 0) deletes every row, also
    those that wait to be trimmed: another store that reads the profile then finds no entry,
    and numbers the rows it adds from 0 without colliding with old ones."""
    tenant = new_tenant()
    url = f"sqlite:///{tmp_path}/emptied.db" if kind == "sqlite" else postgres_url()

    def opened(window: int) -> profile_store.SQLProfileStore:
        return open_database(url, tenant=tenant, model=InterestModel(max_history=window))

    with opened(3) as store:
        for n in range(5):
            store.apply_feedback("alice", [signal(n)])
        assert history_rows(store, "alice") == [0, 1, 2, 3, 4]  # 0 and 1 wait to be trimmed
        with opened(0) as none:
            none.apply_feedback("alice", [signal(5)])
            assert history_rows(store, "alice") == []
            with opened(0) as fresh:
                assert fresh.get("alice").interaction_history == []  # type: ignore[union-attr]
                fresh.apply_feedback("alice", [signal(6)])
        with opened(3) as again:
            again.apply_feedback("alice", [signal(7)])
            assert [i.event_id for i in again.get("alice").interaction_history] == ["alice-e7"]  # type: ignore[union-attr]
            assert history_rows(again, "alice") == [0]
        assert store.get("alice").event_count == 8  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sql_history_rows_of_schema_2_are_read_whole_after_the_migration(kind: str, tmp_path: Path) -> None:
    """A database of schema 2 trimmed every row that left the window: migrated, its snapshots
    read their history from the first row (``history_from`` 0), and writes go on from there.
    PostgreSQL also stores snapshots uncompressed up to a page from then on."""
    import psycopg

    from penchant.profile_store.sql_store import _migrations, _PostgresDatabase, _SQLiteDatabase

    model = InterestModel(max_history=5)
    reference = InMemoryProfileStore(model=model)
    database: Any
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/two.db"
        database = _SQLiteDatabase(str(tmp_path / "two.db"), synchronous="FULL", busy_timeout=1, cache_mib=2)
        connection: Any = sqlite3.connect(tmp_path / "two.db")
        execute = connection.execute
    else:
        name = f"penchant_two_{new_tenant().lower()}"
        with psycopg.connect(postgres_url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = postgres_url().rsplit("/", 1)[0] + "/" + name
        database = _PostgresDatabase(url, min_size=1, max_size=1, timeout=5)
        connection = psycopg.connect(url, autocommit=True)

        def execute(text: str, params: Any = ()) -> Any:
            return connection.execute(text.replace("?", "%s"), params)

    try:
        for step in _migrations(database)[:2]:
            for text in step:
                execute(text)
        execute("CREATE TABLE penchant_schema (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)")
        execute("INSERT INTO penchant_schema VALUES (1, 2)")
        # What schema 2 held after seven events: the snapshot, and the newest five entries
        # numbered from 2 (the rows of the first two deleted).
        profile = reference.apply_feedback("alice", [signal(n) for n in range(7)])
        serializer = profile_store.ProfileSerializer()
        body, _ = serializer.encode_apart(profile, serializer.pack_history([]))
        execute(
            "INSERT INTO penchant_profiles VALUES (?, ?, ?, ?, ?, ?)",
            ("default", "alice", profile.version, SCHEMA_VERSION, profile.updated_at.timestamp(), body),
        )
        for n, entry in enumerate(profile.interaction_history):
            execute(
                "INSERT INTO penchant_history VALUES (?, ?, ?, ?)",
                ("default", "alice", 2 + n, serializer.encode_interaction(entry)),
            )
        connection.commit()
        with open_database(url, model=model) as store:
            assert store.get("alice") == reference.get("alice")
            assert history_rows(store, "alice", live=True) == [2, 3, 4, 5, 6]
            for s in (store, reference):
                s.apply_feedback("alice", [signal(7)])
            assert_same_learning(store, reference)
            assert history_rows(store, "alice", live=True) == [3, 4, 5, 6, 7]
            assert execute("SELECT version FROM penchant_schema").fetchone()[0] == 3
            if kind == "postgres":
                (options,) = execute("SELECT reloptions FROM pg_class WHERE relname = 'penchant_profiles'").fetchone()
                assert options == ["toast_tuple_target=8160"]
    finally:
        connection.close()
        if kind == "postgres":
            with psycopg.connect(postgres_url(), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_sqlite_checkpoints_its_log_from_a_thread_and_keeps_it_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers never run SQLite's automatic checkpoint; a thread copies the log instead, and the
    log restarts from its beginning once it holds WAL_RESTART_FRAMES frames, although writes go
    on without a pause."""
    from penchant.profile_store import sql_store

    monkeypatch.setattr(sql_store, "CHECKPOINT_EVERY", 5)
    monkeypatch.setattr(sql_store, "WAL_RESTART_FRAMES", 200)  # ~0.8 MB
    steps: list[int | str] = []  # frames in the log after each PASSIVE checkpoint, or "locked"
    passive, locked = sql_store._Checkpointer._passive, sql_store._Checkpointer.checkpoint

    def passive_step(*args: Any) -> int:
        frames = passive(*args)
        steps.append(frames)
        return frames

    monkeypatch.setattr(sql_store._Checkpointer, "_passive", passive_step)
    monkeypatch.setattr(sql_store._Checkpointer, "checkpoint", lambda *a: steps.append("locked") or locked(*a))
    with SQLiteProfileStore(tmp_path / "log.db", model=InterestModel(max_history=50)) as store:
        store.apply_feedback("alice", [signal(0)])
        connection = store._db._connect()  # type: ignore[attr-defined]
        assert connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        checkpointer = store._db.checkpointer  # type: ignore[attr-defined]
        sizes = []
        for n in range(1, 400):
            store.apply_feedback("alice", [signal(n)])
            sizes.append((tmp_path / "log.db-wal").stat().st_size)
        deadline = time.monotonic() + 10
        while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.checkpoints > 0
        assert checkpointer.passive > checkpointer.checkpoints  # the lock is taken only past the limit
        # What was written during the checkpoint that found the log past the limit is copied
        # again without the lock first, so that the locked one copies little.
        # (A pass after the one over the limit may find the log restarted, and few frames.)
        # No writer checkpoints inline here: INLINE_CHECKPOINT_AFTER was set at import (2,000).
        locked_at = [n for n, step in enumerate(steps) if step == "locked"]
        assert locked_at
        assert all(
            n >= 2 and isinstance(steps[n - 1], int) and isinstance(steps[n - 2], int) and steps[n - 2] > 200
            for n in locked_at
        ), steps
        # Each write adds ~8 pages of 4 KiB: without a log restarted by the checkpoints, 400
        # writes would leave ~13 MB of it (the file keeps its largest size once restarted).
        assert max(sizes) < 3 << 20
        assert store.get("alice").event_count == 400  # type: ignore[union-attr]
    assert not checkpointer._thread.is_alive()  # closing the store stops its thread


def test_sqlite_writers_checkpoint_themselves_when_the_thread_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from penchant.profile_store import sql_store

    monkeypatch.setattr(sql_store, "CHECKPOINT_EVERY", 5)
    monkeypatch.setattr(sql_store, "INLINE_CHECKPOINT_AFTER", 10)
    monkeypatch.setattr(sql_store._Checkpointer, "_run", lambda self: None)
    with SQLiteProfileStore(tmp_path / "log.db") as store:
        for n in range(25):
            store.apply_feedback("alice", [signal(n)])
        assert store._db.checkpointer.checkpoints == 2  # type: ignore[attr-defined]
        with sqlite3.connect(tmp_path / "log.db") as other:
            busy, log, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0
        assert copied == log


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_redis_follows_the_sql_tier_change_by_change(kind: str, tmp_path: Path) -> None:
    """After each write of a tiered store, Redis holds what SQL holds (history window, an event
    older than the newest, repeated events, a preference refresh), reached by following the
    change, never by rewriting the whole profile."""
    tenant = new_tenant()
    model = InterestModel(max_history=4, refresh_every=3)
    url = f"sqlite:///{tmp_path}/follow.db" if kind == "sqlite" else postgres_url()
    with open_store(redis_url(), url, tenant, model=model) as store:
        assert isinstance(store, TieredProfileStore)
        assert store.redis is not None

        def same() -> None:
            store.flush()  # Redis has run the change
            from_sql, from_redis = store.database.get("alice"), store.redis.get("alice")  # type: ignore[union-attr]
            assert from_sql is not None
            assert from_redis is not None
            assert from_redis.version == from_sql.version
            assert from_redis.interaction_history == from_sql.interaction_history
            assert from_redis.interests == from_sql.interests
            assert from_redis.preferences == from_sql.preferences

        store.apply_feedback("alice", [signal(0)])
        same()
        for n in range(1, 7):
            store.apply_feedback("alice", [signal(n)])
            same()
        store.apply_feedback("alice", [signal(7), signal(20, timestamp=T0 + 60.0 * 4.5), signal(3)])
        same()
        store.apply_feedback_many([signal(8), signal(9), signal(8)])
        same()
        # An event many of its half-lives past the landmark moves it, which rescales every sum,
        # also of the features it does not touch.
        landmark = store.database.get("alice").landmark  # type: ignore[union-attr]
        far = T0 + 60.0 * 10 + 60.0 * 2 * REBASE_EXPONENT
        store.apply_feedback("alice", [signal(10, half_life=60.0, timestamp=far, features={"tag:new": 1.0})])
        assert store.database.get("alice").landmark != landmark  # type: ignore[union-attr]
        same()
        store.apply_feedback("alice", [signal(11, timestamp=far + 60.0)])
        same()
        assert store.stats()["redis_stale_fallbacks"] == 0


def test_tiered_postgres_sends_redis_the_commands_of_the_write_that_committed() -> None:
    """A tiered store makes Redis's commands while PostgreSQL runs its one-statement write. When
    that statement writes nothing (another process changed the row), the transaction that
    follows writes other changes, and Redis is sent the commands made for those."""
    tenant = new_tenant()
    with (
        open_store(redis_url(), postgres_url(), tenant) as first,
        open_store(redis_url(), postgres_url(), tenant) as second,
    ):
        assert isinstance(first, profile_store.TieredProfileStore)
        made: list[int] = []
        prepare = first._follow_calls

        def counted(changed: Any) -> Any:
            made.append(len(changed))
            return prepare(changed)

        first._follow_calls = counted  # type: ignore[method-assign]
        first.apply_feedback("alice", [signal(0)])  # a transaction: the store held nothing
        first.apply_feedback("alice", [signal(1)])  # one statement
        second.apply_feedback("alice", [signal(2, features={"genre:b": 1.0})])
        made.clear()
        written = first.apply_feedback("alice", [signal(3)])  # the statement finds the row changed
        assert made == [1, 1]  # made for the statement, then for the transaction's changes
        assert written.version == 4
        assert set(written.interests) >= {"genre:b"}
        first.flush()
        from_sql, from_redis = first.database.get("alice"), first.redis.get("alice")  # type: ignore[union-attr]
        assert from_sql is not None
        assert from_redis is not None
        assert (from_redis.version, from_redis.interests) == (from_sql.version, from_sql.interests)
        assert from_redis.interaction_history == from_sql.interaction_history
        assert first.stats()["redis_stale_fallbacks"] == 0  # Redis followed: no whole rewrite


def test_postgres_one_statement_writes_survive_psycopg_dropping_prepared_statements() -> None:
    """psycopg sends ``DEALLOCATE ALL`` when it rolls back a connection on which it prepared
    statements of its own (a transaction that raised: here a conflicting ``put``); the next
    one-statement write on that connection prepares its statement again."""
    from penchant import ConflictError

    tenant = new_tenant()
    with PostgresProfileStore(postgres_url(), tenant=tenant, min_pool_size=1, max_pool_size=1) as store:
        store.apply_feedback("alice", [signal(0)])
        store.apply_feedback("alice", [signal(1)])  # one statement, prepared by penchant
        bob = UserProfile(user_id="bob")
        for _ in range(6):  # psycopg prepares the transaction's statements from their sixth run
            bob = store.put(bob)
        with store._db._sync_pool().connection() as connection:  # type: ignore[attr-defined]
            psycopg_statements = connection.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE name NOT LIKE 'penchant%'"
            ).fetchone()[0]
        assert psycopg_statements > 0
        with pytest.raises(ConflictError):
            store.put(bob, expected_version=bob.version + 5)  # rolled back: DEALLOCATE ALL
        with store._db._sync_pool().connection() as connection:  # type: ignore[attr-defined]
            assert connection.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
        written = store.apply_feedback("alice", [signal(2)])
        assert written.version == 3
        assert [i.event_id for i in written.interaction_history] == ["alice-e0", "alice-e1", "alice-e2"]


def test_postgres_transactions_ask_for_read_committed_whatever_the_session_says() -> None:
    """A pooler in transaction mode may hand penchant a session whose default isolation is
    another's: its transactions (sync and async) ask for READ COMMITTED when they begin."""
    from penchant.profile_store.sql_store import Sql

    def isolation() -> Any:
        rows = yield Sql("SELECT current_setting('transaction_isolation')")
        return rows[0][0]

    serializable = "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"
    with PostgresProfileStore(postgres_url(), tenant=new_tenant(), min_pool_size=1, max_pool_size=1) as store:
        db = store._db  # type: ignore[attr-defined]
        with db._sync_pool().connection() as connection:
            connection.execute(serializable)
        assert db.run_sync(isolation(), write=True) == "read committed"

        async def run_async() -> Any:
            async with (await db._open_async_pool()).connection() as connection:
                await connection.execute(serializable)
            return await db.run_async(isolation(), write=True)

        assert asyncio.run(run_async()) == "read committed"


def test_postgres_one_statement_write_on_a_lost_connection_is_unavailable_then_recovers() -> None:
    tenant = new_tenant()
    with (
        PostgresProfileStore(postgres_url(), tenant=tenant, min_pool_size=1, max_pool_size=1) as store,
        psycopg_connection() as admin,
    ):
        store.apply_feedback("alice", [signal(0)])
        store.apply_feedback("alice", [signal(1)])
        with store._db._sync_pool().connection() as connection:  # type: ignore[attr-defined]
            pid = connection.info.backend_pid
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailableError):
            store.apply_feedback("alice", [signal(2)])
        for _ in range(50):  # the pool replaces the connection it lost
            with contextlib.suppress(StoreUnavailableError):
                written = store.apply_feedback("alice", [signal(2)])
                break
            time.sleep(0.1)
        assert written.version == 3


def test_a_failure_while_postgresql_runs_the_statement_does_not_fail_the_write() -> None:
    """What the store makes while the server runs a one-statement write (the caller's copy, a
    tiered store's Redis commands) is made again after the answer if it failed then."""
    tenant = new_tenant()
    with open_store(redis_url(), postgres_url(), tenant) as store:
        assert isinstance(store, profile_store.TieredProfileStore)
        store.apply_feedback("alice", [signal(0)])
        prepare = store._follow_calls
        calls: list[int] = []

        def failing_once(changed: Any) -> Any:
            calls.append(len(changed))
            if len(calls) == 1:
                raise RuntimeError("injected")
            return prepare(changed)

        store._follow_calls = failing_once  # type: ignore[method-assign]
        written = store.apply_feedback("alice", [signal(1)])
        assert calls == [1, 1]  # failed while the statement ran, made again after it
        assert written.version == 2
        store.flush()
        from_redis = store.redis.get("alice")  # type: ignore[union-attr]
        assert from_redis is not None
        assert from_redis.version == 2
        assert store.stats()["redis_stale_fallbacks"] == 0


def test_sql_history_rows_with_a_gap_are_read_in_order_and_written_anew(tmp_path: Path) -> None:
    """Rows not numbered one after another (never written by penchant; a hand-edited database)
    are read row by row, in order, and the next write numbers them afresh."""
    model = InterestModel(max_history=10)
    with SQLiteProfileStore(tmp_path / "gap.db", model=model) as store:
        store.apply_feedback("alice", [signal(n) for n in range(6)])
        with sqlite3.connect(tmp_path / "gap.db") as connection:
            connection.execute("DELETE FROM penchant_history WHERE ord = 2")
            connection.execute("UPDATE penchant_history SET ord = ord + 100 WHERE ord = 5")
        with SQLiteProfileStore(tmp_path / "gap.db", model=model) as other:
            read = other.get("alice")
            assert read is not None
            assert [i.event_id for i in read.interaction_history] == [f"alice-e{n}" for n in (0, 1, 3, 4, 5)]
            other.apply_feedback("alice", [signal(6)])
            assert history_rows(other, "alice") == [0, 1, 2, 3, 4, 5]
            again = other.get("alice")
            assert again is not None
            assert [i.event_id for i in again.interaction_history] == [f"alice-e{n}" for n in (0, 1, 3, 4, 5, 6)]


def test_postgres_creates_a_profile_in_one_statement_unless_another_writer_did_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store that finds no profile makes one and inserts it in one statement, unless another
    writer made the user's profile between the read and the write: then that statement writes
    nothing, and the transaction applies the events to the other's profile."""
    tenant = new_tenant()
    with (
        PostgresProfileStore(postgres_url(), tenant=tenant) as store,
        PostgresProfileStore(postgres_url(), tenant=tenant) as other,
    ):
        first = store.apply_feedback("alice", [signal(1, "alice")])
        assert first.version == 1
        read = store._read_one_op

        def read_then_another_writes(user_id: str) -> Any:
            kept = yield from read(user_id)
            assert kept is not None
            assert not kept.body  # no profile yet
            other.apply_feedback(user_id, [signal(2, user_id)])
            return kept

        monkeypatch.setattr(store, "_read_one_op", read_then_another_writes)
        bob = store.apply_feedback("bob", [signal(3, "bob")])
        assert bob.version == 2
        assert [i.event_id for i in bob.interaction_history] == ["bob-e2", "bob-e3"]
        monkeypatch.undo()
        assert store.get("bob") == other.get("bob") == bob
        logged = run_sync(store._events_op("bob"))
        assert sorted(e.event_id for e in logged) == ["bob-e2", "bob-e3"]
        # A new user's only event under an id logged already (for alice): nothing is made.
        carol = store.apply_feedback("carol", [signal(4, "carol", event_id="alice-e1")])
        assert carol.version == 0
        assert store.get("carol") is None
        assert run_sync(store._events_op("carol")) == []
        assert history_rows(store, "carol") == []
        # Through the async API, a new user's profile is made the same way.
        dave = asyncio.run(store.aapply_feedback("dave", [signal(5, "dave"), signal(6, "dave")]))
        assert dave.version == 1
        assert store.get("dave") == other.get("dave") == dave
        assert history_rows(store, "dave") == [0, 1]


def test_postgres_reads_a_users_history_by_its_keys_whatever_the_statistics_say() -> None:
    """The statement that reads users' history rows must find them by their keys even when
    PostgreSQL's statistics predate the tenant (a new one, or one that grew fast): with the
    users named on the history side only, it took the tenant for one profile and walked all of
    them for each user asked for, so that a cold write cost more the more users there were."""
    import psycopg

    from penchant.profile_store.sql_store import _postgres_query

    tenant = new_tenant()
    with PostgresProfileStore(postgres_url(), tenant=tenant) as store:
        store.apply_feedback("first", [signal(0, "first")])
        with psycopg.connect(postgres_url(), autocommit=True) as connection:
            connection.execute("ANALYZE penchant_profiles")
            connection.execute("ANALYZE penchant_history")
        for start in range(0, 300, 100):  # the tenant grows after the statistics were taken
            store.apply_feedback_many([signal(n, f"user{u}") for u in range(start, start + 100) for n in range(3)])
        (statement,) = store._db.select_history(tenant, ["user7"])
        with psycopg.connect(postgres_url()) as connection:
            ((plan,),) = connection.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + _postgres_query(statement.text), statement.params
            ).fetchall()

    def scans(node: dict[str, Any]) -> list[dict[str, Any]]:
        found = [node] if node.get("Relation Name", "").startswith("penchant_") else []
        return found + [s for child in node.get("Plans", []) for s in scans(child)]

    # The user's profile and 3 history rows (a profile read once per history row, at most),
    # not the tenant's 301 profiles and 903 rows.
    read = {n["Relation Name"]: n["Actual Rows"] * n["Actual Loops"] for n in scans(plan[0]["Plan"])}
    assert read.keys() == {"penchant_profiles", "penchant_history"}
    assert read["penchant_history"] == 3
    assert 1 <= read["penchant_profiles"] <= 3


def test_postgres_arrays_are_sent_in_binary_and_read_back_exactly() -> None:
    """Array parameters (``?::type[]``) go in binary, the others as psycopg chooses; values a
    text array would have to quote or escape (quotes, backslashes, braces, commas, NULs in
    bytes, non-ASCII) arrive as they were."""
    import psycopg

    from penchant.profile_store.sql_store import _postgres_query

    text = (
        "SELECT ?, x FROM unnest(?::text[], ?::bytea[], ?::float8[], ?::int8[]) AS t(x, y, z, w) "
        "WHERE ? = ANY(?::text[])"
    )
    assert _postgres_query(text) == (
        "SELECT %s, x FROM unnest(%b::text[], %b::bytea[], %b::float8[], %b::int8[]) AS t(x, y, z, w) "
        "WHERE %s = ANY(%b::text[])"
    )
    words = ['a"b', "c\\d", "{e,f}", "ü €", ""]
    blobs = [b"\x00\xff", b"\\", b"", b'"', b"{,}"]
    with psycopg.connect(postgres_url()) as connection:
        rows = connection.execute(
            _postgres_query(
                "SELECT w, b, f, i FROM unnest(?::text[], ?::bytea[], ?::float8[], ?::int8[]) AS t(w, b, f, i)"
            ),
            (words, blobs, [0.1, -2.5, 1e300, 0.0, 3.0], [1, -(2**62), 2**40, 0, 7]),
        ).fetchall()
    assert rows == list(zip(words, blobs, [0.1, -2.5, 1e300, 0.0, 3.0], [1, -(2**62), 2**40, 0, 7], strict=True))


def test_postgres_statements_sent_without_waiting_still_fail_their_transaction(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL sends a statement that answers no rows without waiting for its answer: an
    error in it still fails the transaction (raised at the next statement waited for, or at the
    commit), everything the transaction wrote is rolled back before the connection goes back
    to the pool, and the pooled connection serves the next transaction. So do statements a body
    sends to read their rows later (``Sent``). The same through the async API."""
    import psycopg

    from penchant.profile_store.sql_store import Answer, Sent, Sql

    store = PostgresProfileStore(postgres_url(), tenant=new_tenant())
    database = store._db  # type: ignore[attr-defined]
    table = "penchant_test_" + new_tenant()

    def create() -> Any:
        yield Sql(f"CREATE TABLE {table} (k INTEGER PRIMARY KEY)")

    def fails_at_the_commit() -> Any:
        yield Sql(f"INSERT INTO {table} VALUES (?)", (1,))
        yield [Sql(f"INSERT INTO {table} VALUES (?)", (2,)), Sql(f"INSERT INTO {table} VALUES (?)", (2,))]
        return "committed"

    def fails_before_a_read() -> Any:
        yield Sql(f"INSERT INTO {table} VALUES (?)", (3,))
        yield Sql(f"INSERT INTO {table} VALUES (?)", (3,))
        rows = yield Sql(f"SELECT k FROM {table}")
        return rows

    def read() -> Any:
        rows = yield Sql(f"SELECT k FROM {table} ORDER BY k")
        return rows

    def writes_and_reads() -> Any:
        yield Sql(f"INSERT INTO {table} VALUES (?)", (4,))
        rows = yield [Sql(f"INSERT INTO {table} VALUES (?)", (5,)), Sql(f"SELECT count(*) FROM {table}")]
        return rows

    def sends_then_reads() -> Any:  # the rows of Sent statements arrive when the answer is yielded
        answer = yield Sent([Sql(f"INSERT INTO {table} VALUES (?)", (6,)), Sql(f"SELECT count(*) FROM {table}")])
        assert isinstance(answer, Answer)
        rows = yield answer
        return rows

    def sends_a_failure() -> Any:
        answer = yield Sent(
            [Sql(f"INSERT INTO {table} VALUES (?)", (7,)), Sql(f"INSERT INTO {table} VALUES (?)", (7,))]
        )
        yield answer
        return "committed"

    async def in_async() -> None:
        for body in (fails_at_the_commit, fails_before_a_read, sends_a_failure):
            with pytest.raises(psycopg.errors.UniqueViolation):
                await database.run_async(body(), True)
        assert await database.run_async(read(), False) == [(4,), (5,), (6,)]

    try:
        database.run_sync(create(), True)
        for body in (fails_at_the_commit, fails_before_a_read, sends_a_failure):
            with pytest.raises(psycopg.errors.UniqueViolation):
                database.run_sync(body(), True)
        assert database.run_sync(read(), False) == []
        assert database.run_sync(writes_and_reads(), True) == [[], [(2,)]]
        assert database.run_sync(sends_then_reads(), True) == [[], [(3,)]]
        asyncio.run(in_async())
        # (psycopg may log that it ignored the aborted pipeline's own error while the first one
        # was raised: that is not a failure to roll back.)
        assert not [r for r in caplog.records if r.name.startswith("psycopg.pool") or "rollback" in r.getMessage()]
    finally:

        def drop() -> Any:
            yield Sql(f"DROP TABLE IF EXISTS {table}")

        database.run_sync(drop(), True)
        store.close()


def test_a_loop_s_resource_closes_when_the_loop_cancels_its_tasks() -> None:
    """``asyncio.run`` cancels the loop's tasks and waits for them before it finalizes async
    generators (where a store closed its per-loop pools). A background task that survives its
    cancellation until the resource closes (psycopg_pool's workers do, when cancelled while
    adding a connection) must not hang it: the resource closes with the cancellation."""
    from penchant.profile_store._loops import PerLoop

    class Resource:
        def __init__(self) -> None:
            self.closed = asyncio.Event()

    async def close(resource: Resource) -> None:
        await asyncio.sleep(0)  # a close that awaits, as a pool's does
        resource.closed.set()

    per_loop: PerLoop[Resource] = PerLoop(Resource, close)
    closed: list[Resource] = []

    async def stubborn(resource: Resource) -> None:
        while not resource.closed.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await resource.closed.wait()
        closed.append(resource)

    async def main() -> None:
        resource = await per_loop.get()
        assert await per_loop.get() is resource  # one per loop
        asyncio.get_running_loop().create_task(stubborn(resource))
        await asyncio.sleep(0)

    for _ in range(2):  # a new loop, a new resource
        runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        runner.start()
        runner.join(10)
        assert not runner.is_alive()
    assert len(closed) == 2
    assert closed[0] is not closed[1]
    assert not per_loop._items  # nothing kept for the closed loops


def test_a_resource_closed_from_sync_code_leaves_no_task_pending() -> None:
    """``close_idle`` (a store's sync ``close``) closes the resource of a loop that is not
    running, and its watcher task finishes too."""
    from penchant.profile_store._loops import PerLoop

    closed: list[object] = []

    async def close(resource: object) -> None:
        closed.append(resource)

    per_loop: PerLoop[object] = PerLoop(object, close)
    loop = asyncio.new_event_loop()
    try:
        resource = loop.run_until_complete(per_loop.get())
        per_loop.close_idle()
        assert closed == [resource]
        assert not [task for task in asyncio.all_tasks(loop) if not task.done()]
    finally:
        loop.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("holds", [True, False])
def test_sql_writes_that_only_append_never_decode_the_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, holds: bool, kind: str
) -> None:
    """While a write only appends to a history still encoded (every event newer than its
    newest entry), the SQL store applies it with the newest entry alone decoded and keeps the
    history encoded, and a preference refresh due reads the encoded history: so every write of
    a profile read back from the database (``holds`` false) but those that reorder. Random batches (in order,
    some older than the newest entry, larger than the window, crossing refresh_every, touching
    a stated like) give what the in-memory store gives, whether the store holds the profile it
    wrote (decoded once a write decoded it) or reads it back (on PostgreSQL, in one statement
    before the write). Rows that left the window are trimmed three at a time."""
    import random

    from penchant.profile_store import sql_store

    if not holds:
        monkeypatch.setattr(sql_store, "WRITTEN_BYTES", 0)
    monkeypatch.setattr(sql_store, "TRIM_AFTER", 3)
    model = InterestModel(max_history=6, refresh_every=7)
    reference = InMemoryProfileStore(model=model)
    rng = random.Random(5)
    url = f"sqlite:///{tmp_path}/append.db" if kind == "sqlite" else postgres_url()
    with open_database(url, tenant=new_tenant(), model=model) as store:
        appended = refreshed = 0
        places_before, refresh_preferences = model.places_before, model.refresh_preferences

        def counting(*args: Any) -> bool:
            nonlocal appended
            reads = places_before(*args)
            appended += not reads
            return reads

        def counting_refreshes(profile: UserProfile, *args: Any, crossed: bool | None = None, **kwargs: Any) -> bool:
            nonlocal refreshed
            refreshed += bool(crossed) and store.serializer.history_is_encoded(profile)
            return refresh_preferences(profile, *args, crossed=crossed, **kwargs)

        monkeypatch.setattr(model, "places_before", counting)
        monkeypatch.setattr(model, "refresh_preferences", counting_refreshes)
        stated = UserProfile(user_id="alice")
        stated.set_explicit_preference("like", "genre:1")
        for s in (store, reference):
            s.put(stated)
        n = most_waiting = 0
        for _ in range(60):
            batch = []
            for _ in range(rng.choice([1, 1, 1, 2, 3, 9])):
                n += 1
                back = 60.0 * rng.randint(1, 20) if rng.random() < 0.15 else 0.0
                features = {f"genre:{rng.randint(0, 4)}": 1.0, "tag:x": 0.5}
                batch.append(signal(n, timestamp=T0 + 60.0 * n - back, features=features))
            before = appended
            for s in (store, reference):
                s.apply_feedback("alice", batch)
            if appended > before and holds:  # the profile the store holds kept its history encoded
                assert store.serializer.history_is_encoded(store._written["alice"].profile)  # type: ignore[attr-defined]
            got, want = store.get("alice"), reference.get("alice")
            assert got is not None
            assert want is not None
            assert got.interaction_history == want.interaction_history
            assert got.interests == want.interests
            assert got.preferences == want.preferences
            ords = history_rows(store, "alice", live=True)
            assert ords == list(range(ords[0], ords[0] + len(want.interaction_history)))
            waiting = len(history_rows(store, "alice")) - len(ords)
            assert waiting < sql_store.TRIM_AFTER
            most_waiting = max(most_waiting, waiting)
        if holds or kind == "postgres":  # (a transaction that reads a profile back cannot tell
            # how many wait, and trims them all once the window passed TRIM_AFTER)
            assert most_waiting == sql_store.TRIM_AFTER - 1  # rows left the window, trimmed together
        if not holds:  # (a held profile is decoded by the test's reads)
            assert appended > 40  # most writes decoded no history
            assert refreshed >= 10  # and refreshes read the encoded history
