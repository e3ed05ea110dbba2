"""Stores from URLs: :func:`open_store` builds the tiered store, :func:`open_database` the
durable tier, and :func:`rebuild` replays the event log into Redis (``penchant rebuild``)."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable

from penchant._validate import check_id
from penchant.errors import ValidationError
from penchant.profile_store._base import DEFAULT_TENANT
from penchant.profile_store.memory import InMemoryProfileStore
from penchant.profile_store.redis_store import KeyTTL, RedisProfileStore
from penchant.profile_store.serializer import ProfileSerializer
from penchant.profile_store.sql_store import (
    SQLITE_CACHE_MIB,
    PostgresProfileStore,
    SQLiteProfileStore,
    SQLProfileStore,
)
from penchant.profile_store.tiered import RebuildReport, TieredProfileStore
from penchant.user_profile import InterestModel

__all__ = [
    "DEFAULT_DATABASE_FILE",
    "DEFAULT_DATABASE_URL",
    "default_database_url",
    "open_database",
    "open_store",
    "rebuild",
]

DEFAULT_DATABASE_FILE = "penchant.db"


def _data_directory() -> str:
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(os.path.abspath(data_home), "penchant")


def default_database_url(*, create: bool = False) -> str:
    """The durable tier when none is named: ``$PENCHANT_DATABASE_URL`` if set, else the SQLite
    file ``penchant.db`` in the user's data directory, ``$XDG_DATA_HOME/penchant`` (by default
    ``~/.local/share/penchant``); with ``create``, that directory is made if missing. One file
    per user account rather than one per working directory, so that a program finds its
    profiles wherever it is started from."""
    configured = os.environ.get("PENCHANT_DATABASE_URL")
    if configured:
        return configured
    directory = _data_directory()
    if create:
        os.makedirs(directory, exist_ok=True)
    return "sqlite:///" + urllib.parse.quote(os.path.join(directory, DEFAULT_DATABASE_FILE))


DEFAULT_DATABASE_URL = "sqlite:///" + urllib.parse.quote(os.path.join(_data_directory(), DEFAULT_DATABASE_FILE))
"""The embedded default's SQLite file as this process started (``default_database_url()``
without ``$PENCHANT_DATABASE_URL``)."""


def open_database(
    url: str,
    *,
    tenant: str = DEFAULT_TENANT,
    model: InterestModel | None = None,
    serializer: ProfileSerializer | None = None,
) -> SQLProfileStore:
    """The durable store that ``url`` names:

    * ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``,
      with the options ``synchronous=normal`` (default ``full``) and ``cache_mib=N`` (the page
      cache's bound, default 64), e.g. ``sqlite:///p.db?synchronous=normal&cache_mib=256``;
    * ``postgresql://user:password@host:port/database?options`` (or ``postgres://``), passed
      to libpq as it is.
    """
    if not isinstance(url, str):
        raise ValidationError(f"a database URL must be a str, got {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "sqlite":
        if parts.netloc:
            raise ValidationError(f"SQLite URLs have three slashes before a relative path: {url!r}")
        path = urllib.parse.unquote(parts.path[1:])
        options = dict(urllib.parse.parse_qsl(parts.query))
        unknown = set(options) - {"synchronous", "cache_mib"}
        if unknown or not path:
            raise ValidationError(
                f"SQLite URL {url!r}: a path is required, and the only options are synchronous and cache_mib"
            )
        cache_mib = options.get("cache_mib", str(SQLITE_CACHE_MIB))
        if not (cache_mib.isascii() and cache_mib.isdigit() and len(cache_mib) <= 9):
            raise ValidationError(f"SQLite URL {url!r}: cache_mib must be a whole number of MiB, got {cache_mib!r}")
        return SQLiteProfileStore(
            path,
            tenant=tenant,
            model=model,
            serializer=serializer,
            synchronous=options.get("synchronous", "FULL"),
            cache_mib=int(cache_mib),
        )
    if parts.scheme in ("postgresql", "postgres"):
        return PostgresProfileStore(url, tenant=tenant, model=model, serializer=serializer)
    raise ValidationError(f"database URLs start with sqlite:/// or postgresql://, got {parts.scheme or url!r}")


def open_store(
    redis_url: str | None = None,
    database_url: str | None = None,
    tenant: str = DEFAULT_TENANT,
    *,
    cache: bool = True,
    cache_size: int = 10_000,
    cache_ttl: float | None = 60.0,
    redis_ttl: KeyTTL | None = None,
    model: InterestModel | None = None,
    serializer: ProfileSerializer | None = None,
    retry_interval: float = 1.0,
    wait_for_redis: bool = False,
) -> TieredProfileStore:
    """The tiered store for these URLs: an in-process cache (unless ``cache`` is false; LRU of
    ``cache_size`` profiles, each copy kept ``cache_ttl`` seconds from when it was cached,
    however often it is read), Redis when ``redis_url`` is given, and the SQL database
    ``database_url`` (:func:`open_database`).

    Without arguments this is the embedded default: the in-process cache and a SQLite file
    (:func:`default_database_url`: ``penchant.db`` in the user's data directory).
    ``PENCHANT_REDIS_URL`` and ``PENCHANT_DATABASE_URL`` from the environment stand in for
    missing arguments.

    Redis URLs: ``redis://[user:password@]host:port/db``, ``rediss://`` for TLS, and
    ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://``) for a Redis Cluster.

    ``retry_interval`` and ``wait_for_redis``: see :class:`TieredProfileStore`.
    """
    check_id(tenant, "tenant")
    redis_url = redis_url or os.environ.get("PENCHANT_REDIS_URL") or None
    database_url = database_url or default_database_url(create=True)
    model = model or InterestModel()
    serializer = serializer or ProfileSerializer()
    database = open_database(database_url, tenant=tenant, model=model, serializer=serializer)
    redis = None
    if redis_url is not None:
        redis = RedisProfileStore(redis_url, tenant=tenant, model=model, serializer=serializer, ttl=redis_ttl)
    memory = None
    if cache:
        # Not sliding: the TTL bounds how long a copy can outlive a change it was not told of.
        memory = InMemoryProfileStore(
            max_entries=cache_size, ttl=cache_ttl, tenant=tenant, model=model, serializer=serializer, sliding=False
        )
    return TieredProfileStore(database, redis, memory, retry_interval=retry_interval, wait_for_redis=wait_for_redis)


def rebuild(
    redis_url: str,
    database_url: str,
    tenant: str = DEFAULT_TENANT,
    *,
    user_ids: Iterable[str] | None = None,
    batch_size: int = 500,
) -> RebuildReport:
    """Replays the event log of ``database_url`` into the Redis at ``redis_url``, for every
    user of ``tenant`` or only ``user_ids`` (see :meth:`TieredProfileStore.rebuild`)."""
    with open_store(redis_url, database_url, tenant, cache=False) as store:
        return store.rebuild(user_ids, batch_size=batch_size)
