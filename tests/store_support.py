"""Helpers for the profile store tests: the real servers (.ci/services.sh), store factories,
signal builders, and the worker that the multi-process tests spawn."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from penchant.feedback_collector import FeedbackType, Signal
from penchant.profile_store import (
    InMemoryProfileStore,
    KeyTTL,
    PostgresProfileStore,
    ProfileStore,
    RedisProfileStore,
    SQLiteProfileStore,
    TieredProfileStore,
    open_store,
)
from penchant.user_profile import InterestModel, UserProfile

T0 = 1_700_000_000.0
WEEK = 7 * 86_400.0

SERVERS_REQUIRED = os.environ.get("PENCHANT_TEST_INSTALLED") == "1" or os.environ.get("CI") == "true"


def server_env(name: str) -> str:
    """The value of a server variable from .ci/services.sh. Under CI a missing one fails the
    test (the servers are part of the test set-up); a developer's bare run skips it."""
    value = os.environ.get(name)
    if value:
        return value
    message = f'{name} is not set: start the servers with eval "$(bash .ci/services.sh)"'
    if SERVERS_REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


def redis_url() -> str:
    return server_env("PENCHANT_TEST_REDIS_URL")


def cluster_url() -> str:
    return "redis+cluster://" + server_env("PENCHANT_TEST_REDIS_CLUSTER_NODES")


def postgres_url() -> str:
    return server_env("PENCHANT_TEST_POSTGRES_URL")


def new_tenant() -> str:
    """A tenant no other test (or earlier run against the same servers) has used."""
    return "t" + uuid.uuid4().hex[:12]


def signal(
    n: int,
    user_id: str = "alice",
    *,
    features: dict[str, float] | None = None,
    weight: float = 1.0,
    timestamp: float | None = None,
    half_life: float = WEEK,
    event_id: str | None = None,
    feedback_type: FeedbackType = FeedbackType.CLICK,
) -> Signal:
    return Signal(
        event_id=event_id or f"{user_id}-e{n}",
        user_id=user_id,
        item_id=f"item{n % 13}",
        feedback_type=feedback_type,
        value=1.0,
        weight=weight,
        half_life=half_life,
        timestamp=T0 + 60.0 * n if timestamp is None else timestamp,
        features=features if features is not None else {f"genre:{n % 5}": 1.0, f"tag:{n % 3}": 0.5},
    )


def mixed_signals(user_id: str, count: int, *, prefix: str = "", start: int = 0) -> list[Signal]:
    """Signals with positive and negative weights and two half-lives, deterministic in ``n``."""
    out = []
    for n in range(start, start + count):
        out.append(
            signal(
                n,
                user_id,
                weight=-0.5 if n % 7 == 0 else 1.0 + (n % 3),
                half_life=WEEK if n % 2 else 3 * 86_400.0,
                event_id=f"{prefix}{user_id}-e{n}",
            )
        )
    return out


def weights(profile: UserProfile) -> dict[str, float]:
    return profile.interest_weights(T0 + 86_400.0 * 30)


def assert_same_interests(actual: UserProfile, expected: UserProfile) -> None:
    """Equal current interest weights (float sums may differ in the last bits with the order of
    additions) and equal evidence counts."""
    got, want = weights(actual), weights(expected)
    assert set(got) == set(want)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name
        assert actual.interests[name].count == expected.interests[name].count, name


STORE_KINDS = ["memory", "sqlite", "postgres", "redis", "cluster", "tiered", "tiered-cluster-sqlite", "embedded"]


@contextmanager
def make_store(
    kind: str, tmp_path: Any, *, tenant: str | None = None, model: InterestModel | None = None
) -> Iterator[ProfileStore]:
    tenant = tenant or new_tenant()
    model = model or InterestModel(max_history=50)
    factories: dict[str, Callable[[], ProfileStore]] = {
        "memory": lambda: InMemoryProfileStore(tenant=tenant, model=model),
        "sqlite": lambda: SQLiteProfileStore(tmp_path / "profiles.db", tenant=tenant, model=model),
        "postgres": lambda: PostgresProfileStore(postgres_url(), tenant=tenant, model=model),
        "redis": lambda: RedisProfileStore(redis_url(), tenant=tenant, model=model),
        "cluster": lambda: RedisProfileStore(cluster_url(), tenant=tenant, model=model),
        "tiered": lambda: open_store(redis_url(), postgres_url(), tenant, model=model),
        "tiered-cluster-sqlite": lambda: open_store(
            cluster_url(), f"sqlite:///{tmp_path}/tiered.db", tenant, model=model
        ),
        "embedded": lambda: open_store(None, f"sqlite:///{tmp_path}/embedded.db", tenant, model=model),
    }
    store = factories[kind]()
    try:
        yield store
    finally:
        store.close()


