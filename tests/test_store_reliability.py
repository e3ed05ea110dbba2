"""Reliability of the stores on the real servers: concurrent processes, a Redis crash, complete
deletion, tenant isolation, hostile ids, invalidation between processes, and rebuild."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import subprocess
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster

from penchant import ValidationError
from penchant.profile_store import (
    InMemoryProfileStore,
    PostgresProfileStore,
    RedisProfileStore,
    SQLiteProfileStore,
    SQLProfileStore,
    TieredProfileStore,
    open_database,
    open_store,
    rebuild,
    user_keys,
)
from penchant.profile_store._deferred import _closed_by_server
from penchant.user_profile import InterestModel, UserProfile

from .store_support import (
    assert_one_call_handles_a_burst,
    assert_same_interests,
    cluster_url,
    concurrent_worker,
    make_store,
    mixed_signals,
    new_tenant,
    open_by_name,
    postgres_url,
    redis_url,
    server_env,
    worker_signals,
)


def reference(signals: list[Any]) -> dict[str, UserProfile]:
    """Every user's profile after ``signals``, applied in one process by the in-memory store."""
    memory = InMemoryProfileStore(model=InterestModel(max_history=50))
    memory.apply_feedback_many(signals)
    return {user: profile for user in {s.user_id for s in signals} if (profile := memory.get(user)) is not None}


def raw_redis(kind: str) -> Any:
    if kind in ("redis", "tiered"):
        return redis.Redis.from_url(redis_url())
    nodes = server_env("PENCHANT_TEST_REDIS_CLUSTER_NODES").split(",")
    return redis.cluster.RedisCluster(
        startup_nodes=[redis.cluster.ClusterNode(n.split(":")[0], int(n.split(":")[1])) for n in nodes]
    )


def scan_user_keys(client: Any, tenant: str, user_id: str) -> list[bytes]:
    """Every key of the user, found by SCAN on every master (the ids in these tests hold no
    glob characters, so the pattern is exact)."""
    pattern = user_keys(tenant, user_id)[0].rsplit(":", 1)[0] + ":*"
    if isinstance(client, redis.cluster.RedisCluster):
        found = []
        for node in client.get_primaries():
            found += list(node.redis_connection.scan_iter(match=pattern, count=1000))
        return found
    return list(client.scan_iter(match=pattern, count=1000))


def sql_rows(store: SQLProfileStore, tenant: str, user_id: str) -> dict[str, int]:
    """Rows of the user in every penchant table (found in the database's catalog, so that a
    table added later is covered), counted with a separate connection."""
    counts = {}
    if isinstance(store, SQLiteProfileStore):
        import sqlite3

        with sqlite3.connect(store.path) as connection:
            tables = [
                r[0]
                for r in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'penchant%'"
                )
            ]
            for table in tables:
                if table != "penchant_schema":
                    row = connection.execute(
                        f"SELECT count(*) FROM {table} WHERE tenant = ? AND user_id = ?", (tenant, user_id)
                    ).fetchone()
                    counts[table] = row[0]
        return counts
    import psycopg

    with psycopg.connect(postgres_url()) as connection:
        tables = [
            r[0]
            for r in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'penchant%'"
            )
        ]
        for table in tables:
            if table != "penchant_schema":
                row = connection.execute(
                    f"SELECT count(*) FROM {table} WHERE tenant = %s AND user_id = %s", (tenant, user_id)
                ).fetchone()
                assert row is not None
                counts[table] = row[0]
    return counts


# -- no lost update ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "cluster", "postgres", "tiered", "tiered-cluster-sqlite"])
def test_four_processes_lose_no_update(kind: str, tmp_path: Path) -> None:
    for name in ("PENCHANT_TEST_REDIS_URL", "PENCHANT_TEST_REDIS_CLUSTER_NODES", "PENCHANT_TEST_POSTGRES_URL"):
        server_env(name)
    tenant = new_tenant()
    users, events, batch = 50, 5_000, 100
    sqlite_path = str(tmp_path / "shared.db")
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        calls = pool.starmap(
            concurrent_worker, [(kind, tenant, sqlite_path, worker, users, events, batch) for worker in range(4)]
        )
    assert all(c > 0 for c in calls)
    expected = reference([s for worker in range(4) for s in worker_signals(worker, users, events)])
    assert len(expected) == users
    with open_by_name(kind, tenant, sqlite_path) as store:
        found = store.get_many(list(expected))
    assert sorted(found) == sorted(expected)
    for user, profile in expected.items():
        assert_same_interests(found[user], profile)
        assert sum(i.count for i in found[user].interests.values()) == sum(i.count for i in profile.interests.values())


