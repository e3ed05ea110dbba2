"""Profiles in Redis (a single server or a Redis Cluster), through redis-py's sync and asyncio
clients (hiredis parses replies when it is installed).

**Keys** (DESIGN.md, mechanism 7) are ``penchant:{<tenant>:<user>}:<kind>`` with the kinds
``profile``, ``interests``, ``history`` and ``events`` (and ``floor``, which lives
``lua.FLOOR_SECONDS``, 10 s, after a change found Redis behind SQL:
:mod:`penchant.profile_store.lua`). The hash tag keeps one user's keys in one cluster slot, so
each user's scripts are atomic on a cluster too. Tenant and user ids are
validated, then escaped (``%``, ``:``, ``{`` and ``}`` become ``%25``, ``%3A``, ``%7B``,
``%7D``), so no id can reach into another tenant's or user's keys, and no id is ever used as a
pattern.

**Updates never lose a write.** ``apply_feedback`` runs one Lua script per user that adds
forward-decayed amounts with ``HINCRBYFLOAT`` (additions commute, so concurrent writers in any
number of processes add up), skips event ids applied before, and moves the landmark when needed
by rescaling every sum inside the same script. The client computes the amounts against the
landmark it believes is stored; the script refuses them when that landmark has moved, and the
client recomputes (a rare retry).

**TTL** slides per key kind (:class:`KeyTTL`): every write of a user restarts the expiry of all
its keys, and so does a read unless this store slid them less than a quarter of the shortest TTL
ago (so after any read at least three quarters of each TTL remain, and a hot profile costs one
command per read instead of five).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from penchant import _core, _gc
from penchant._time import to_datetime
from penchant._validate import check_id
from penchant.errors import ConflictError, StoreUnavailableError, ValidationError
from penchant.feedback_collector import FeedbackType, Signal
from penchant.profile_store import lua
from penchant.profile_store._base import DEFAULT_TENANT, ProfileStore
from penchant.profile_store._effects import Effect, Op
from penchant.profile_store._loops import PerLoop
from penchant.profile_store.serializer import FIELD_SEPARATOR, ProfileSerializer
from penchant.user_profile import Interaction, InterestModel, UserProfile

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["KeyTTL", "RedisConnection", "RedisProfileStore", "user_keys"]

KINDS = ("profile", "interests", "history", "events")
DAY = 86_400.0


@dataclass(frozen=True)
class KeyTTL:
    """Sliding expiry, in seconds, of each kind of key (``None``: never expires).

    ``profile`` covers the profile hash and the interests hash (which expire together);
    ``history`` must be at least as long, so a profile is never read without its history;
    ``events`` bounds how long a Redis-only store remembers event ids for idempotency.
    """

    profile: float | None = 30 * DAY
    history: float | None = 30 * DAY
    events: float | None = 30 * DAY

    def __post_init__(self) -> None:
        for name in ("profile", "history", "events"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0.001
            ):
                raise ValidationError(f"ttl of {name} keys must be None or at least 0.001 seconds, got {value!r}")
        if self.profile is not None and (self.history is not None and self.history < self.profile):
            raise ValidationError("history keys must live at least as long as profile keys")
        if self.profile is None and self.history is not None:
            raise ValidationError("history keys must not expire when profile keys do not")

    def milliseconds(self) -> tuple[int, int, int]:
        return tuple(0 if v is None else max(1, round(v * 1000)) for v in (self.profile, self.history, self.events))  # type: ignore[return-value]


def _escape(value: str) -> str:
    return value.replace("%", "%25").replace(":", "%3A").replace("{", "%7B").replace("}", "%7D")


def _tenant_prefix(tenant: str) -> str:
    return "penchant:{" + _escape(check_id(tenant, "tenant")) + ":"


def _keys(prefix: str, user_id: str) -> tuple[str, str, str, str]:
    tag = prefix + _escape(check_id(user_id)) + "}:"
    return (tag + "profile", tag + "interests", tag + "history", tag + "events")


def user_keys(tenant: str, user_id: str) -> tuple[str, str, str, str]:
    """The Redis keys of one user: profile, interests, history, events. (A fifth, ``floor``,
    lives ``lua.FLOOR_SECONDS``, 10 s, after a change found Redis behind SQL: see
    :data:`lua.FOLLOW`.)"""
    return _keys(_tenant_prefix(tenant), user_id)


INVALIDATION_SEPARATOR = "\x1e"
"""Separates the ``version␟user_id`` records of one invalidation message (ids and versions
hold no control characters)."""


def invalidation_channel(tenant: str) -> str:
    """The pub/sub channel on which changes to the tenant's profiles are announced."""
    return f"penchant:invalidate:{_escape(check_id(tenant, 'tenant'))}"


@dataclass(frozen=True)
class _Script:
    source: str

    @functools.cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()


_READ, _APPLY, _FOLLOW, _WRITE, _DELETE, _TOUCH, _PREFERENCES, _SNAPSHOT = (
    _Script(s)
    for s in (lua.READ, lua.APPLY, lua.FOLLOW, lua.WRITE, lua.DELETE, lua.TOUCH, lua.PREFERENCES, lua.SNAPSHOT)
)
_SCRIPTS = (_READ, _APPLY, _FOLLOW, _WRITE, _DELETE, _TOUCH, _PREFERENCES, _SNAPSHOT)

OBJECTS_PER_PROFILE = 20
"""About how many objects decoding a profile makes (none in a cycle; its preferences, interests
and history are decoded later, when first read): reads of fifty or more profiles run with the
cyclic collector paused (``penchant._gc``)."""

_SNAPSHOT_FIELDS = ("version", "snap_version", "snap")
"""What a read without a script takes from the profile's hash: the snapshot holds the rest."""

SLIDE_FRACTION = 4
"""A read skips sliding a user's keys when this store slid them within 1/SLIDE_FRACTION of the
shortest of their TTLs."""

MAX_LANDMARKS_REMEMBERED = 100_000
"""Users whose landmark a store remembers (a guess that spares an apply a retry)."""

