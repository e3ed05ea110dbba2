"""Profile store benchmarks on the real servers (.ci/services.sh: Redis, a Redis Cluster and
PostgreSQL on loopback). Figures go to BENCHMARKS.md with the command and the machine.

    pytest benches/bench_store.py --benchmark-columns=min,median,mean,max,rounds

Latency targets are stated as p99, which pytest-benchmark does not print: each latency
benchmark records ``p99_us`` (from its raw timings) in ``extra_info`` (see --benchmark-json).
Ingestion records ``events_per_second``. A "typical" profile here holds 20 interests and 50
history entries, built from 50 events.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from penchant.feedback_collector import FeedbackType, Signal
from penchant.profile_store import InMemoryProfileStore, ProfileStore, RedisProfileStore, open_store
from penchant.user_profile import InterestModel

T0 = 1_700_000_000.0


def server(name: str) -> str:
    value = os.environ.get(name)
    if value:
        return value
    message = f'{name} is not set: start the servers with eval "$(bash .ci/services.sh)"'
    if os.environ.get("PENCHANT_TEST_INSTALLED") == "1" or os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def event(user_id: str, n: int, event_id: str | None = None) -> Signal:
    return Signal(
        event_id=event_id or f"{user_id}-{n}",
        user_id=user_id,
        item_id=f"item{n % 97}",
        feedback_type=FeedbackType.CLICK,
        value=1.0,
        weight=-0.5 if n % 9 == 0 else 1.0,
        half_life=7 * 86_400.0,
        timestamp=T0 + 30.0 * n,
        features={f"genre:{n % 20}": 1.0, f"genre:{(n * 7) % 20}": 0.5},
    )


def typical_events(user_id: str) -> list[Signal]:
    return [event(user_id, n) for n in range(50)]


def p99(benchmark: Any) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    data = sorted(stats.stats.data)
    benchmark.extra_info["p99_us"] = round(data[min(len(data) - 1, int(len(data) * 0.99))] * 1e6, 1)


STORES: dict[str, Callable[[str], ProfileStore]] = {
    "memory": lambda tenant: InMemoryProfileStore(tenant=tenant, model=InterestModel()),
    "redis": lambda tenant: RedisProfileStore(server("PENCHANT_TEST_REDIS_URL"), tenant=tenant),
    "cluster": lambda tenant: RedisProfileStore(
        "redis+cluster://" + server("PENCHANT_TEST_REDIS_CLUSTER_NODES"), tenant=tenant
    ),
    "tiered-postgres": lambda tenant: open_store(
        server("PENCHANT_TEST_REDIS_URL"), server("PENCHANT_TEST_POSTGRES_URL"), tenant
    ),
}


@pytest.fixture
def tenant() -> str:
    return "bench" + uuid.uuid4().hex[:10]


def opened(kind: str, tenant: str) -> Iterator[ProfileStore]:
    store = STORES[kind](tenant)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def tiered_sqlite(tenant: str, tmp_path: Any) -> Iterator[ProfileStore]:
    store = open_store(server("PENCHANT_TEST_REDIS_URL"), f"sqlite:///{tmp_path}/bench.db?synchronous=normal", tenant)
    try:
        yield store
    finally:
        store.close()


# -- reads ------------------------------------------------------------------------------------------


def test_get_from_the_in_process_tier(benchmark: Any, tenant: str) -> None:
    """Tiered store, cache hit, the ranking path (get_shared): target under 5 µs."""
    for store in opened("tiered-postgres", tenant):
        store.apply_feedback("alice", typical_events("alice"))
        assert store.get_shared("alice") is not None
        result = benchmark(store.get_shared, "alice")
        assert result is not None
        assert result.version == 1


def test_get_owned_copy_from_the_in_process_tier(benchmark: Any, tenant: str) -> None:
    """Tiered store, cache hit, get() (a private copy decoded for the caller)."""
    for store in opened("tiered-postgres", tenant):
        store.apply_feedback("alice", typical_events("alice"))
        result = benchmark(store.get, "alice")
        assert result is not None


def heavy_events(user_id: str) -> list[Signal]:
    """500 events: a full history of 500 entries, as penchant bench's stored user."""
    return [event(user_id, n) for n in range(500)]


