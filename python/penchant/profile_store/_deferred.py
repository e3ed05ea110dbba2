"""Commands sent to one Redis server whose replies are read later.

A change through :class:`~penchant.profile_store.TieredProfileStore` is durable once SQL has
committed it; Redis is a cache that the change brings along. Waiting for Redis to answer costs
the write a round trip (about a third of it on loopback, and most of its slowest cases, which
are slow wake-ups of one process or the other). So ``apply_feedback`` sends the commands that
bring Redis along on a connection of their own (:class:`DeferredReplies`) and returns; the
replies are read (:meth:`DeferredReplies.settle`) by the store's next operation that uses Redis,
before it does. Redis runs a connection's commands in order, so once the replies are read,
everything sent before has happened, and the store reads its own changes from Redis.

A connection the server closed is replaced (noticed before a send, when no reply is due), and
every new connection first loads the scripts, so that a restarted server runs them. A batch
whose replies cannot be read, or hold an error, is reported lost, and the store copies its
profiles into Redis from SQL as they are then (the batch is not sent again: by the time its
loss is known, what it held may be old, or the user deleted). A profile that Redis did not hold
at the version expected was removed by the script itself, which also keeps older fills out
for a while (``lua.FOLLOW``): readers fill it from SQL, so nothing is rewritten from what the
change held.

Only the sync client of a single server takes part: on a cluster, or from asyncio, the store
waits for the replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from penchant.errors import StoreUnavailableError
from penchant.profile_store._effects import Effect
from penchant.profile_store.redis_store import (
    _SCRIPTS,
    Calls,
    RedisConnection,
    _made,
    _packed,
    _pooled,
    _reply,
    _unavailable_errors,
)

__all__ = ["DeferredReplies", "SendDeferred", "SettleDeferred", "Settled"]

Tag = TypeVar("Tag")


@dataclass
class Settled(Generic[Tag]):
    """What became of the batches sent, each named by the tag it was sent with."""

    answered: list[tuple[Tag, list[Any]]] = field(default_factory=list)
    """Batches and their replies, in the order sent."""
    lost: list[Tag] = field(default_factory=list)
    """Batches whose replies could not be read, or held an error: Redis may lack them."""
    error: BaseException | None = None
    """Why the last of ``lost`` was lost."""
    unexpected: bool = False
    """Whether an error reply other than NOSCRIPT lost some (OOM, READONLY...), rather than a
    lost connection or a restarted server."""


@dataclass
class _Batch(Generic[Tag]):
    tag: Tag
    calls: Sequence[tuple[Any, ...]]
    loads: int = 0
    """Replies to read and drop before the batch's own: the scripts loaded ahead of it."""


