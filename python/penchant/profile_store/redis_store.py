"""Profiles in Redis (a single server or a Redis Cluster), through redis-py's sync and asyncio
clients (hiredis parses replies when it is installed).

**Keys** (DESIGN.md, mechanism 7) are ``penchant:{<tenant>:<user>}:<kind>`` with the kinds
``profile``, ``interests``, ``history`` and ``events``. The hash tag keeps one user's keys in one
cluster slot, so each user's scripts are atomic on a cluster too. Tenant and user ids are
validated, then escaped (``%``, ``:``, ``{`` and ``}`` become ``%25``, ``%3A``, ``%7B``,
``%7D``), so no id can reach into another tenant's or user's keys, and no id is ever used as a
pattern.

**Updates never lose a write.** ``apply_feedback`` runs one Lua script per user that adds
forward-decayed amounts with ``HINCRBYFLOAT`` (additions commute, so concurrent writers in any
number of processes add up), skips event ids applied before, and moves the landmark when needed
by rescaling every sum inside the same script. The client computes the amounts against the
landmark it believes is stored; the script refuses them when that landmark has moved, and the
client recomputes (a rare retry).

**TTL** slides per key kind (:class:`KeyTTL`): every read and write of a user restarts the
expiry of all its keys.
"""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from penchant._time import to_datetime
from penchant._validate import check_id
from penchant.errors import ConflictError, StoreUnavailableError, ValidationError
from penchant.feedback_collector import Signal
from penchant.profile_store import lua
from penchant.profile_store._base import DEFAULT_TENANT, ProfileStore
from penchant.profile_store._effects import Effect, Op
from penchant.profile_store._loops import PerLoop
from penchant.profile_store.serializer import ProfileSerializer
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


def user_keys(tenant: str, user_id: str) -> tuple[str, str, str, str]:
    """The Redis keys of one user: profile, interests, history, events."""
    tag = f"penchant:{{{_escape(check_id(tenant, 'tenant'))}:{_escape(check_id(user_id))}}}:"
    return (tag + "profile", tag + "interests", tag + "history", tag + "events")


def invalidation_channel(tenant: str) -> str:
    """The pub/sub channel on which changes to the tenant's profiles are announced."""
    return f"penchant:invalidate:{_escape(check_id(tenant, 'tenant'))}"


@dataclass(frozen=True)
class _Script:
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()