def test_get_owned_copy_of_a_heavy_profile_from_the_in_process_tier(benchmark: Any, tenant: str, tmp_path: Any) -> None:
    """get() of a profile with 500 history entries (the history is decoded only when read)."""
    store = open_store(None, f"sqlite:///{tmp_path}/heavy.db", tenant, model=InterestModel(max_history=500))
    try:
        store.apply_feedback("alice", heavy_events("alice"))
        result = benchmark(store.get, "alice")
        assert result is not None
        assert len(result.interaction_history) == 500
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_get_from_redis(benchmark: Any, tenant: str, kind: str) -> None:
    """One profile from Redis (one EVALSHA round trip, decode): target p99 under 1 ms."""
    for store in opened(kind, tenant):
        store.apply_feedback("alice", typical_events("alice"))
        result = benchmark.pedantic(store.get, ("alice",), rounds=2000, iterations=1, warmup_rounds=50)
        assert result is not None
        assert len(result.interaction_history) == 50
        p99(benchmark)


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_get_many_100_from_redis(benchmark: Any, tenant: str, kind: str) -> None:
    """100 profiles in one pipeline (one round trip per node): target under 5 ms."""
    for store in opened(kind, tenant):
        users = [f"user{i}" for i in range(100)]
        store.apply_feedback_many([s for u in users for s in typical_events(u)])
        result = benchmark.pedantic(store.get_many, (users,), rounds=100, iterations=1, warmup_rounds=5)
        assert len(result) == 100
        p99(benchmark)


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_async_get_many_100_from_redis(benchmark: Any, tenant: str, kind: str) -> None:
    """The same through the async API (``aget_many``), each round run to completion on one
    event loop."""
    store = STORES[kind](tenant)
    loop = asyncio.new_event_loop()
    try:
        users = [f"user{i}" for i in range(100)]
        loop.run_until_complete(store.aapply_feedback_many([s for u in users for s in typical_events(u)]))
        result = benchmark.pedantic(
            lambda: loop.run_until_complete(store.aget_many(users)), rounds=100, iterations=1, warmup_rounds=5
        )
        assert len(result) == 100
        p99(benchmark)
    finally:
        loop.run_until_complete(store.aclose())
        loop.close()


def test_get_many_100_from_the_in_process_tier(benchmark: Any, tenant: str) -> None:
    """100 cached profiles for ranking (shared, read-only): target under 5 ms."""
    for store in opened("tiered-postgres", tenant):
        users = [f"user{i}" for i in range(100)]
        store.apply_feedback_many([s for u in users for s in typical_events(u)])
        store.get_many(users, shared=True)
        result = benchmark(store.get_many, users, shared=True)
        assert len(result) == 100


# -- writes -----------------------------------------------------------------------------------------


def apply_one_event(store: ProfileStore) -> Callable[[], Any]:
    counter = itertools.count(1000)

    def apply() -> Any:
        n = next(counter)
        return store.apply_feedback("alice", [event("alice", n)])

    return apply


def test_apply_feedback_through_every_tier_postgres(benchmark: Any, tenant: str) -> None:
    """SQL (PostgreSQL: event log + snapshot) then Redis then the cache: target p99 under 2 ms."""
    for store in opened("tiered-postgres", tenant):
        store.apply_feedback("alice", typical_events("alice"))
        result = benchmark.pedantic(apply_one_event(store), rounds=1000, iterations=1, warmup_rounds=20)
        assert result.version > 1
        p99(benchmark)


def test_apply_feedback_through_every_tier_sqlite(benchmark: Any, tiered_sqlite: ProfileStore) -> None:
    """The same with SQLite (WAL, synchronous=NORMAL) as the durable tier."""
    tiered_sqlite.apply_feedback("alice", typical_events("alice"))
    result = benchmark.pedantic(apply_one_event(tiered_sqlite), rounds=1000, iterations=1, warmup_rounds=20)
    assert result.version > 1
    p99(benchmark)