_ALL: weakref.WeakSet[DeferredReplies[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for deferred in list(_ALL):
        deferred._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class DeferredReplies(Generic[Tag]):
    """Batches of commands sent to the server of ``redis`` on a connection of their own (made
    with the sync client's settings, outside its pool, when first needed), and read later."""

    def __init__(self, redis: RedisConnection) -> None:
        self._redis = redis
        self._lock = threading.Lock()
        self._connection: Any = None
        self._unsupported = redis.is_cluster
        self._sent: list[_Batch[Tag]] = []
        self._settled: Settled[Tag] = Settled()
        self._closed = False
        _ALL.add(self)

    @property
    def waiting(self) -> bool:
        """Whether batches wait to be read or reported (or another thread is reading some)."""
        return bool(self._sent or self._settled.answered or self._settled.lost or self._lock.locked())

    def send(self, tag: Tag, calls: Calls) -> bool:
        """Sends ``calls`` without waiting for their replies; ``False`` (nothing sent) when the
        client is not a single server's pooled client, or this is closed. Raises
        ``StoreUnavailableError`` when they cannot be sent."""
        with self._lock:
            if self._unsupported or self._closed:
                return False
            if self._connection is None:
                client = self._redis.sync()
                if not _pooled(client):
                    self._unsupported = True
                    return False
                pool = client.connection_pool
                self._connection = pool.connection_class(**pool.connection_kwargs)  # not counted by the pool
            batch = _Batch(tag, _made(calls))
            connected = self._connection._sock is not None
            if connected and not self._sent and _closed_by_server(self._connection):
                self._connection.disconnect()  # noticed here, as a wait for the reply would have
                connected = False
            try:
                self._send(batch)
            except _unavailable_errors() as exc:
                if not connected:
                    raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc
                # A connection that served before failed (a restarted server closed it): this
                # batch goes on a new one; those waiting on the old one are reported lost.
                self._lose(self._sent, StoreUnavailableError(f"Redis is unavailable: {exc}"))
                self._sent = []
                try:
                    self._send(batch)
                except _unavailable_errors() as again:
                    raise StoreUnavailableError(f"Redis is unavailable: {again}") from again
            self._sent.append(batch)
            return True

    def settle(self) -> None:
        """Reads the replies of every batch sent; :meth:`take` hands them over."""
        import redis.exceptions

        with self._lock:
            sent, self._sent = self._sent, []
            if not sent:
                return
            if self._connection._sock is None:  # closed since they were sent: no reply will come
                self._lose(sent, StoreUnavailableError("Redis is unavailable: its connection was closed"))
                return
            try:
                replies = self._read(sent)
            except _unavailable_errors() as exc:
                self._lose(sent, StoreUnavailableError(f"Redis is unavailable: {exc}"))
                return
            except BaseException as exc:  # replies may be left unread: the connection cannot serve
                self._lose(sent, exc)
                raise
            for batch, answers in zip(sent, replies, strict=True):
                error = next((a for a in answers if isinstance(a, Exception)), None)
                if error is None:
                    self._settled.answered.append((batch.tag, answers))
                else:
                    self._settled.lost.append(batch.tag)
                    self._settled.error = error
                    if isinstance(error, redis.exceptions.NoScriptError):
                        self._connection.disconnect()  # the next one loads the scripts
                    else:
                        self._settled.unexpected = True

    def take(self) -> Settled[Tag]:
        """What :meth:`settle` read since the last call."""
        with self._lock:
            settled, self._settled = self._settled, Settled()
        return settled

    def close(self) -> None:
        """Closes the connection (after :meth:`settle`: unread replies are reported lost)."""
        with self._lock:
            self._closed = True
            connection, self._connection = self._connection, None
            if self._sent:
                self._lose(self._sent, StoreUnavailableError("the store was closed before Redis answered"))
                self._sent = []
        if connection is not None:
            connection.disconnect()

    # -- with the lock held ----------------------------------------------------------------------

    def _send(self, batch: _Batch[Tag]) -> None:
        connection = self._connection
        calls = batch.calls
        if connection._sock is None:
            if self._sent:  # replies that will never come
                self._lose(self._sent, StoreUnavailableError("Redis is unavailable: its connection was closed"))
                self._sent = []
            connection.connect()  # authenticated, on TLS if asked, by redis-py
            # A new connection may reach a server that lacks the scripts (it restarted).
            loads = [("SCRIPT", "LOAD", script.source) for script in _SCRIPTS]
            calls = [*loads, *calls]
            batch.loads = len(loads)
        try:
            connection.send_packed_command(_packed(connection, calls), check_health=False)
        except BaseException:
            connection.disconnect()
            raise

    def _read(self, sent: list[_Batch[Tag]]) -> list[list[Any]]:
        import redis.exceptions

        client = self._redis.sync()
        connection = self._connection
        replies = []
        for batch in sent:
            for _ in range(batch.loads):
                # A script that did not load: its call answers NOSCRIPT, an error, and the batch is lost.
                with contextlib.suppress(redis.exceptions.ResponseError):
                    connection.read_response()
            answers: list[Any] = []
            for call in batch.calls:
                try:
                    answers.append(_reply(client, call, connection.read_response()))
                except redis.exceptions.ResponseError as exc:
                    answers.append(exc)
            replies.append(answers)
        return replies

    def _lose(self, batches: list[_Batch[Tag]], error: BaseException) -> None:
        """Reports ``batches`` lost, and drops the connection they were sent on."""
        if batches:
            self._settled.lost += [batch.tag for batch in batches]
            self._settled.error = error
        if self._connection is not None:
            self._connection.disconnect()

    def _forked(self) -> None:
        """In a forked child, before any other thread runs: the parent's batches and connection
        stay the parent's (the socket is closed in this process only)."""
        self._lock = threading.Lock()
        self._sent, self._settled = [], Settled()
        connection, self._connection = self._connection, None
        sock = None if connection is None else connection._sock
        if sock is not None:
            connection._sock = None
            sock.close()


def _closed_by_server(connection: Any) -> bool:
    """Whether a connection with no reply to come has something to read (the end of the
    stream: the server closed it, and a write would still succeed, once), or cannot tell."""
    try:
        sock = connection._sock
        if not hasattr(select, "poll"):  # Windows, where select takes any number of sockets
            return bool(select.select([sock], [], [], 0)[0])
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return True


class SendDeferred(Effect[bool]):
    """:meth:`DeferredReplies.send` (sync only: from asyncio, ``False``, nothing sent)."""

    __slots__ = ("calls", "deferred", "tag")

    def __init__(self, deferred: DeferredReplies[Any], tag: Any, calls: Calls) -> None:
        self.deferred = deferred
        self.tag = tag
        self.calls = calls

    def run_sync(self) -> bool:
        return self.deferred.send(self.tag, self.calls)

    async def run_async(self) -> bool:
        return False


class SettleDeferred(Effect[Settled[Any]]):
    """:meth:`DeferredReplies.settle`, then :meth:`~DeferredReplies.take` (from asyncio, the
    settling runs in a worker thread: the sync API sent the batches on a blocking socket; if the
    awaiting task is cancelled, the next operation takes what it read)."""

    __slots__ = ("deferred",)

    def __init__(self, deferred: DeferredReplies[Any]) -> None:
        self.deferred = deferred

    def run_sync(self) -> Settled[Any]:
        self.deferred.settle()
        return self.deferred.take()

    async def run_async(self) -> Settled[Any]:
        await asyncio.to_thread(self.deferred.settle)
        return self.deferred.take()