_READ, _APPLY, _WRITE, _DELETE, _TOUCH = (_Script(s) for s in (lua.READ, lua.APPLY, lua.WRITE, lua.DELETE, lua.TOUCH))
_SCRIPTS = (_READ, _APPLY, _WRITE, _DELETE, _TOUCH)


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions as e

    return (e.ConnectionError, e.TimeoutError, e.ClusterDownError, e.ClusterError, e.RedisClusterException, OSError)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """``redis+cluster://[user:password@]host:port[,host:port...][?options]`` (``rediss+`` for
    TLS): the startup nodes and the connection options."""
    parts = urllib.parse.urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValidationError(f"cluster URL nodes must be host:port, got {host_port!r}")
        nodes.append((host.strip("[]"), int(port)))
    options: dict[str, Any] = {"ssl": parts.scheme.startswith("rediss")}
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = urllib.parse.unquote(user)
        if password:
            options["password"] = urllib.parse.unquote(password)
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
                **options,
                **self._options(),
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
                startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in nodes], **options, **self._options()
            )
        return redis.asyncio.Redis.from_url(url, retry=Retry(NoBackoff(), 1), **self._options())

    def pubsub_client(self) -> tuple[Any, bool]:
        """A sync client for a subscriber thread, and whether the caller must close it. On a
        cluster it talks to one node: a PUBLISH on any node reaches the subscribers of all."""
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
            return redis.Redis(host=host, port=port, **options, **self._options()), True
        return redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 1), **self._options()), True

    # -- execution -----------------------------------------------------------------------------

    def run_sync(self, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        import redis.exceptions

        try:
            client = self.sync()
            replies = self._execute_sync(client, calls)
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
    def _execute_sync(client: Any, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
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

    async def run_async(self, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        import redis.exceptions

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

    @staticmethod
    async def _execute_async(client: Any, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
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

    def __init__(self, connection: RedisConnection, calls: Sequence[tuple[Any, ...]]) -> None:
        self.connection = connection
        self.calls = calls

    def run_sync(self) -> list[Any]:
        return self.connection.run_sync(self.calls) if self.calls else []

    async def run_async(self) -> list[Any]:
        return await self.connection.run_async(self.calls) if self.calls else []


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
        self._ttl_args = tuple(str(ms) for ms in self.key_ttl.milliseconds())
        self._landmarks: dict[str, str] = {}  # user -> landmark last seen: a guess the script checks

    def __repr__(self) -> str:
        return f"RedisProfileStore({self.connection!r}, tenant={self.tenant!r})"

    def keys(self, user_id: str) -> tuple[str, str, str, str]:
        """The user's keys: profile, interests, history, events."""
        return user_keys(self.tenant, user_id)

    def _batch(self, calls: Sequence[tuple[Any, ...]]) -> RedisBatch:
        return RedisBatch(self.connection, calls)

    # -- commands ---------------------------------------------------------------------------------

    def _script(self, script: _Script, user_id: str, *args: Any) -> tuple[Any, ...]:
        return ("EVALSHA", script.sha, 4, *self.keys(user_id), *args)

    def _read_call(self, user_id: str) -> tuple[Any, ...]:
        return self._script(_READ, user_id, *self._ttl_args)

    def _remember_landmark(self, user_id: str, landmark: str) -> None:
        if len(self._landmarks) >= 100_000:  # a bounded guess cache: forgetting only costs a retry
            self._landmarks.clear()
        self._landmarks[user_id] = landmark

    def _decode_state(self, user_id: str, state: list[Any]) -> UserProfile:
        version, landmark, updated_at, document, interests, history = state
        self._remember_landmark(user_id, _text(landmark))
        return self.serializer.decode_parts(
            document,
            interests,
            history,
            version=int(version),
            landmark=float(landmark),
            updated_at=float(updated_at),
        )

    def _write_call(
        self, mode: str, profile: UserProfile, version: str, document: bytes | None = None
    ) -> tuple[Any, ...]:
        fields = self.serializer.interest_fields(profile)
        flat = [v for item in fields.items() for v in item]
        history = [self.serializer.encode_interaction(i) for i in profile.interaction_history]
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
            *self._ttl_args,
            self.channel,
            profile.user_id,
            len(flat),
            *flat,
            *history,
        )

    def _history_entry(self, signal: Signal) -> bytes:
        """The history entry ``InterestModel.apply`` appends for ``signal``, encoded."""
        if not self.model.max_history:
            return b""
        interaction = Interaction(
            item_id=signal.item_id,
            feedback_type=str(signal.feedback_type),
            value=signal.value,
            weight=signal.weight,
            features=dict(signal.features),
            attributes=dict(signal.attributes),
            timestamp=to_datetime(signal.timestamp, "timestamp"),
            event_id=signal.event_id,
            half_life=signal.half_life,
        )
        return self.serializer.encode_interaction(interaction)

    def _event_args(self, landmark: float, signals: Sequence[Signal], entries: Sequence[bytes]) -> list[Any]:
        """Per event: its history entry and, per feature, the count (1), the time and the
        forward-decayed amount that ``InterestModel.increments`` gives: exactly what
        ``InterestModel.apply`` adds to a profile in memory."""
        args: list[Any] = []
        for signal, entry in zip(signals, entries, strict=True):
            increments = self.model.increments(landmark, signal)
            when = repr(float(signal.timestamp))
            args += [signal.event_id, when, entry, len(increments)]
            for name, key, amount in increments:
                args += [name, 1, when, 1, key, repr(amount)]
        return args

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

    def _apply_call(self, user_id: str, signals: Sequence[Signal], stored_landmark: str, want: str) -> tuple[Any, ...]:
        landmark = self._plan_landmark(stored_landmark, signals)
        document = self.serializer.encode_document(UserProfile(user_id=user_id))
        return self._script(
            _APPLY,
            user_id,
            "dedup",
            stored_landmark,
            repr(landmark),
            document,
            repr(time.time()),
            self.model.max_history,
            self.max_event_ids,
            *self._ttl_args,
            self.channel,
            user_id,
            want,
            len(signals),
            *self._event_args(landmark, signals, [self._history_entry(s) for s in signals]),
        )

    def _guarded_apply_call(
        self,
        profile: UserProfile,
        old_version: int,
        landmark: float,
        fresh: Sequence[Signal],
        document: bytes,
        entries: Sequence[bytes],
    ) -> tuple[Any, ...]:
        """Brings Redis from ``old_version`` to ``profile`` by adding what ``fresh`` adds; the
        script answers ``stale`` (and changes nothing) when Redis is not at ``old_version``."""
        return self._script(
            _APPLY,
            profile.user_id,
            "guarded",
            str(old_version),
            repr(float(landmark)),
            document,
            repr(profile.updated_at.timestamp()),
            self.model.max_history,
            self.max_event_ids,
            *self._ttl_args,
            self.channel,
            profile.user_id,
            "version",
            len(fresh),
            *self._event_args(landmark, fresh, entries),
        )

    # -- operations -------------------------------------------------------------------------------

    def _get_op(self, user_id: str, *, shared: bool) -> Op[UserProfile | None]:
        found = yield from self._get_many_op([user_id], shared=shared)
        return found.get(user_id)

    def _get_many_op(self, user_ids: list[str], *, shared: bool) -> Op[dict[str, UserProfile]]:
        replies = yield self._batch([self._read_call(u) for u in user_ids])
        return {u: self._decode_state(u, state) for u, state in zip(user_ids, replies, strict=True) if state}

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
        return bool(existed)

    def _delete_call(self, user_id: str) -> tuple[Any, ...]:
        return self._script(_DELETE, user_id, self.channel, user_id)

    def _apply_feedback_op(self, user_id: str, signals: list[Signal]) -> Op[UserProfile]:
        for _ in range(10):
            stored = self._landmarks.get(user_id, "")
            (reply,) = yield self._batch([self._apply_call(user_id, signals, stored, "profile")])
            status = _text(reply[0])
            if status == "retry":  # the landmark moved (or the profile is new to us): recompute
                self._remember_landmark(user_id, _text(reply[1]))
                continue
            if len(reply) < 3:  # all signals seen before, and no profile: nothing stored
                return UserProfile(user_id=user_id)
            return self._decode_state(user_id, reply[2])
        raise StoreUnavailableError(f"the landmark of {user_id!r} kept moving; try again")

    def _apply_feedback_many_op(self, by_user: dict[str, list[Signal]]) -> Op[dict[str, int]]:
        versions: dict[str, int] = {}
        pending = dict(by_user)
        for _ in range(10):
            users = list(pending)
            calls = [self._apply_call(u, pending[u], self._landmarks.get(u, ""), "version") for u in users]
            replies = yield self._batch(calls)
            retry = {}
            for user_id, reply in zip(users, replies, strict=True):
                if _text(reply[0]) == "retry":
                    self._remember_landmark(user_id, _text(reply[1]))
                    retry[user_id] = pending[user_id]
                else:
                    versions[user_id] = int(reply[2])
            if not retry:
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