MAX_SLIDES_REMEMBERED = 100_000
"""Users whose last slide a store remembers; when full the record starts over (forgetting only
costs a slide)."""

PREFERENCE_ATTEMPTS = 3
"""Times a refresh of preferences is recomputed when other writers keep changing the profile
before it is stored; then it is left to the next refresh."""


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions as e

    return (e.ConnectionError, e.TimeoutError, e.ClusterDownError, e.ClusterError, e.RedisClusterException, OSError)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """``redis+cluster://[user:password@]host:port[,host:port...][?options]`` (``rediss+`` for
    TLS): the startup nodes and the connection options. The options are those of a
    ``redis://`` URL, read by redis-py's own parser (``ssl_ca_certs``, ``ssl_cert_reqs``,
    ``socket_timeout``...); a cluster has only database 0."""
    from redis.connection import parse_url

    parts = urllib.parse.urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValidationError(f"cluster URL nodes must be host:port, got {host_port!r}")
        nodes.append((host.strip("[]"), int(port)))
    tls = parts.scheme.startswith("rediss")
    # One node's URL with the same credentials, database and options, for redis-py to read.
    single = f"{'rediss' if tls else 'redis'}://{userinfo}{at}{hosts.split(',')[0].strip()}{parts.path}"
    try:
        options: dict[str, Any] = parse_url(single + (f"?{parts.query}" if parts.query else ""))  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValidationError(f"cluster URL {url!r}: {exc}") from exc
    for key in ("host", "port", "connection_class"):
        options.pop(key, None)
    if options.pop("db", 0):
        raise ValidationError(f"a Redis Cluster has only database 0: {url!r}")
    options["ssl"] = tls
    return nodes, options


