"""Profile storage (seed module 2): where profiles live, in tiers.

* :class:`ProfileStore`: the contract, with a sync and an async API built from one body.
* :class:`InMemoryProfileStore`: this process; a bounded LRU with a sliding TTL.
* :class:`RedisProfileStore`: Redis or a Redis Cluster; atomic Lua updates, sliding TTLs.
* :class:`SQLiteProfileStore`, :class:`PostgresProfileStore`: durable, with the event log.
* :class:`TieredProfileStore`: cache → Redis → SQL, with pub/sub invalidation.
* :class:`ProfileSerializer`: MessagePack, schema-versioned, size-limited.
* :func:`open_store`: the tiered store from URLs (no URL: the embedded default).
* :func:`rebuild`: replays the event log into Redis.
"""

from __future__ import annotations

from penchant.profile_store._base import DEFAULT_TENANT, ProfileStore
from penchant.profile_store.factory import (
    DEFAULT_DATABASE_FILE,
    DEFAULT_DATABASE_URL,
    default_database_url,
    open_database,
    open_store,
    rebuild,
)
from penchant.profile_store.memory import InMemoryProfileStore
from penchant.profile_store.redis_store import KeyTTL, RedisProfileStore, user_keys
from penchant.profile_store.serializer import ProfileSerializer
from penchant.profile_store.sql_store import PostgresProfileStore, SQLiteProfileStore, SQLProfileStore
from penchant.profile_store.tiered import RebuildReport, TieredProfileStore, TierStats

__all__ = [
    "DEFAULT_DATABASE_FILE",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_TENANT",
    "InMemoryProfileStore",
    "KeyTTL",
    "PostgresProfileStore",
    "ProfileSerializer",
    "ProfileStore",
    "RebuildReport",
    "RedisProfileStore",
    "SQLProfileStore",
    "SQLiteProfileStore",
    "TierStats",
    "TieredProfileStore",
    "default_database_url",
    "open_database",
    "open_store",
    "rebuild",
    "user_keys",
]