@pytest.mark.parametrize("kind", ["postgres", "tiered", "sqlite"])
def test_four_processes_writing_one_event_at_a_time_lose_no_update(kind: str, tmp_path: Path) -> None:
    """One event a call, so that each process mostly writes the profile it wrote last in one
    statement (PostgreSQL), which fails and falls back to a transaction whenever another
    process wrote the user since, or the event is a replay."""
    for name in ("PENCHANT_TEST_REDIS_URL", "PENCHANT_TEST_POSTGRES_URL"):
        server_env(name)
    tenant = new_tenant()
    users, events = 5, 400
    sqlite_path = str(tmp_path / "shared.db")
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        calls = pool.starmap(
            concurrent_worker, [(kind, tenant, sqlite_path, worker, users, events, 1) for worker in range(4)]
        )
    assert calls == [events + events // 10] * 4
    expected = reference([s for worker in range(4) for s in worker_signals(worker, users, events)])
    with open_by_name(kind, tenant, sqlite_path) as store:
        found = store.get_many(list(expected))
    assert sorted(found) == sorted(expected)
    for user, profile in expected.items():
        assert_same_interests(found[user], profile)
        assert found[user].event_count == profile.event_count
        assert found[user].interaction_history == profile.interaction_history


def test_postgres_loses_no_update_whatever_isolation_the_server_defaults_to() -> None:
    """penchant's writes are built for READ COMMITTED (a guarded one-statement write checks the
    row as it is when it gets the user's lock): its connections ask for it, so that a server
    whose default is SERIALIZABLE (here set through the URL) neither fails concurrent writes of
    one user nor loses any."""
    url = postgres_url()
    url += ("&" if "?" in url else "?") + "options=-c%20default_transaction_isolation%3Dserializable"
    tenant = new_tenant()
    users, events = 3, 150
    errors: list[BaseException] = []

    async def work_async(store: PostgresProfileStore, signals: list[Any]) -> None:
        for one in signals:
            await store.aapply_feedback(one.user_id, [one])
        await store.aapply_feedback_many(signals[:30])

    def work(worker: int) -> None:  # two workers on the sync API, two on the async one
        try:
            with PostgresProfileStore(url, tenant=tenant, model=InterestModel(max_history=50)) as store:
                signals = worker_signals(worker, users, events)
                if worker % 2:
                    asyncio.run(work_async(store, signals))
                    return
                for one in signals:  # one at a time: the one-statement write, often stale
                    store.apply_feedback(one.user_id, [one])
                store.apply_feedback_many(signals[:30])  # delivered again: the transaction
        except BaseException as error:  # reported by the test's thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = reference([s for worker in range(4) for s in worker_signals(worker, users, events)])
    with PostgresProfileStore(url, tenant=tenant, model=InterestModel(max_history=50)) as store:
        found = store.get_many(list(expected))
        with store._db._sync_pool().connection() as connection:  # type: ignore[attr-defined]
            # The session's default came from the URL (the test tests something), and penchant's
            # setting overrides it.
            query = "SELECT reset_val FROM pg_settings WHERE name = 'default_transaction_isolation'"
            assert connection.execute(query).fetchone() == ("serializable",)
            assert connection.execute("SHOW transaction_isolation").fetchone() == ("read committed",)
    for user, profile in expected.items():
        assert_same_interests(found[user], profile)
        assert found[user].event_count == profile.event_count


# -- Redis crash ---------------------------------------------------------------------------------------


@pytest.fixture
def redis_control() -> Iterator[str]:
    control = server_env("PENCHANT_TEST_REDIS_CTL")
    try:
        yield control
    finally:
        subprocess.run([control, "start"], check=True, capture_output=True)


def wait_for(condition: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_redis_killed_mid_run_loses_no_acknowledged_event(redis_control: str, caplog: pytest.LogCaptureFixture) -> None:
    tenant = new_tenant()
    users = [f"user{i}" for i in range(10)]
    acknowledged: list[Any] = []
    errors: list[BaseException] = []
    half_way = threading.Event()
    resume = threading.Event()
    caplog.set_level(logging.WARNING, logger="penchant.profile_store")

    store = open_store(redis_url(), postgres_url(), tenant, model=InterestModel(max_history=50), retry_interval=0.05)
    assert isinstance(store, TieredProfileStore)

    def writer() -> None:
        try:
            for n in range(60):
                batch = [s for u in users for s in mixed_signals(u, 2, start=2 * n)]
                store.apply_feedback_many(batch)
                acknowledged.extend(batch)  # the call returned: these events are acknowledged
                if n == 20:
                    half_way.set()
                    resume.wait(30)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert half_way.wait(30)
        subprocess.run([redis_control, "kill"], check=True, capture_output=True)
        resume.set()
        assert wait_for(lambda: store.redis_is_down or not thread.is_alive())
        # While Redis is down, a fresh store (no cache) serves reads from SQL.
        with open_store(redis_url(), postgres_url(), tenant, cache=False, retry_interval=60) as reader:
            during = reader.get("user0")
            assert during is not None
            assert reader.stats()["sql_reads"] >= 1
            assert reader.stats()["redis_failures"] >= 1
        thread.join(60)
        assert not errors, errors
        assert store.stats()["redis_failures"] >= 1
        assert "Redis is unavailable" in caplog.text

        subprocess.run([redis_control, "start"], check=True, capture_output=True)
        assert wait_for(lambda: store.get("user0") is not None and not store.redis_is_down)
        store.apply_feedback("user0", mixed_signals("user0", 1, start=1000))
        acknowledged.extend(mixed_signals("user0", 1, start=1000))
    finally:
        resume.set()
        thread.join(60)
        store.close()

    expected = reference(acknowledged)
    with open_store(None, postgres_url(), tenant, cache=False) as durable:
        for user in users:
            stored = durable.get(user)
            assert stored is not None
            assert_same_interests(stored, expected[user])
    # Redis came back empty (no persistence) and was refilled with what was written meanwhile.
    with RedisProfileStore(redis_url(), tenant=tenant, model=InterestModel(max_history=50)) as cache:
        refilled = cache.get_many(users)
    assert sorted(refilled) == sorted(users)
    for user in users:
        assert_same_interests(refilled[user], expected[user])
    assert "Redis is back" in caplog.text


def test_a_process_reading_only_cached_profiles_notices_that_redis_is_back(redis_control: str, tmp_path: Path) -> None:
    """Reads the cache answers never reach Redis: once the retry interval has passed, a read
    probes it, so that the store learns it is back (and drops the copies whose invalidations
    it missed) even when its listener is not there to tell it."""
    store = open_store(redis_url(), f"sqlite:///{tmp_path}/probe.db", new_tenant(), retry_interval=0.05)
    assert isinstance(store, TieredProfileStore)
    try:
        store.apply_feedback("alice", mixed_signals("alice", 2))
        assert store.wait_until_listening()
        store._listen = False  # type: ignore[attr-defined]
        listener, store._listener = store._listener, None  # type: ignore[attr-defined]
        listener.stop()
        subprocess.run([redis_control, "kill"], check=True, capture_output=True)
        store.apply_feedback("alice", mixed_signals("alice", 2, start=2))  # SQL, then the cache
        # The write noticed the outage, or its reply does (a socket the server closed may still
        # take one write).
        store.flush()
        assert store.redis_is_down
        assert store.get_shared("alice").version == 2  # type: ignore[union-attr]  # the cache
        subprocess.run([redis_control, "start"], check=True, capture_output=True)
        assert wait_for(lambda: store.get_shared("alice") is not None and not store.redis_is_down)
        assert store.stats()["redis_refills"] >= 1  # alice, written while it was down
    finally:
        store.close()


def test_redis_unreachable_from_the_start_falls_back_to_sql(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="penchant.profile_store")
    with open_store("redis://127.0.0.1:1/0", f"sqlite:///{tmp_path}/p.db", "t", retry_interval=60) as store:
        profile = store.apply_feedback("alice", mixed_signals("alice", 4))
        assert profile.version == 1
        assert store.get("alice") is not None
        assert store.apply_feedback("alice", mixed_signals("alice", 2, start=10)).version == 2
        stats = store.stats()
        assert stats["redis_down"] is True
        assert stats["redis_failures"] == 1
        assert stats["redis_skipped"] >= 1
    assert caplog.text.count("Redis is unavailable") == 1


# -- complete deletion ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "cluster", "sqlite", "postgres", "tiered", "tiered-cluster-sqlite"])
def test_delete_removes_every_key_and_row(kind: str, tmp_path: Path) -> None:
    tenant = new_tenant()
    with make_store(kind, tmp_path, tenant=tenant) as store:
        store.apply_feedback("victim", mixed_signals("victim", 8))
        store.put(store.get("victim"))  # type: ignore[arg-type]
        store.apply_feedback("bystander", mixed_signals("bystander", 3))
        redis_client = None
        if kind in ("redis", "tiered"):
            redis_client = raw_redis("redis")
        elif kind in ("cluster", "tiered-cluster-sqlite"):
            redis_client = raw_redis("cluster")
        sql = None
        if isinstance(store, SQLProfileStore):
            sql = store
        elif isinstance(store, TieredProfileStore):
            sql = store.database
        # The data is there before (so the checks below can fail).
        if redis_client is not None:
            assert len(scan_user_keys(redis_client, tenant, "victim")) >= 3
        if sql is not None:
            rows = {"penchant_events": 8, "penchant_profiles": 1, "penchant_history": 8}
            assert sql_rows(sql, tenant, "victim") == rows

        assert store.delete("victim") is True

        assert store.get("victim") is None
        if redis_client is not None:
            assert scan_user_keys(redis_client, tenant, "victim") == []
            assert scan_user_keys(redis_client, tenant, "bystander") != []
            redis_client.close()
        if sql is not None:
            assert set(sql_rows(sql, tenant, "victim").values()) == {0}
            assert sql_rows(sql, tenant, "bystander")["penchant_events"] == 3


# -- tenants and hostile ids --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "cluster", "sqlite", "postgres", "tiered"])
def test_tenant_cannot_read_or_overwrite_another(kind: str, tmp_path: Path) -> None:
    # Without escaping, tenant "x:a" + user "b" and tenant "x" + user "a:b" would share keys.
    base = new_tenant()
    with (
        make_store(kind, tmp_path, tenant=f"{base}:a") as first,
        make_store(kind, tmp_path, tenant=base) as second,
    ):
        first.apply_feedback("b", mixed_signals("b", 5))
        assert second.get("a:b") is None
        assert second.get("b") is None
        second.put(UserProfile(user_id="b", explicit_preferences={"owner": "second"}))
        second.apply_feedback("a:b", mixed_signals("a:b", 2))
        assert second.delete("b") is True
        mine = first.get("b")
        assert mine is not None
        assert mine.version == 1
        assert mine.explicit_preferences == {}
        assert_same_interests(mine, reference(mixed_signals("b", 5))["b"])
        # The same event ids in another tenant are other events.
        other = second.apply_feedback("b", mixed_signals("b", 5))
        assert other.version == 1


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_hostile_ids_leave_no_key_behind(kind: str, tmp_path: Path) -> None:
    tenant = new_tenant()
    client = raw_redis(kind)
    with make_store(kind, tmp_path, tenant=tenant) as store:
        for bad in ["x" * 10_240, "a\nb", "a\r\nDEL *", "\x00"]:
            with pytest.raises(ValidationError):
                store.apply_feedback(bad, [])
            with pytest.raises(ValidationError):
                store.put(_bad_profile(bad))
        for tricky in ["*", "}", "{", ":", "[a-z]?", "penchant:{t:u}:profile"]:
            store.apply_feedback(tricky, mixed_signals(tricky, 1))
        store.apply_feedback("normal", mixed_signals("normal", 1))
        for tricky in ["*", "}", "{", ":", "[a-z]?", "penchant:{t:u}:profile"]:
            assert store.delete(tricky)
        assert store.get("normal") is not None
        assert scan_user_keys(client, tenant, "normal") != []
    with pytest.raises(ValidationError):
        RedisProfileStore(redis_url(), tenant="x" * 10_240)
    with pytest.raises(ValidationError):
        RedisProfileStore(redis_url(), tenant="a\nb")
    client.close()


def _bad_profile(user_id: str) -> UserProfile:
    profile = UserProfile(user_id="placeholder")
    profile.user_id = user_id  # changed after construction: the store must check again
    return profile


# -- invalidation between processes -------------------------------------------------------------------


@pytest.mark.parametrize("redis_kind", ["redis", "cluster"])
def test_other_processes_caches_are_invalidated(redis_kind: str, tmp_path: Path) -> None:
    tenant = new_tenant()
    url = redis_url() if redis_kind == "redis" else cluster_url()
    database = f"sqlite:///{tmp_path}/shared.db"
    model = InterestModel(max_history=50)
    with open_store(url, database, tenant, model=model) as reader, open_store(url, database, tenant) as writer:
        assert reader.wait_until_listening()
        writer.apply_feedback("alice", mixed_signals("alice", 3))
        cached = reader.get_shared("alice")
        assert cached is not None
        assert cached.version == 1
        assert reader.get_shared("alice") is cached  # served by the cache
        writer.apply_feedback("alice", mixed_signals("alice", 3, start=3))
        assert wait_for(lambda: reader.get_shared("alice").version == 2)  # type: ignore[union-attr]
        assert_same_interests(reader.get("alice"), reference(mixed_signals("alice", 6))["alice"])  # type: ignore[arg-type]
        # A batch of several users is announced in one message: each cached copy still goes.
        writer.apply_feedback("bob", mixed_signals("bob", 2))
        for user_id, version in (("alice", 2), ("bob", 1)):
            assert wait_for(lambda u=user_id, v=version: reader.get_shared(u).version == v)  # type: ignore[misc]
        writer.apply_feedback_many([*mixed_signals("alice", 2, start=6), *mixed_signals("bob", 2, start=2)])
        assert wait_for(lambda: reader.get_shared("alice").version == 3)  # type: ignore[union-attr]
        assert wait_for(lambda: reader.get_shared("bob").version == 2)  # type: ignore[union-attr]
        writer.delete("alice")
        assert wait_for(lambda: reader.get_shared("alice") is None)
        assert reader.stats()["invalidations"] >= 5


def _subscriber(store: TieredProfileStore) -> Any:
    listener = store._listener  # type: ignore[attr-defined]
    assert listener is not None
    return listener


@pytest.mark.parametrize("parser", ["hiredis", "penchant's own"])
def test_a_call_handles_every_invalidation_that_arrived_before_it_reads_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parser: str
) -> None:
    """No thread waits for the messages: the store's calls read them, all that have arrived,
    before they look in the cache."""
    from penchant.profile_store import _invalidation

    monkeypatch.setattr(_invalidation, "IDLE_READ_INTERVAL", 3600.0)  # the thread stays asleep
    if parser != "hiredis":
        monkeypatch.setattr(_invalidation, "_parser", _invalidation.RespParser)
    with open_store(redis_url(), f"sqlite:///{tmp_path}/burst.db", new_tenant()) as store:
        assert isinstance(store, TieredProfileStore)
        assert_one_call_handles_a_burst(store, redis_url())
        listener = _subscriber(store)
        assert isinstance(listener._replies, _invalidation.RespParser) == (parser != "hiredis")
    assert not listener._thread.is_alive()  # closing stopped it
    assert listener._socket is None


def test_a_process_that_makes_no_calls_still_reads_its_invalidations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that messages do not pile up in Redis for a quiet subscriber."""
    from penchant.profile_store import _invalidation

    monkeypatch.setattr(_invalidation, "IDLE_READ_INTERVAL", 0.05)
    with open_store(redis_url(), f"sqlite:///{tmp_path}/quiet.db", new_tenant()) as store:
        assert isinstance(store, TieredProfileStore)
        assert store.wait_until_listening()
        client = redis.Redis.from_url(redis_url())
        client.publish(store.redis.channel, "1\x1falice")  # type: ignore[union-attr]
        client.close()
        assert wait_for(lambda: store.stats()["invalidations"] == 1, timeout=5)


def test_a_lost_subscription_clears_the_cache_and_subscribes_again(tmp_path: Path) -> None:
    tenant, database = new_tenant(), f"sqlite:///{tmp_path}/lost.db"
    with open_store(redis_url(), database, tenant) as reader, open_store(redis_url(), database, tenant) as writer:
        assert isinstance(reader, TieredProfileStore)
        writer.apply_feedback("alice", mixed_signals("alice", 2))
        assert reader.wait_until_listening()
        cached = reader.get_shared("alice")
        assert cached is not None
        assert reader.get_shared("alice") is cached
        subscriber = _subscriber(reader)
        host, port = subscriber._socket.getsockname()[:2]
        open_client, release = subscriber._open_client, threading.Event()

        def held() -> Any:  # the next subscription waits until the test lets it through
            release.wait(10)
            return open_client()

        subscriber._open_client = held
        admin = redis.Redis.from_url(redis_url())
        assert admin.client_kill_filter(addr=f"{host}:{port}") == 1
        admin.close()
        time.sleep(0.1)  # the server's FIN reaches the socket
        meanwhile = reader.get_shared("alice")
        assert meanwhile is not cached  # the loss was noticed: the cache went
        assert reader.get_shared("alice") is meanwhile  # cached while nobody listens
        release.set()
        assert reader.wait_until_listening()  # subscribed again
        again = reader.get_shared("alice")
        assert again is not meanwhile  # what was cached meanwhile went too
        assert again is not None
        assert reader.get_shared("alice") is again
        writer.apply_feedback("alice", mixed_signals("alice", 2, start=2))
        assert wait_for(lambda: reader.get_shared("alice").version == again.version + 1)  # type: ignore[union-attr]


def test_a_read_in_flight_caches_nothing_an_invalidation_handled_meanwhile_made_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread or task of the process handles an invalidation while a call reads Redis:
    what the call read is returned but not cached, or it would outlive its invalidation."""
    from penchant.profile_store import _invalidation

    monkeypatch.setattr(_invalidation, "IDLE_READ_INTERVAL", 3600.0)  # only the test reads
    tenant, database = new_tenant(), f"sqlite:///{tmp_path}/race.db"
    with open_store(redis_url(), database, tenant) as reader, open_store(redis_url(), database, tenant) as writer:
        assert isinstance(reader, TieredProfileStore)
        assert reader.wait_until_listening()
        listener = _subscriber(reader)

        def handled(count: int) -> bool:  # as another thread's call would read them
            listener._next_read = 0.0
            listener.catch_up()
            return bool(reader.stats()["invalidations"] >= count)

        writer.apply_feedback("alice", mixed_signals("alice", 2))
        assert wait_for(lambda: handled(1), timeout=10)  # version 1's message
        assert reader.get("alice").version == 1  # type: ignore[union-attr]  # Redis now holds its snapshot
        reader.cache.clear()  # type: ignore[union-attr]  # so the next read is one round trip
        connection = reader.redis.connection  # type: ignore[union-attr]
        read, armed = connection.run_sync, [True]

        def meanwhile(calls: Any) -> Any:
            replies = read(calls)
            if armed:
                armed.clear()
                writer.apply_feedback("alice", mixed_signals("alice", 2, start=2))  # version 2
                assert wait_for(lambda: handled(2), timeout=10)  # before this call caches
            return replies

        monkeypatch.setattr(connection, "run_sync", meanwhile)
        assert reader.get("alice").version == 1  # type: ignore[union-attr]  # what it read
        assert not armed
        assert reader.get_shared("alice").version == 2  # type: ignore[union-attr]  # not the stale copy


def test_subscriptions_take_no_connection_from_an_explicit_clients_pool(tmp_path: Path) -> None:
    """Subscribing again after each lost connection must not use up the pool of the client the
    application passed (its own commands need it)."""
    tenant, model = new_tenant(), InterestModel(max_history=50)
    client = redis.Redis.from_url(redis_url(), max_connections=2)
    redis_tier = RedisProfileStore(client=client, tenant=tenant, model=model)
    cache = InMemoryProfileStore(tenant=tenant, model=model)
    database = SQLiteProfileStore(tmp_path / "pool.db", tenant=tenant, model=model)
    admin = redis.Redis.from_url(redis_url())
    with TieredProfileStore(database, redis_tier, cache) as store:
        store.apply_feedback("alice", mixed_signals("alice", 2))
        for _ in range(4):
            assert store.wait_until_listening()
            time.sleep(0.05)
            store.get_shared("alice")  # reads what came before, so that the next read meets the end
            host, port = _subscriber(store)._socket.getsockname()[:2]
            assert admin.client_kill_filter(addr=f"{host}:{port}") == 1
            time.sleep(0.1)
            store.get_shared("alice")  # notices the loss
        assert store.wait_until_listening()
        assert client.ping()
        assert store.apply_feedback("alice", mixed_signals("alice", 2, start=2)).version == 2
    admin.close()
    client.close()


def test_a_message_that_makes_no_sense_clears_the_cache_and_keeps_the_subscription(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="penchant.profile_store")
    with open_store(redis_url(), f"sqlite:///{tmp_path}/bad.db", new_tenant()) as store:
        assert isinstance(store, TieredProfileStore)
        store.apply_feedback("alice", mixed_signals("alice", 2))
        assert store.wait_until_listening()
        subscription = _subscriber(store)._socket
        cached = store.get_shared("alice")
        client = redis.Redis.from_url(redis_url())
        client.publish(store.redis.channel, "not a version\x1fbob")  # type: ignore[union-attr]
        client.close()
        assert wait_for(lambda: store.get_shared("alice") is not cached, timeout=5)
        assert "could not be handled" in caplog.text
        assert _subscriber(store)._socket is subscription


def test_a_forked_process_subscribes_anew_and_leaves_its_parents_subscription_alone(tmp_path: Path) -> None:
    """A child inherits the subscriber's socket; reading from it would steal its parent's
    messages and corrupt its stream. The child subscribes on its own connection instead."""
    tenant, database = new_tenant(), f"sqlite:///{tmp_path}/fork.db"
    with open_store(redis_url(), database, tenant) as reader, open_store(redis_url(), database, tenant) as writer:
        assert isinstance(reader, TieredProfileStore)
        writer.apply_feedback("alice", mixed_signals("alice", 2))
        assert reader.wait_until_listening()
        subscription = _subscriber(reader)._socket
        assert reader.get_shared("alice").version == 1  # type: ignore[union-attr]  # cached
        subscribed = multiprocessing.get_context("fork").Event()

        def child() -> None:
            ok = reader.get_shared("alice") is not None and reader.wait_until_listening(10)
            ok = ok and _subscriber(reader)._socket is not subscription
            subscribed.set()
            ok = ok and wait_for(lambda: reader.get_shared("alice").version == 3, timeout=10)  # type: ignore[union-attr]
            os._exit(0 if ok else 1)

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        assert subscribed.wait(15)
        for start in (2, 4):  # versions 2 and 3, which the child waits for
            writer.apply_feedback("alice", mixed_signals("alice", 2, start=start))
            time.sleep(0.05)
        process.join(20)
        assert process.exitcode == 0
        assert wait_for(lambda: reader.get_shared("alice").version == 3, timeout=10)  # type: ignore[union-attr]
        assert _subscriber(reader)._socket is subscription  # the parent's was never disturbed


# -- replies read later ---------------------------------------------------------------------------------


def _redis_get(key: str) -> Any:
    client = redis.Redis.from_url(redis_url())
    try:
        return client.get(key)
    finally:
        client.close()


def _redis_version(tenant: str, user_id: str) -> int | None:
    client = redis.Redis.from_url(redis_url())
    try:
        version = client.hget(user_keys(tenant, user_id)[0], "version")
    finally:
        client.close()
    return None if version is None else int(version)


def test_a_write_returns_before_redis_answers_and_the_next_operation_reads_the_reply(tmp_path: Path) -> None:
    tenant = new_tenant()
    with open_store(redis_url(), f"sqlite:///{tmp_path}/later.db", tenant) as store:
        assert isinstance(store, TieredProfileStore)
        assert store.apply_feedback("alice", mixed_signals("alice", 3)).version == 1
        assert store._deferred is not None  # type: ignore[attr-defined]
        assert store._deferred.waiting  # type: ignore[attr-defined]
        assert wait_for(lambda: _redis_version(tenant, "alice") == 1)  # Redis ran it meanwhile
        assert store.ttl("alice") is not None  # an operation that uses Redis reads the reply first
        assert not store._deferred.waiting  # type: ignore[attr-defined]
        assert store.stats()["redis_failures"] == 0
    with open_store(redis_url(), f"sqlite:///{tmp_path}/waits.db", tenant, wait_for_redis=True) as waiting:
        assert waiting._deferred is None  # type: ignore[attr-defined]
        assert waiting.apply_feedback("bob", mixed_signals("bob", 3)).version == 1
        assert _redis_version(tenant, "bob") == 1  # Redis had answered when the call returned


def test_a_write_whose_reply_waits_holds_nothing_of_the_profile(tmp_path: Path) -> None:
    """Until its reply is read, a write is remembered by its users alone: the profile answered
    (and the history entries it added) is the caller's to drop."""
    with open_store(redis_url(), f"sqlite:///{tmp_path}/held.db", new_tenant()) as store:
        profile = store.apply_feedback("alice", mixed_signals("alice", 3))
        assert store._deferred.waiting  # type: ignore[attr-defined]
        answered = weakref.ref(profile)
        del profile
        assert answered() is None
        store.flush()
        assert store.stats()["redis_stale_fallbacks"] == 0


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_read_from_redis_after_a_write_finds_it_though_the_reply_was_not_read(tmp_path: Path, api: str) -> None:
    """Without the cache, a read goes to Redis on another connection: it must find what this
    process wrote, whether Redis has run the write's commands yet or not. Redis is paused for
    writes, so the write's script waits while the read's snapshot (an HMGET) would not."""
    import asyncio

    tenant = new_tenant()
    with open_store(redis_url(), f"sqlite:///{tmp_path}/ryw.db", tenant, cache=False) as store:
        store.apply_feedback("alice", mixed_signals("alice", 3))
        assert store.get("alice").version == 1  # type: ignore[union-attr]  # the snapshot is in Redis
        client = redis.Redis.from_url(redis_url())
        unpause = threading.Timer(1.0, client.execute_command, ("CLIENT", "UNPAUSE"))
        try:
            client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
            unpause.start()
            store.apply_feedback("alice", mixed_signals("alice", 2, start=3))  # SQL: version 2
            found = store.get("alice") if api == "sync" else asyncio.run(store.aget("alice"))
        finally:
            unpause.join()
            client.close()
        assert found is not None
        assert found.version == 2
        assert store.stats()["sql_reads"] == 0  # Redis answered


def _lose_replies(store: TieredProfileStore) -> None:
    """Closes the connection that a write's reply waits on, as a server that restarted would."""
    deferred = store._deferred  # type: ignore[attr-defined]
    assert deferred is not None
    assert deferred.waiting
    deferred._connection.disconnect()


def test_a_change_whose_reply_was_lost_is_copied_from_sql(tmp_path: Path) -> None:
    """Not sent again: by the time the loss is known, what the change held may be old. Redis
    is paused for writes, so the change's script is still queued when its connection closes,
    and Redis drops it."""
    tenant = new_tenant()
    with open_store(redis_url(), f"sqlite:///{tmp_path}/again.db", tenant) as store:
        assert isinstance(store, TieredProfileStore)
        store.apply_feedback("alice", mixed_signals("alice", 3))
        store.flush()
        client = redis.Redis.from_url(redis_url())
        try:
            client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
            store.apply_feedback("alice", mixed_signals("alice", 2, start=3))  # version 2: waits for nothing
            _lose_replies(store)
        finally:
            client.execute_command("CLIENT", "UNPAUSE")
            client.close()
        assert _redis_version(tenant, "alice") == 1  # the script never ran
        store.flush()
        stats = store.stats()
        assert (stats["redis_failures"], stats["redis_refills"], stats["redis_down"]) == (1, 1, False)
        assert _redis_version(tenant, "alice") == 2
        store.apply_feedback("alice", mixed_signals("alice", 2, start=5))  # follows the copy
        store.flush()
        assert (store.stats()["redis_stale_fallbacks"], _redis_version(tenant, "alice")) == (0, 3)


def test_a_failure_to_copy_a_lost_change_leaves_it_to_the_refill_and_fails_nothing_else(tmp_path: Path) -> None:
    tenant = new_tenant()
    with open_store(redis_url(), f"sqlite:///{tmp_path}/copy.db", tenant) as store:
        assert isinstance(store, TieredProfileStore)
        store.apply_feedback("bob", mixed_signals("bob", 2))
        store.apply_feedback("alice", mixed_signals("alice", 3))
        _lose_replies(store)

        def failing(*_: Any) -> Any:
            raise redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'")
            yield

        store._copy_calls = failing  # type: ignore[method-assign]
        assert store.ttl("bob") is None  # an operation that reads the replies goes on (Redis is left alone)
        assert store.get("bob").version == 1  # type: ignore[union-attr]
        stats = store.stats()
        assert (stats["pending_refills"], stats["redis_down"]) == (1, True)
        del store._copy_calls  # type: ignore[attr-defined]
        assert wait_for(lambda: store.ttl("alice") is not None and not store.redis_is_down)
        assert store.stats()["redis_refills"] == 1  # alice, once Redis was tried again
        assert _redis_version(tenant, "alice") == 1


def test_replies_lost_in_an_outage_leave_the_profile_to_the_refill(
    redis_control: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="penchant.profile_store")
    tenant = new_tenant()
    with open_store(redis_url(), f"sqlite:///{tmp_path}/outage.db", tenant, retry_interval=0.05) as store:
        assert isinstance(store, TieredProfileStore)
        store.apply_feedback("alice", mixed_signals("alice", 3))
        _lose_replies(store)
        subprocess.run([redis_control, "kill"], check=True, capture_output=True)
        assert store.ttl("alice") is None  # reads the replies: they are lost, and SQL's copy cannot go
        stats = store.stats()
        assert stats["redis_failures"] >= 1
        assert stats["pending_refills"] == 1
        assert "Redis is unavailable" in caplog.text
        subprocess.run([redis_control, "start"], check=True, capture_output=True)
        assert wait_for(lambda: store.ttl("alice") is not None and not store.redis_is_down)
        assert store.stats()["redis_refills"] == 1
        assert _redis_version(tenant, "alice") == 1


def test_a_write_that_finds_redis_behind_drops_its_copy_at_once(tmp_path: Path) -> None:
    """Redis missed a change (written meanwhile without it): the next change's script finds
    Redis at an older version. It removes that copy and announces the new version, so no
    reader takes it for current until the whole profile is written."""
    tenant, database = new_tenant(), f"sqlite:///{tmp_path}/behind.db"
    with (
        open_store(redis_url(), database, tenant) as store,
        open_store(redis_url(), database, tenant, model=InterestModel(max_history=50)) as reader,
        open_store(None, database, tenant, cache=False) as without_redis,
    ):
        assert isinstance(reader, TieredProfileStore)
        store.apply_feedback("alice", mixed_signals("alice", 3))
        store.flush()
        assert reader.wait_until_listening()
        assert reader.get_shared("alice").version == 1  # type: ignore[union-attr]  # cached
        without_redis.apply_feedback("alice", mixed_signals("alice", 2, start=3))  # version 2, SQL only
        old = without_redis.get("alice")  # version 2, as a reader read it before the change
        assert old is not None
        store.apply_feedback("alice", mixed_signals("alice", 2, start=5))  # version 3
        # Until the store reads the reply (its next operation), Redis holds no copy.
        assert wait_for(lambda: _redis_version(tenant, "alice") is None)
        floor = user_keys(tenant, "alice")[0].removesuffix("profile") + "floor"
        assert _redis_get(floor) == b"3"
        # That reader's fill comes late: the floor the script left keeps it out.
        redis_tier = reader.redis
        assert redis_tier is not None
        assert redis_tier.connection.run_sync([redis_tier._write_call("fill", old, "2")])[0][0] == b"skip"
        assert _redis_version(tenant, "alice") is None
        assert wait_for(lambda: reader.get_shared("alice").version == 3)  # type: ignore[union-attr]
        assert _redis_version(tenant, "alice") == 3  # the reader filled it from SQL
        store.flush()
        assert store.stats()["redis_stale_fallbacks"] == 1
        assert _redis_version(tenant, "alice") == 3
        client = redis.Redis.from_url(redis_url())
        try:
            client.set(floor, 9, px=60_000)  # as a script that came late would leave it
            assert store.delete("alice")
            assert client.exists(floor) == 0  # deleting a user removes every trace
        finally:
            client.close()


def test_a_connection_the_server_closed_is_replaced_and_loads_the_scripts(tmp_path: Path) -> None:
    """As after a restart: the server closed the idle connection, and lacks the scripts."""
    tenant = new_tenant()
    with open_store(redis_url(), f"sqlite:///{tmp_path}/closed.db", tenant) as store:
        assert isinstance(store, TieredProfileStore)
        store.apply_feedback("alice", mixed_signals("alice", 3))
        store.flush()
        client = redis.Redis.from_url(redis_url())
        try:
            client.script_flush()
            connection = store._deferred._connection  # type: ignore[attr-defined]
            connection.send_command("CLIENT", "ID")  # no reply is due: flushed
            assert client.client_kill_filter(_id=connection.read_response()) == 1
            assert wait_for(lambda: _closed_by_server(connection))  # the end of its stream arrived
        finally:
            client.close()
        store.apply_feedback("alice", mixed_signals("alice", 2, start=3))
        store.flush()
        stats = store.stats()
        assert (stats["redis_failures"], stats["redis_stale_fallbacks"], stats["redis_down"]) == (0, 0, False)
        assert _redis_version(tenant, "alice") == 2


def test_scripts_flushed_under_a_live_connection_leave_the_profile_copied_from_sql(
    tmp_path: Path,
) -> None:
    tenant = new_tenant()
    with open_store(redis_url(), f"sqlite:///{tmp_path}/noscript.db", tenant, retry_interval=0.05) as store:
        assert isinstance(store, TieredProfileStore)
        store.apply_feedback("alice", mixed_signals("alice", 3))
        store.flush()
        client = redis.Redis.from_url(redis_url())
        client.script_flush()
        client.close()
        store.apply_feedback("alice", mixed_signals("alice", 2, start=3))
        store.flush()  # NOSCRIPT: Redis did not run it, and the profile is copied from SQL
        stats = store.stats()
        assert (stats["redis_failures"], stats["redis_refills"], stats["redis_down"]) == (1, 1, False)
        assert _redis_version(tenant, "alice") == 2


def test_a_reply_read_late_does_not_bring_back_a_user_deleted_meanwhile(tmp_path: Path) -> None:
    """Redis lost a profile; the next change's script finds it missing (and answers so), and
    before its reply is read another process deletes the user. What the change held must not
    be written into Redis then."""
    tenant, database = new_tenant(), f"sqlite:///{tmp_path}/deleted.db"
    with open_store(redis_url(), database, tenant) as store, open_store(redis_url(), database, tenant) as other:
        store.apply_feedback("alice", mixed_signals("alice", 3))
        store.flush()
        client = redis.Redis.from_url(redis_url())
        client.delete(*user_keys(tenant, "alice"))  # evicted, say
        store.apply_feedback("alice", mixed_signals("alice", 2, start=3))  # stale: its reply waits
        assert wait_for(lambda: _redis_version(tenant, "alice") is None)
        assert other.delete("alice")
        store.flush()
        assert store.stats()["redis_stale_fallbacks"] == 1
        assert client.exists(*user_keys(tenant, "alice")) == 0
        client.close()
        assert wait_for(lambda: store.get("alice") is None)  # once the deletion's message arrived


def test_an_async_write_during_an_outage_does_not_end_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Asyncio waits for Redis's replies: trying to send them without waiting, which does
    nothing there, must not count as Redis answering."""
    import asyncio

    caplog.set_level(logging.WARNING, logger="penchant.profile_store")

    async def writes(store: Any) -> None:
        for start in range(0, 8, 2):
            await store.aapply_feedback("alice", mixed_signals("alice", 2, start=start))
            await asyncio.sleep(0.03)

    database = f"sqlite:///{tmp_path}/down.db"
    with open_store("redis://127.0.0.1:1/0", database, new_tenant(), retry_interval=0.01) as store:
        asyncio.run(writes(store))
        assert store.redis_is_down
        assert store.stats()["redis_failures"] == 4  # each write tried Redis, and failed
    assert "Redis is back" not in caplog.text


def test_a_forked_process_leaves_its_parents_replies_alone(tmp_path: Path) -> None:
    tenant = new_tenant()
    with open_store(redis_url(), f"sqlite:///{tmp_path}/forked.db", tenant) as store:
        assert isinstance(store, TieredProfileStore)
        store.apply_feedback("alice", mixed_signals("alice", 3))
        deferred = store._deferred  # type: ignore[attr-defined]
        assert deferred is not None
        assert deferred.waiting
        sock = deferred._connection._sock

        def child() -> None:
            ok = not deferred.waiting and deferred._connection is None
            ok = ok and store.apply_feedback("bob", mixed_signals("bob", 2)).version == 1
            ok = ok and store.ttl("bob") is not None and store.stats()["redis_failures"] == 0
            os._exit(0 if ok else 1)

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join(20)
        assert process.exitcode == 0
        assert deferred.waiting  # the parent's reply is still the parent's to read
        assert deferred._connection._sock is sock
        store.flush()
        assert deferred._connection._sock is sock  # nothing went wrong with it
        assert (store.stats()["redis_failures"], store.stats()["redis_stale_fallbacks"]) == (0, 0)
        assert _redis_version(tenant, "bob") == 1


# -- rebuild --------------------------------------------------------------------------------------------


def test_rebuild_replays_the_event_log_into_redis(tmp_path: Path) -> None:
    tenant = new_tenant()
    users = ["u1", "u2", "u3"]
    signals = [s for u in users for s in mixed_signals(u, 7)]
    with open_store(redis_url(), postgres_url(), tenant, model=InterestModel(max_history=50)) as store:
        store.apply_feedback_many(signals)
        store.put(UserProfile(user_id="snapshot-only", explicit_preferences={"k": "v"}))
        client = redis.Redis.from_url(redis_url())
        client.delete(*user_keys(tenant, "u1"))  # lost
        client.hset(user_keys(tenant, "u2")[1], "genre:0\x1f+604800", "12345")  # corrupted
        client.close()
        with RedisProfileStore(redis_url(), tenant=tenant, model=InterestModel(max_history=50)) as direct:
            assert direct.get("u1") is None
        report = store.rebuild()
        assert report.users == 4
        assert report.events == len(signals)
    expected = reference(signals)
    with RedisProfileStore(redis_url(), tenant=tenant, model=InterestModel(max_history=50)) as direct:
        found = direct.get_many([*users, "snapshot-only"])
        for user in users:
            assert_same_interests(found[user], expected[user])
            assert found[user].version == 1
        assert found["snapshot-only"].explicit_preferences == {"k": "v"}
        client = redis.Redis.from_url(redis_url())
        client.delete(*user_keys(tenant, "u3"))
        client.close()
        report = rebuild(redis_url(), postgres_url(), tenant, user_ids=["u3"])
        assert report == type(report)(users=1, events=7)
        again = direct.get("u3")
        assert again is not None
        assert_same_interests(again, expected["u3"])


def test_rebuild_drops_the_copies_other_processes_cached_at_the_same_version() -> None:
    """Rebuild repairs Redis without moving versions: another process's copy of the broken
    profile, at that version, must go too."""
    tenant, model = new_tenant(), InterestModel(max_history=50)
    signals = mixed_signals("u2", 7)
    with (
        open_store(redis_url(), postgres_url(), tenant, model=model) as writer,
        open_store(redis_url(), postgres_url(), tenant, model=InterestModel(max_history=50)) as reader,
    ):
        assert isinstance(reader, TieredProfileStore)
        writer.apply_feedback_many(signals)
        assert reader.wait_until_listening()
        client = redis.Redis.from_url(redis_url())
        client.hset(user_keys(tenant, "u2")[1], "genre:0\x1f+604800", "12345")  # corrupted
        client.close()
        broken = reader.get_shared("u2")
        assert broken is not None
        assert broken.interests["genre:0"].sums["+604800"] == 12345  # what Redis held
        assert reader.get_shared("u2") is broken  # cached
        assert writer.rebuild(["u2"]).users == 1
        assert wait_for(lambda: reader.get_shared("u2") is not broken, timeout=10)
        assert_same_interests(reader.get_shared("u2"), reference(signals)["u2"])  # type: ignore[arg-type]


# -- outages of every tier -------------------------------------------------------------------------------


def test_store_unavailable_when_no_tier_can_serve(tmp_path: Path) -> None:
    from penchant import StoreUnavailableError
    from penchant.profile_store import PostgresProfileStore

    with RedisProfileStore("redis://127.0.0.1:1/0", socket_timeout=0.5) as dead_redis:
        with pytest.raises(StoreUnavailableError):
            dead_redis.get("alice")
        with pytest.raises(StoreUnavailableError):
            dead_redis.apply_feedback("alice", mixed_signals("alice", 1))
    with (
        PostgresProfileStore("postgresql://postgres@127.0.0.1:1/none", timeout=0.5) as dead_postgres,
        pytest.raises(StoreUnavailableError),
    ):
        dead_postgres.get("alice")
    model = InterestModel()
    with TieredProfileStore(
        PostgresProfileStore("postgresql://postgres@127.0.0.1:1/none", timeout=0.5, model=model),
        RedisProfileStore("redis://127.0.0.1:1/0", socket_timeout=0.5, model=model),
        InMemoryProfileStore(model=model),
    ) as dead:
        with pytest.raises(StoreUnavailableError):
            dead.get("alice")
        with pytest.raises(StoreUnavailableError):
            dead.apply_feedback("alice", mixed_signals("alice", 1))
    unwritable = tmp_path / "read-only"
    unwritable.mkdir()
    unwritable.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root writes anywhere: this part needs an ordinary user
            with open_database(f"sqlite:///{unwritable}/p.db") as sqlite_store, pytest.raises(StoreUnavailableError):
                sqlite_store.get("alice")
    finally:
        unwritable.chmod(0o700)