def open_by_name(kind: str, tenant: str, sqlite_path: str, *, cache: bool = True) -> ProfileStore:
    """A store of one kind, for worker processes (which cannot receive open stores)."""
    model = InterestModel(max_history=50)
    if kind == "redis":
        return RedisProfileStore(os.environ["PENCHANT_TEST_REDIS_URL"], tenant=tenant, model=model)
    if kind == "cluster":
        return RedisProfileStore(
            "redis+cluster://" + os.environ["PENCHANT_TEST_REDIS_CLUSTER_NODES"], tenant=tenant, model=model
        )
    if kind == "postgres":
        return PostgresProfileStore(os.environ["PENCHANT_TEST_POSTGRES_URL"], tenant=tenant, model=model)
    if kind == "sqlite":
        return SQLiteProfileStore(sqlite_path, tenant=tenant, model=model)
    if kind == "tiered":
        return open_store(
            os.environ["PENCHANT_TEST_REDIS_URL"],
            os.environ["PENCHANT_TEST_POSTGRES_URL"],
            tenant,
            model=model,
            cache=cache,
        )
    if kind == "tiered-cluster-sqlite":
        return open_store(
            "redis+cluster://" + os.environ["PENCHANT_TEST_REDIS_CLUSTER_NODES"],
            f"sqlite:///{sqlite_path}",
            tenant,
            model=model,
            cache=cache,
        )
    raise ValueError(kind)


def concurrent_worker(
    kind: str, tenant: str, sqlite_path: str, worker: int, users: int, events: int, batch: int
) -> int:
    """Applies ``events`` signals spread over ``users`` users (plus replays of another worker's
    first events, which must be ignored); returns how many calls it made."""
    signals = worker_signals(worker, users, events)
    replays = worker_signals((worker + 1) % 4, users, events)[: events // 10]
    calls = 0
    with open_by_name(kind, tenant, sqlite_path) as store:
        for start in range(0, len(signals), batch):
            store.apply_feedback_many(signals[start : start + batch])
            calls += 1
        for start in range(0, len(replays), batch):
            store.apply_feedback_many(replays[start : start + batch])
            calls += 1
    return calls


def worker_signals(worker: int, users: int, events: int) -> list[Signal]:
    out = []
    for n in range(events):
        user = f"user{(n * 7 + worker) % users}"
        out.append(
            signal(
                n + worker * events,
                user,
                weight=-1.0 if n % 11 == 0 else 1.0 + (n % 4) * 0.25,
                half_life=WEEK if n % 3 else 86_400.0,
                timestamp=T0 + 13.0 * n + worker,
                event_id=f"w{worker}-e{n}",
                features={f"genre:{n % 9}": 1.0, f"tag:{(n + worker) % 6}": 0.3},
            )
        )
    return out


def redis_tier(store: ProfileStore) -> RedisProfileStore | None:
    if isinstance(store, RedisProfileStore):
        return store
    if isinstance(store, TieredProfileStore):
        return store.redis
    return None


__all__ = [
    "STORE_KINDS",
    "T0",
    "WEEK",
    "KeyTTL",
    "assert_same_interests",
    "cluster_url",
    "concurrent_worker",
    "make_store",
    "mixed_signals",
    "new_tenant",
    "open_by_name",
    "postgres_url",
    "redis_tier",
    "redis_url",
    "server_env",
    "signal",
    "weights",
    "worker_signals",
]


def assert_one_call_handles_a_burst(store: TieredProfileStore, url: str, count: int = 50) -> None:
    """Publishes ``count`` invalidations on ``store``'s channel (through ``url``) while nothing
    reads them, then checks that one call handles them all before it reads the cache. The
    caller keeps the subscriber's thread asleep (``_invalidation.IDLE_READ_INTERVAL``)."""
    import redis

    store.apply_feedback("user0", mixed_signals("user0", 2))
    assert store.wait_until_listening()
    time.sleep(0.2)  # the write's own message arrives, and is read by the next call
    cached = store.get_shared("user0")
    assert cached is not None
    assert store.get_shared("user0") is cached
    before = store.stats()["invalidations"]
    client = redis.Redis.from_url(url)
    for n in range(count):
        client.publish(store.redis.channel, f"{cached.version + 1}\x1fuser{n}")  # type: ignore[union-attr]
    client.close()
    time.sleep(0.2)  # delivered to the subscriber's socket on loopback
    assert store.stats()["invalidations"] == before  # nobody read them yet
    assert store.get_shared("user0") is not cached  # dropped before the cache was asked
    assert store.stats()["invalidations"] == before + count  # all of them, in one call
