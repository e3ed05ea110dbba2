"""The store's parts that need no server, and the ones whose behaviour is easiest to pin alone:
serializer, URLs, TTLs and LRU bounds, the SQLite file, the schema, the sans-I/O runner."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from pathlib import Path

import msgspec
import pytest
import redis

import penchant
import penchant.profile_store as profile_store
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
    user_keys,
)
from penchant.profile_store._effects import Effect, run_async, run_sync
from penchant.profile_store.redis_store import parse_cluster_url
from penchant.user_profile import SCHEMA_VERSION, Interest, InterestModel, Preference, UserProfile

from .store_support import mixed_signals, new_tenant, redis_url, signal


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


def test_serializer_round_trip_through_redis_parts() -> None:
    serializer = ProfileSerializer()
    profile = rich_profile()
    fields = serializer.interest_fields(profile)
    decoded = serializer.decode_parts(
        serializer.encode_document(profile),
        {k.encode(): v.encode() for k, v in fields.items()},
        [serializer.encode_interaction(i) for i in profile.interaction_history],
        version=profile.version,
        landmark=profile.landmark,
        updated_at=profile.updated_at.timestamp(),
    )
    assert decoded == profile


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
    assert serializer.decode_signal(serializer.encode_signal(original)) == original


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
    with pytest.raises(ValidationError):
        parse_cluster_url("redis+cluster://nohost")


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
        assert connection.execute("SELECT version FROM penchant_schema").fetchone()[0] == 1
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