COLD_USERS = 1000


@pytest.mark.parametrize("database", ["postgres", "sqlite"])
def test_apply_feedback_through_every_tier_cold(
    benchmark: Any, tenant: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    """One event for each of 1,000 typical users in turn, none of whom the store holds (another
    process wrote them last, or they fell out of the profiles it keeps; here it keeps none):
    the write reads the user's profile from SQL first."""
    from penchant.profile_store import sql_store

    monkeypatch.setattr(sql_store, "WRITTEN_BYTES", 0)
    url = (
        server("PENCHANT_TEST_POSTGRES_URL")
        if database == "postgres"
        else f"sqlite:///{tmp_path}/cold.db?synchronous=normal"
    )
    store = open_store(server("PENCHANT_TEST_REDIS_URL"), url, tenant)
    try:
        users = [f"user{i}" for i in range(COLD_USERS)]
        for start in range(0, COLD_USERS, 100):
            store.apply_feedback_many([s for u in users[start : start + 100] for s in typical_events(u)])
        counter = itertools.count(1000)

        def apply() -> Any:
            n = next(counter)
            user = users[n % COLD_USERS]
            return store.apply_feedback(user, [event(user, n)])

        result = benchmark.pedantic(apply, rounds=1000, iterations=1, warmup_rounds=20)
        assert result.version > 1
        p99(benchmark)
    finally:
        store.close()


def test_apply_feedback_durable_sqlite_heavy_profile(benchmark: Any, tenant: str, tmp_path: Any) -> None:
    """What a durable engine.record does in the embedded default: one event into a profile of
    500 history entries, in-process cache over SQLite with synchronous=full (one fsync)."""
    store = open_store(None, f"sqlite:///{tmp_path}/durable.db", tenant, model=InterestModel(max_history=500))
    try:
        store.apply_feedback("alice", heavy_events("alice"))
        result = benchmark.pedantic(apply_one_event(store), rounds=300, iterations=1, warmup_rounds=10)
        assert result.version > 1
        p99(benchmark)
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_apply_feedback_redis_only(benchmark: Any, tenant: str, kind: str) -> None:
    """One event into a Redis-only store (one Lua script, atomic, idempotent)."""
    for store in opened(kind, tenant):
        store.apply_feedback("alice", typical_events("alice"))
        result = benchmark.pedantic(apply_one_event(store), rounds=1000, iterations=1, warmup_rounds=20)
        assert result.version > 1
        p99(benchmark)


BATCH = 1000
BATCH_USERS = 100


def ingest_batches(store: ProfileStore) -> Callable[[], dict[str, int]]:
    """Batches of 1,000 new events spread over 100 users, as an ingestion worker sends them."""
    counter = itertools.count()

    def ingest() -> dict[str, int]:
        base = next(counter) * BATCH
        return store.apply_feedback_many(
            [event(f"user{n % BATCH_USERS}", base + n, event_id=f"b{base + n}") for n in range(BATCH)]
        )

    return ingest


def events_per_second(benchmark: Any) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["events_per_second"] = round(BATCH / stats.stats.mean)


@pytest.mark.parametrize("kind", ["tiered-postgres", "redis", "cluster"])
def test_sustained_ingestion(benchmark: Any, tenant: str, kind: str) -> None:
    """Target: at least 10,000 events/s per process."""
    for store in opened(kind, tenant):
        ingest = ingest_batches(store)
        ingest()  # creates the users
        versions = benchmark.pedantic(ingest, rounds=20, iterations=1, warmup_rounds=2)
        assert len(versions) == BATCH_USERS
        events_per_second(benchmark)


def test_sustained_ingestion_tiered_sqlite(benchmark: Any, tiered_sqlite: ProfileStore) -> None:
    ingest = ingest_batches(tiered_sqlite)
    ingest()
    versions = benchmark.pedantic(ingest, rounds=20, iterations=1, warmup_rounds=2)
    assert len(versions) == BATCH_USERS
    events_per_second(benchmark)