class RedisConnection:
    """The sync client and the per-event-loop async clients of one Redis deployment, and the
    execution of command batches with the scripts loaded on demand.

    Build it from a URL (``redis://``, ``rediss://``, ``redis+cluster://``,
    ``rediss+cluster://``), or from explicit clients (``client`` sync, ``async_client``
    asyncio; each built from the other's settings when only one is given with a URL).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | redis.RedisCluster | None = None,
        async_client: redis.asyncio.Redis | redis.asyncio.RedisCluster | None = None,
        socket_timeout: float = 2.0,
    ) -> None:
        try:
            import redis  # noqa: F401 - fail early with a clear message
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError("Redis support needs redis-py: pip install 'penchant[redis]'") from exc
        if url is None and client is None and async_client is None:
            raise ValidationError("a Redis URL or client is required")
        if url is not None and urllib.parse.urlsplit(url).scheme not in (
            "redis",
            "rediss",
            "redis+cluster",
            "rediss+cluster",
            "unix",
        ):
            raise ValidationError("Redis URLs start with redis://, rediss://, redis+cluster:// or rediss+cluster://")
        for given in (client, async_client):
            if given is not None and _decodes_responses(given):
                raise ValidationError("the Redis client must not decode responses (decode_responses=False)")
        self.url = url
        self.is_cluster = (url is not None and "+cluster" in url.split("://", 1)[0]) or _is_cluster(
            client or async_client
        )
        self._socket_timeout = socket_timeout
        self._client = client
        self._own_client = client is None
        self._fixed_async = async_client
        self._async_clients: PerLoop[Any] = PerLoop(self._make_async, lambda client: client.aclose())
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisConnection(cluster={self.is_cluster})"

    # -- clients -------------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {"socket_timeout": self._socket_timeout, "socket_connect_timeout": self._socket_timeout}

    def sync(self) -> Any:
        with self._lock:
            if self._closed:
                raise StoreUnavailableError("the Redis store is closed")
            if self._client is None:
                if self.url is None:
                    raise ValidationError("no sync Redis client: pass client= or a URL")
                self._client = self._make_sync()
            return self._client

    def _make_sync(self) -> Any:
        import redis
        import redis.cluster
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        assert self.url is not None
        if self.is_cluster:
            nodes, options = parse_cluster_url(self.url)
            return redis.cluster.RedisCluster(
                startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in nodes],  # type: ignore[no-untyped-call]
                **{**self._options(), **options},  # the URL's options win, as redis-py's from_url does
            )
        # One quick retry covers a pooled connection that a restarted server closed.
        return redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 1), **self._options())

    async def async_(self) -> Any:
        if self._fixed_async is not None:
            return self._fixed_async
        if self._closed:
            raise StoreUnavailableError("the Redis store is closed")
        return await self._async_clients.get()

    def _make_async(self) -> Any:
        import redis.asyncio
        import redis.asyncio.cluster
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        url = self.url
        if url is None:
            raise ValidationError("no async Redis client: pass async_client= or a URL")
        if self.is_cluster:
            nodes, options = parse_cluster_url(url)
            return redis.asyncio.cluster.RedisCluster(
                startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in nodes],
                **{**self._options(), **options},
            )
        return redis.asyncio.Redis.from_url(url, retry=Retry(NoBackoff(), 1), **self._options())

    def pubsub_client(self) -> tuple[Any, bool]:
        """A sync client for the invalidation subscriber to take a connection from, and whether
        the caller must close it. On a cluster it talks to one node: a PUBLISH on any node
        reaches the subscribers of all."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if self.url is None:
            client = self.sync()
            if self.is_cluster:
                return client.get_default_node().redis_connection, False
            return client, False
        if self.is_cluster:
            nodes, options = parse_cluster_url(self.url)
            host, port = nodes[0]
            return redis.Redis(host=host, port=port, **{**self._options(), **options}), True
        return redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 1), **self._options()), True

    # -- execution -----------------------------------------------------------------------------

    def run_sync(self, calls: Calls) -> list[Any]:
        import redis.exceptions

        try:
            client = self.sync()
            replies = self._execute_sync(client, calls)
            calls = _made(calls)
            missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
            if missing:
                for script in _SCRIPTS:
                    client.script_load(script.source)
                again = self._execute_sync(client, [calls[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except _unavailable_errors() as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc
        return _raise_errors(replies)

    @staticmethod
    def _execute_sync(client: Any, calls: Calls) -> list[Any]:
        if _pooled(client):
            return _send_and_read(client, calls)
        calls = _made(calls)
        if _is_cluster(client) and len(calls) > 1:
            return _send_and_read_cluster(client, calls)
        return _pipelined(client, calls)

    @staticmethod
    async def _execute_async(client: Any, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        if _pooled(client):
            return await _asend_and_read(client, calls)
        if _is_cluster(client) and len(calls) > 1:
            return await _asend_and_read_cluster(client, calls)
        return await _apipelined(client, calls)

    async def run_async(self, calls: Calls) -> list[Any]:
        import redis.exceptions

        calls = _made(calls)
        try:
            client = await self.async_()
            replies = await self._execute_async(client, calls)
            missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
            if missing:
                for script in _SCRIPTS:
                    await client.script_load(script.source)
                again = await self._execute_async(client, [calls[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except _unavailable_errors() as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc
        return _raise_errors(replies)

    def close_sync(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None and self._own_client:
            client.close()
        self._async_clients.close_idle()

    async def close_async(self) -> None:
        await self._async_clients.close_current()
        self.close_sync()


def _pooled(client: Any) -> bool:
    """Whether ``client`` is a single-server client that takes a connection from its pool per
    command (not a cluster, nor a client bound to one connection)."""
    return (
        hasattr(client, "connection_pool")
        and not hasattr(client, "nodes_manager")
        and getattr(client, "connection", None) is None
    )


@functools.cache
def _hiredis_packer() -> Callable[[tuple[Any, ...]], bytes] | None:
    try:
        from hiredis import pack_command
    except ImportError:
        return None
    return cast("Callable[[tuple[Any, ...]], bytes]", pack_command)


def _packed(connection: Any, calls: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """``calls`` in Redis's protocol: by hiredis directly when it is installed and the client
    encodes text as strict UTF-8, as hiredis does (redis-py hands each command to it too, after
    ~12 µs of its own work per command), else by redis-py."""
    pack = _hiredis_packer()
    encoder: Any = getattr(connection, "encoder", None)
    if pack is None or getattr(encoder, "encoding", None) != "utf-8" or encoder.encoding_errors != "strict":
        return list(connection.pack_commands(calls))
    return [b"".join([pack(call) for call in calls])]


def _reply(client: Any, call: tuple[Any, ...], reply: Any) -> Any:
    callback = client.response_callbacks.get(call[0])
    return reply if callback is None else callback(reply)


STREAMED_GROUP = 16
"""Commands of :class:`StreamedCalls` sent to a Redis server at a time."""


class StreamedCalls:
    """Commands made while Redis runs the first of them: one Redis server (through
    :func:`_send_and_read`) receives them :data:`STREAMED_GROUP` at a time as they are made,
    and runs a group while the next is made; the other executors make them all first."""

    __slots__ = ("_source", "made")

    def __init__(self, calls: Iterable[tuple[Any, ...]]) -> None:
        self._source = iter(calls)
        self.made: list[tuple[Any, ...]] = []

    def groups(self) -> Iterator[list[tuple[Any, ...]]]:
        """The commands not made yet, made a group at a time (and kept in :attr:`made`)."""
        while group := list(itertools.islice(self._source, STREAMED_GROUP)):
            self.made += group
            yield group

    def all(self) -> list[tuple[Any, ...]]:
        """Every command, made."""
        self.made += self._source
        return self.made


Calls: TypeAlias = Sequence[tuple[Any, ...]] | StreamedCalls
"""The commands of a batch: made already, or made as they are sent."""


def _made(calls: Calls) -> Sequence[tuple[Any, ...]]:
    return calls.all() if isinstance(calls, StreamedCalls) else calls


def _send_and_read(client: Any, calls: Calls) -> list[Any]:
    """``calls`` written at once on one connection of ``client``'s pool (streamed calls a group
    at a time as they are made), and their replies (an error reply as its exception), in order:
    what redis-py's pipeline does, without its machinery per command (~10 µs each: a third of
    a ``get_many`` of 100). A failed connection is dropped and the batch sent again as the
    connection's own retry policy says, as redis-py does for a pipeline (penchant's clients
    retry once: a restarted server closed the pooled connections)."""
    import redis.exceptions

    packed: list[bytes] | None = None
    pool = client.connection_pool
    connection = pool.get_connection()
    streamed = isinstance(calls, StreamedCalls)

    def send_and_read() -> list[Any]:
        nonlocal packed, streamed
        if streamed:
            assert isinstance(calls, StreamedCalls)
            streamed = False  # a retry sends every command at once
            for n, group in enumerate(calls.groups()):
                # A health check (PING) once the first group is out would read its reply.
                connection.send_packed_command(_packed(connection, group), check_health=not n)
        else:
            if packed is None:
                packed = _packed(connection, _made(calls))
            connection.send_packed_command(packed)
        replies: list[Any] = []
        for call in _made(calls):
            try:
                replies.append(_reply(client, call, connection.read_response()))
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
        return replies

    try:
        replies: list[Any] = connection.retry.call_with_retry(send_and_read, lambda _: connection.disconnect())
        return replies
    except BaseException:  # replies may be left unread: the connection cannot serve again
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


def _pipelined(client: Any, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    """``calls`` through redis-py: one command, or a pipeline (on a cluster, one per node, with
    its redirections and retries); error replies in their places."""
    import redis.exceptions

    if len(calls) == 1:
        try:
            return [client.execute_command(*calls[0])]
        except redis.exceptions.ResponseError as exc:
            return [exc]
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.execute_command(*call)
    return list(pipe.execute(raise_on_error=False))


def _key_of(call: tuple[Any, ...]) -> Any:
    """The key that places ``call`` on a cluster node, ``None`` for a command without one."""
    name = call[0]
    if name in ("EVALSHA", "EVAL"):
        return call[3] if int(call[2]) else None
    if name in ("PUBLISH", "PING", "SCRIPT"):
        return None
    return call[1]


def _by_node(client: Any, calls: Sequence[tuple[Any, ...]]) -> list[tuple[Any, list[int]]] | None:
    """The indices of ``calls`` grouped by the node of a cluster (sync or asyncio client) that
    holds their keys' slot, as the client's slot map says; calls without a key go with the first
    group. ``None`` when the map cannot place them (none yet, a slot not covered: the cluster
    pipeline copes) or no call has a key."""
    from redis.exceptions import RedisClusterException

    groups: dict[str, tuple[Any, list[int]]] = {}
    keyless: list[int] = []
    try:
        for i, call in enumerate(calls):
            key = _key_of(call)
            if key is None:
                keyless.append(i)
                continue
            node = client.get_node_from_key(key)
            group = groups.get(node.name)
            if group is None:
                group = groups[node.name] = (node, [])
            group[1].append(i)
    except RedisClusterException:
        return None
    if not groups:
        return None
    next(iter(groups.values()))[1].extend(keyless)
    return list(groups.values())


def _send_and_read_cluster(client: Any, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    """:func:`_send_and_read` on a cluster: the calls grouped by the node that holds their
    keys' slot (as the client's slot map says), each group written at once on a connection of
    that node's pool, then every group's replies read in order. A command the node redirects
    (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) and a group whose connection fails go again through
    redis-py's cluster pipeline, which follows redirections, refreshes the slot map and
    retries; commands without a key go with the first group (a PUBLISH reaches every node)."""
    import redis.exceptions
    from redis.exceptions import AskError, ClusterDownError, TryAgainError

    groups = _by_node(client, calls)
    if groups is None:
        return _pipelined(client, calls)
    replies: list[Any] = [None] * len(calls)
    again: list[int] = []
    failures = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    sent: list[tuple[Any, Any, Any, list[int]]] = []  # node client, pool, connection, indices
    try:
        for node, indices in groups:
            node_client = client.get_redis_connection(node)
            pool = node_client.connection_pool
            try:
                connection = pool.get_connection()
            except failures:
                again.extend(indices)
                continue
            sent.append((node_client, pool, connection, indices))
            try:
                connection.send_packed_command(_packed(connection, [calls[i] for i in indices]))
            except failures:
                sent.pop()
                connection.disconnect()
                pool.release(connection)
                again.extend(indices)
        while sent:
            node_client, pool, connection, indices = sent[0]
            for n, i in enumerate(indices):
                try:
                    replies[i] = _reply(node_client, calls[i], connection.read_response())
                except (AskError, TryAgainError, ClusterDownError):  # MovedError is an AskError
                    again.append(i)
                except redis.exceptions.ResponseError as exc:
                    replies[i] = exc
                except failures:
                    again.extend(indices[n:])
                    connection.disconnect()
                    break
            sent.pop(0)
            pool.release(connection)
    finally:
        for _, pool, connection, _ in sent:  # replies left unread: these connections cannot serve again
            connection.disconnect()
            pool.release(connection)
    if again:
        again.sort()
        for i, reply in zip(again, _pipelined(client, [calls[i] for i in again]), strict=True):
            replies[i] = reply
    return replies


async def _apipelined(client: Any, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    """:func:`_pipelined` for an asyncio client."""
    import redis.exceptions

    if len(calls) == 1:
        try:
            return [await client.execute_command(*calls[0])]
        except redis.exceptions.ResponseError as exc:
            return [exc]
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.execute_command(*call)
    return list(await pipe.execute(raise_on_error=False))


async def _asend_and_read_cluster(client: Any, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    """:func:`_send_and_read_cluster` for an asyncio cluster client: the calls grouped by the
    node of their keys' slot, each group written at once on a connection of that node, then
    every group's replies read in order; redirected commands and failed groups through
    redis-py's cluster pipeline (a ``get_many`` of 100 took half the time of the pipeline's)."""
    import redis.exceptions
    from redis.exceptions import AskError, ClusterDownError, TryAgainError

    groups = _by_node(client, calls)
    # redis-py 5.2's asyncio nodes hand out connections but take none back: the pipeline then.
    if groups is None or not all(hasattr(n, "acquire_connection") and hasattr(n, "release") for n, _ in groups):
        return await _apipelined(client, calls)
    replies: list[Any] = [None] * len(calls)
    again: list[int] = []
    failures = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
    sent: list[tuple[Any, Any, list[int]]] = []  # node, connection, indices: replies to read
    held: dict[int, tuple[Any, Any]] = {}  # connections not yet handed back, by id
    try:
        for node, indices in groups:
            try:
                connection = node.acquire_connection()
            except (redis.exceptions.RedisError, *failures):  # MaxConnectionsError included
                again.extend(indices)
                continue
            held[id(connection)] = (node, connection)
            try:
                if hasattr(node, "disconnect_if_needed"):  # one marked for reconnection (a new slot map)
                    await node.disconnect_if_needed(connection)
                await connection.send_packed_command(_packed(connection, [calls[i] for i in indices]))
            except failures:
                again.extend(indices)
                continue
            sent.append((node, connection, indices))
        for node, connection, indices in sent:
            for n, i in enumerate(indices):
                try:
                    replies[i] = _reply(node, calls[i], await connection.read_response())
                except (AskError, TryAgainError, ClusterDownError):  # MovedError is an AskError
                    again.append(i)
                except redis.exceptions.ResponseError as exc:
                    replies[i] = exc
                except failures:
                    again.extend(indices[n:])
                    break
            else:  # every reply read: the connection serves again
                del held[id(connection)]
                node.release(connection)
    finally:
        # Failed, or left with replies unread (an error, a cancelled task): closed, then handed
        # back, every one of them even if the task is cancelled again meanwhile.
        interrupted: BaseException | None = None
        for node, connection in held.values():
            try:
                await connection.disconnect(nowait=True)
            except BaseException as exc:
                interrupted = interrupted or exc
            finally:
                node.release(connection)
        if interrupted is not None:
            raise interrupted
    if again:
        again.sort()
        for i, reply in zip(again, await _apipelined(client, [calls[i] for i in again]), strict=True):
            replies[i] = reply
    return replies


async def _asend_and_read(client: Any, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    """:func:`_send_and_read` for an asyncio client."""
    import redis.exceptions

    packed: list[bytes] | None = None
    pool = client.connection_pool
    connection = await pool.get_connection()

    async def send_and_read() -> list[Any]:
        nonlocal packed
        if packed is None:
            packed = _packed(connection, calls)
        await connection.send_packed_command(packed)
        replies: list[Any] = []
        for call in calls:
            try:
                replies.append(_reply(client, call, await connection.read_response()))
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
        return replies

    async def drop(_: Exception) -> None:
        await connection.disconnect()

    try:
        replies: list[Any] = await connection.retry.call_with_retry(send_and_read, drop)
        return replies
    except BaseException:  # replies may be left unread (a cancelled task too)
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


def _decodes_responses(client: Any) -> bool:
    try:
        kwargs = client.get_connection_kwargs()
    except AttributeError:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    return bool(kwargs.get("decode_responses"))


def _is_cluster(client: Any) -> bool:
    return client is not None and type(client).__name__ == "RedisCluster"


def _raise_errors(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, Exception):
            if isinstance(reply, _unavailable_errors()):
                raise StoreUnavailableError(f"Redis is unavailable: {reply}") from reply
            raise reply
    return replies


class RedisBatch(Effect[list[Any]]):
    """Commands for one Redis deployment, sent in one round trip (a pipeline when more than one;
    on a cluster, one per node)."""

    __slots__ = ("calls", "connection")

    def __init__(self, connection: RedisConnection, calls: Calls) -> None:
        self.connection = connection
        self.calls = calls

    def run_sync(self) -> list[Any]:
        return self.connection.run_sync(self.calls) if _some(self.calls) else []

    async def run_async(self) -> list[Any]:
        return await self.connection.run_async(self.calls) if _some(self.calls) else []


def _some(calls: Calls) -> bool:
    return isinstance(calls, StreamedCalls) or bool(calls)


class _Close(Effect[None]):
    __slots__ = ("connection",)

    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection

    def run_sync(self) -> None:
        self.connection.close_sync()

    async def run_async(self) -> None:
        await self.connection.close_async()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisProfileStore(ProfileStore):
    """Profiles in Redis, on one server or a Redis Cluster.

    Give ``url`` (``redis://``, ``rediss://`` for TLS, ``redis+cluster://host:port[,host:port]``
    for a cluster) or explicit redis-py clients (``client``, ``async_client``). ``ttl`` sets the
    sliding expiry per key kind; ``max_event_ids`` how many recent event ids per user are kept
    for idempotency. Changes are announced on the tenant's invalidation channel (see
    :class:`~penchant.profile_store.TieredProfileStore`) unless ``publish`` is false.

    Used alone, Redis is the only copy of a profile: give it persistence (AOF) and a ``ttl`` of
    ``None`` if profiles must outlive idle periods, or use the tiered store, where Redis is a
    cache in front of an SQL database.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | redis.RedisCluster | None = None,
        async_client: redis.asyncio.Redis | redis.asyncio.RedisCluster | None = None,
        connection: RedisConnection | None = None,
        tenant: str = DEFAULT_TENANT,
        model: InterestModel | None = None,
        serializer: ProfileSerializer | None = None,
        ttl: KeyTTL | None = None,
        max_event_ids: int = 10_000,
        publish: bool = True,
        socket_timeout: float = 2.0,
    ) -> None:
        super().__init__(tenant=tenant, model=model, serializer=serializer)
        if ttl is not None and not isinstance(ttl, KeyTTL):
            raise ValidationError(f"ttl must be a KeyTTL, got {type(ttl).__name__}")
        if isinstance(max_event_ids, bool) or not isinstance(max_event_ids, int) or max_event_ids < 1:
            raise ValidationError(f"max_event_ids must be a positive int, got {max_event_ids!r}")
        self.connection = connection or RedisConnection(
            url, client=client, async_client=async_client, socket_timeout=socket_timeout
        )
        self.key_ttl = ttl or KeyTTL()
        self.max_event_ids = max_event_ids
        self.channel = invalidation_channel(self.tenant) if publish else ""
        self._key_prefix = _tenant_prefix(self.tenant)
        self._ttl_args = tuple(str(ms) for ms in self.key_ttl.milliseconds())
        profile_ms, history_ms, events_ms = self.key_ttl.milliseconds()
        self._key_ttls = (profile_ms, profile_ms, history_ms, events_ms)  # as the scripts' touch()
        self._landmarks: dict[str, str] = {}  # user -> landmark last seen: a guess the script checks
        ttls = [ms for ms in self._key_ttls if ms]
        self._slide_interval = min(ttls) / 1000 / SLIDE_FRACTION if ttls else None  # seconds
        self._slid: dict[str, float] = {}  # user -> monotonic time just before its keys were last slid
        self._clock = time.monotonic  # tests may replace it

    def __repr__(self) -> str:
        return f"RedisProfileStore({self.connection!r}, tenant={self.tenant!r})"

    def keys(self, user_id: str) -> tuple[str, str, str, str]:
        """The user's keys: profile, interests, history, events."""
        return _keys(self._key_prefix, user_id)  # user_keys, with the tenant's part made once

    def _batch(self, calls: Sequence[tuple[Any, ...]]) -> RedisBatch:
        return RedisBatch(self.connection, calls)

    # -- commands ---------------------------------------------------------------------------------

    def _script(self, script: _Script, user_id: str, *args: Any) -> tuple[Any, ...]:
        keys = self.keys(user_id)
        return ("EVALSHA", script.sha, 5, *keys, keys[0].removesuffix("profile") + "floor", *args)

    def _read_call(self, user_id: str, *, parts: bool = False) -> tuple[Any, ...]:
        return self._script(_READ, user_id, *self._ttl_args, "parts" if parts else "")

    def _snapshot_calls(self, user_id: str, now: float, sliding: list[str]) -> list[tuple[Any, ...]]:
        """A read without a script: the snapshot, the version it was made from and the profile's
        version (one HMGET, atomic by itself), then the sliding expiry of each key unless this store slid them
        within the last quarter of their shortest TTL (then appended to ``sliding``). A script
        costs Redis several times these commands, and most reads find their snapshot current."""
        interval = self._slide_interval
        if interval is not None:
            last = self._slid.get(user_id)
            if last is None or not now - last < interval:
                keys = self.keys(user_id)
                sliding.append(user_id)
                return [
                    ("HMGET", keys[0], *_SNAPSHOT_FIELDS),
                    *[("PEXPIRE", key, ms) for key, ms in zip(keys, self._key_ttls, strict=True) if ms],
                ]
        # keys(user_id)[0] without the other three; the caller has checked the id.
        return [("HMGET", self._key_prefix + _escape(user_id) + "}:profile", *_SNAPSHOT_FIELDS)]

    def _remember_slides(self, user_ids: list[str], at: float) -> None:
        """Records that the keys of ``user_ids`` were slid by commands sent after ``at`` (a
        reading of ``_clock`` taken before they were sent, so the record never overstates what
        remains of a TTL)."""
        slid = self._slid
        if len(slid) + len(user_ids) > MAX_SLIDES_REMEMBERED:
            slid.clear()
        for user_id in user_ids:
            slid[user_id] = at

    def _remember_landmark(self, user_id: str, landmark: str) -> None:
        if len(self._landmarks) >= MAX_LANDMARKS_REMEMBERED:  # a guess cache: forgetting only costs a retry
            self._landmarks.clear()
        self._landmarks[user_id] = landmark

    def _decode_state(self, user_id: str, state: list[Any]) -> UserProfile:
        """A profile from the parts a script sent (see ``lua``)."""
        self._remember_landmark(user_id, _text(state[1]))
        return self.serializer.decode_state(state)[0]

    def _decode_read(self, user_id: str, reply: list[Any], repairs: list[tuple[Any, ...]]) -> UserProfile:
        """A profile from what ``READ`` answered: the snapshot while it is current, else the
        parts, and then the call that stores a snapshot of them is added to ``repairs``."""
        if _text(reply[0]) == "snap":
            _, version, landmark, updated_at, event_count, snapshot = reply
            self._remember_landmark(user_id, _text(landmark))
            return self.serializer.decode_snapshot(
                snapshot, version=version, landmark=landmark, updated_at=updated_at, event_count=event_count
            )
        state = reply[1]
        self._remember_landmark(user_id, _text(state[1]))
        profile, snapshot = self.serializer.decode_state(state)
        repairs.append(self._script(_SNAPSHOT, user_id, state[0], snapshot))
        return profile

    @staticmethod
    def _priors(profile: UserProfile) -> str:
        """The features with a stated like or dislike, for the script to tell when an event
        touches one (``InterestModel`` re-scores that preference)."""
        return FIELD_SEPARATOR.join(sorted(profile.explicit_priors()))

    def _write_call(
        self, mode: str, profile: UserProfile, version: str, document: bytes | None = None
    ) -> tuple[Any, ...]:
        fields = self.serializer.interest_fields(profile)
        flat = [v for item in fields.items() for v in item]
        history = [self.serializer.history_member(i) for i in profile.interaction_history]
        if document is None:
            document = self.serializer.encode_document(profile)
        return self._script(
            _WRITE,
            profile.user_id,
            mode,
            version,
            document,
            repr(float(profile.landmark)),
            repr(profile.updated_at.timestamp()),
            str(profile.event_count),
            self._priors(profile),
            *self._ttl_args,
            self.channel,
            profile.user_id,
            self.serializer.encode_snapshot(profile, document),
            len(flat),
            *flat,
            *history,
        )

    def _history_member(self, signal: Signal) -> bytes:
        """The history member of the entry ``InterestModel.apply`` makes for ``signal``."""
        if not self.model.max_history:
            return b""
        member = _core.signal_history_member(signal, FeedbackType)  # the same bytes, in Rust
        if member is not None:
            return member
        interaction = object.__new__(Interaction)  # the fields InterestModel._new_interactions sets
        interaction.__dict__.update(
            item_id=signal.item_id,
            feedback_type=str(signal.feedback_type),
            value=float(signal.value),
            weight=float(signal.weight),
            features=dict(signal.features),
            attributes=dict(signal.attributes),
            timestamp=to_datetime(signal.timestamp, "timestamp"),
            event_id=signal.event_id,
            half_life=float(signal.half_life),
        )
        return self.serializer.history_member(interaction)

    def _event_args(self, landmark: float, signals: Sequence[Signal]) -> tuple[list[Any], list[list[str]]]:
        """Per event: its id, time, history member and, per feature, the forward-decayed amount
        that ``InterestModel.increments`` gives (what ``InterestModel.apply`` adds); and the
        features each event touches."""
        args: list[Any] = []
        touched: list[list[str]] = []
        for signal, increments in zip(signals, self.model.increments_of(landmark, signals), strict=True):
            member = self._history_member(signal)
            args += [signal.event_id, repr(float(signal.timestamp)), member, len(increments)]
            for name, key, amount in increments:
                args += [name, key, repr(amount)]
            touched.append([name for name, _, _ in increments])
        return args, touched

    def _plan_landmark(self, stored: str, signals: Sequence[Signal]) -> float:
        """The landmark the increments of ``signals`` are computed against: the stored one,
        moved forward as ``InterestModel.apply`` would move it."""
        landmark = float(stored) if stored else 0.0
        for signal in signals:
            if self.model.needs_rebase(landmark, signal):
                landmark = signal.timestamp
        if any(self.model.needs_rebase(landmark, s) for s in signals):
            landmark = max(s.timestamp for s in signals)
        return landmark

    def _apply_call(
        self,
        user_id: str,
        signals: Sequence[Signal],
        stored_landmark: str,
        want: str,
    ) -> _ApplyCall:
        """The script that applies ``signals`` against the landmark believed stored, skipping
        events applied before. ``want``: 'profile' (the state back) or 'refresh' (the state when
        preferences must be refreshed)."""
        landmark = self._plan_landmark(stored_landmark, signals)
        moved = landmark != (float(stored_landmark) if stored_landmark else 0.0)
        args, touched = self._event_args(landmark, signals)
        call = self._script(
            _APPLY,
            user_id,
            stored_landmark,
            repr(landmark),
            self.serializer.encode_document(UserProfile(user_id=user_id)),
            "",
            repr(time.time()),
            self.model.max_history,
            self.max_event_ids,
            *self._ttl_args,
            self.channel,
            user_id,
            want,
            self.model.refresh_every,
            "1" if moved else "0",
            len(signals),
            *args,
        )
        return _ApplyCall(call, repr(landmark), touched)

    def _refresh_preferences(self, applied: list[_Applied]) -> Op[None]:
        """Refreshes the preferences of profiles read back after their new events, as
        ``InterestModel.apply`` does (see :meth:`InterestModel.refresh_preferences`), and stores
        them if each profile is still at the version they were computed for. When another writer
        came in between, they are computed again on its newer state (a few times at most)."""
        work: list[tuple[UserProfile, bool, set[str]]] = []
        for profile, fresh, touched in applied:
            crossed = self.model.refresh_crosses(profile.event_count, fresh)
            if self.model.refresh_preferences(profile, fresh, touched, crossed=crossed):
                work.append((profile, crossed, touched))
        for _ in range(PREFERENCE_ATTEMPTS):
            if not work:
                return
            calls = [
                self._script(
                    _PREFERENCES,
                    profile.user_id,
                    str(profile.version),
                    self.serializer.encode_document(profile),
                    self.channel,
                    profile.user_id,
                )
                for profile, _, _ in work
            ]
            stored = yield self._batch(calls)
            lost = [item for item, done in zip(work, stored, strict=True) if not int(done)]
            if not lost:
                return
            states = yield self._batch([self._read_call(profile.user_id) for profile, _, _ in lost])
            work = []
            for (profile, crossed, touched), reply in zip(lost, states, strict=True):
                if reply:  # else deleted meanwhile
                    newer = self._decode_read(profile.user_id, reply, [])
                    self.model.refresh_preferences(newer, 0, touched, crossed=crossed)
                    work.append((newer, crossed, touched))

    def _follow_call(
        self,
        profile: UserProfile,
        old_version: int,
        old_landmark: float,
        fresh: Sequence[Signal],
        document: bytes,
        entries: dict[str, tuple[Interaction, bytes]],
        *,
        publish: bool = True,
        fields: dict[str, str] | None = None,
    ) -> tuple[Any, ...]:
        """Brings Redis from ``old_version`` (with ``old_landmark``) to ``profile``, which another
        store made by applying ``fresh`` (``entries``: the history entries the change added, by
        event id, encoded): it sets the interest fields of the features ``fresh`` touched (all
        of them if the landmark moved) and adds the entries. The script answers ``stale`` when
        Redis is not at ``old_version``, or the user's floor refuses ``profile``'s version (and
        removes what it holds if that is older than ``profile``, raising the floor: see
        :data:`lua.FOLLOW`). Unless ``publish`` is false (the caller announces the change with others:
        :meth:`_announce_call`), the script publishes the new version on the invalidation
        channel. ``fields``: ``ProfileSerializer.follow_fields``
        of the change, when the caller has them."""
        everything = not old_version or profile.landmark != old_landmark
        if fields is None:
            fields = self.serializer.follow_fields(profile, old_version, old_landmark, fresh)
        members = []
        for signal in fresh:
            entry = entries.get(signal.event_id)
            if entry is not None:  # else it fell out of the history's window
                members.append(self.serializer.history_member(*entry))
        return self._script(
            _FOLLOW,
            profile.user_id,
            old_version,
            profile.version,
            document,
            self._priors(profile),
            repr(float(profile.landmark)),
            repr(profile.updated_at.timestamp()),
            profile.event_count,
            self.model.max_history,
            *self._ttl_args,
            self.channel if publish else "",
            profile.user_id,
            "1" if everything else "0",
            2 * len(fields),
            *[v for item in fields.items() for v in item],
            *members,
        )

    def _announce_call(self, versions: Iterable[tuple[str, int]]) -> tuple[Any, ...] | None:
        """One message on the invalidation channel announcing the new ``version`` of each
        ``(user_id, version)``: ``version␟user_id`` records joined by ``␞`` (a listener wakes
        once for a batch, not once per user); ``None`` when this store publishes nothing."""
        if not self.channel:
            return None
        return ("PUBLISH", self.channel, INVALIDATION_SEPARATOR.join(f"{v}\x1f{u}" for u, v in versions))

    # -- operations -------------------------------------------------------------------------------

    def _get_op(self, user_id: str, *, shared: bool) -> Op[UserProfile | None]:
        found = yield from self._get_many_op([user_id], shared=shared)
        return found.get(user_id)

    def _get_many_op(self, user_ids: list[str], *, shared: bool) -> Op[dict[str, UserProfile]]:
        """Snapshots first (no script); the users whose snapshot is stale (or cannot be
        decoded) are then read from their parts by the ``READ`` script, which is atomic, and
        their new snapshots stored."""
        now = self._clock()
        sliding: list[str] = []
        per_user = [self._snapshot_calls(u, now, sliding) for u in user_ids]
        replies = yield self._batch([call for calls in per_user for call in calls])
        self._remember_slides(sliding, now)  # only once Redis has answered them
        with _gc.paused(len(user_ids) * OBJECTS_PER_PROFILE):
            found, unreadable = self._decode_snapshots(user_ids, per_user, replies)
        if unreadable:
            states = yield self._batch([self._read_call(u, parts=bad) for u, bad in unreadable.items()])
            repairs: list[tuple[Any, ...]] = []
            for user_id, reply in zip(unreadable, states, strict=True):
                found[user_id] = self._decode_read(user_id, reply, repairs) if reply else None
            if repairs:  # the profiles changed since their snapshots: store new ones for later reads
                yield self._batch(repairs)
        return {u: p for u, p in found.items() if p is not None}

    def _decode_snapshots(
        self, user_ids: list[str], per_user: list[list[tuple[Any, ...]]], replies: list[Any]
    ) -> tuple[dict[str, UserProfile | None], dict[str, bool]]:
        """The profiles whose snapshots are current, and the users to read from their parts
        (with whether their snapshot could not be decoded)."""
        found: dict[str, UserProfile | None] = {}
        unreadable: dict[str, bool] = {}  # users to read from their parts -> snapshot undecodable
        decode = self.serializer.decode_snapshot
        landmarks = self._landmarks
        if len(landmarks) + len(user_ids) > MAX_LANDMARKS_REMEMBERED:
            landmarks.clear()
        at = 0
        for user_id, calls in zip(user_ids, per_user, strict=True):
            version, snap_version, snapshot = replies[at]
            at += len(calls)
            if version is None:
                continue  # no profile
            found[user_id] = None  # keeps the order of user_ids
            if snapshot is None or snap_version != version:
                unreadable[user_id] = False
                continue
            try:
                found[user_id] = profile = decode(snapshot, version=version)
            except ValidationError:  # damaged, older or newer: the parts are the truth (and the repair)
                unreadable[user_id] = True
                continue
            landmarks[user_id] = repr(profile.landmark)  # as the hash holds it; _remember_landmark, bounded
        return found, unreadable

    def _put_op(self, profile: UserProfile, expected_version: int | None) -> Op[UserProfile]:
        stored, _ = self.serializer.checked_copy(profile)
        expected = "" if expected_version is None else str(expected_version)
        (reply,) = yield self._batch([self._write_call("put", stored, expected)])
        if _text(reply[0]) == "conflict":
            raise ConflictError(f"profile {profile.user_id!r} is at version {int(reply[1])}, not {expected_version}")
        stored.version = int(reply[1])
        self._remember_landmark(stored.user_id, repr(float(stored.landmark)))
        return stored

    def _put_many_op(self, profiles: list[UserProfile]) -> Op[list[UserProfile]]:
        stored = [self.serializer.checked_copy(p)[0] for p in profiles]
        replies = yield self._batch([self._write_call("put", p, "") for p in stored])
        for profile, reply in zip(stored, replies, strict=True):
            profile.version = int(reply[1])
        return stored

    def _delete_op(self, user_id: str) -> Op[bool]:
        (existed,) = yield self._batch([self._delete_call(user_id)])
        self._landmarks.pop(user_id, None)
        self._slid.pop(user_id, None)
        return bool(existed)

    def _delete_call(self, user_id: str) -> tuple[Any, ...]:
        return self._script(_DELETE, user_id, self.channel, user_id)

    def _apply_feedback_op(self, user_id: str, signals: list[Signal]) -> Op[UserProfile]:
        pending = signals
        for _ in range(10):
            built = self._apply_call(user_id, pending, self._landmarks.get(user_id, ""), "profile")
            (reply,) = yield self._batch([built.call])
            status = _text(reply[0])
            if status == "retry":  # the landmark moved (or the profile is new to us): recompute
                self._remember_landmark(user_id, _text(reply[1]))
                continue
            if status == "replan":  # without the repeated events the landmark would move elsewhere
                pending = [s for s, bit in zip(pending, _text(reply[1]), strict=True) if bit == "1"]
                continue
            if not reply[4]:  # all signals seen before, and no profile: nothing stored
                return UserProfile(user_id=user_id)
            profile = self._decode_state(user_id, reply[4])
            fresh = int(reply[1])
            if fresh:
                yield from self._refresh_preferences([(profile, fresh, built.touched_by(_text(reply[3])))])
            return profile
        raise StoreUnavailableError(f"the landmark of {user_id!r} kept moving; try again")

    def _apply_feedback_many_op(self, by_user: dict[str, list[Signal]]) -> Op[dict[str, int]]:
        versions: dict[str, int] = {}
        applied: list[_Applied] = []
        pending = dict(by_user)
        for _ in range(10):
            users = list(pending)
            built = [self._apply_call(u, pending[u], self._landmarks.get(u, ""), "refresh") for u in users]
            replies = yield self._batch([b.call for b in built])
            retry = {}
            for user_id, call, reply in zip(users, built, replies, strict=True):
                status = _text(reply[0])
                if status == "retry":
                    self._remember_landmark(user_id, _text(reply[1]))
                    retry[user_id] = pending[user_id]
                elif status == "replan":
                    mask = _text(reply[1])
                    retry[user_id] = [s for s, bit in zip(pending[user_id], mask, strict=True) if bit == "1"]
                else:
                    versions[user_id] = int(reply[2])
                    fresh = int(reply[1])
                    if reply[4]:
                        profile = self._decode_state(user_id, reply[4])
                        applied.append((profile, fresh, call.touched_by(_text(reply[3]))))
                    elif fresh:
                        self._remember_landmark(user_id, call.landmark)
            if not retry:
                yield from self._refresh_preferences(applied)
                return versions
            pending = retry
        raise StoreUnavailableError("profile landmarks kept moving; try again")

    def _touch_op(self, user_id: str) -> Op[bool]:
        (reply,) = yield self._batch([self._script(_TOUCH, user_id, *self._ttl_args)])
        return bool(reply)

    def _ttl_op(self, user_id: str) -> Op[float | None]:
        (milliseconds,) = yield self._batch([("PTTL", self.keys(user_id)[0])])
        return None if int(milliseconds) < 0 else int(milliseconds) / 1000

    def _close_op(self) -> Op[None]:
        yield _Close(self.connection)


_Applied = tuple[UserProfile, int, set[str]]
"""A profile read back after an apply, the number of new events, and the features they touched."""


@dataclass(frozen=True, slots=True)
class _ApplyCall:
    call: tuple[Any, ...]
    landmark: str
    touched: list[list[str]]

    def touched_by(self, mask: str) -> set[str]:
        """The features touched by the events the script found new (``mask``: '1' per new one)."""
        return {name for names, bit in zip(self.touched, mask, strict=True) if bit == "1" for name in names}
