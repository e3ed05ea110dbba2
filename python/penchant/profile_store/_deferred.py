"""Commands sent to one Redis server whose replies are read later.

A write through :class:`~penchant.profile_store.TieredProfileStore` is durable once SQL has
committed it; Redis is a cache that the write brings along. Waiting for Redis to answer costs
the write a round trip (about a third of it on loopback, and most of its slowest cases, which
are slow wake-ups of one process or the other). So the tiered store sends the commands that
bring Redis along on a connection of its own (:class:`DeferredReplies`) and returns; the
replies are read by the store's next operation (:meth:`DeferredReplies.settle`), before it
reads or writes Redis again. Redis runs a connection's commands in order, so once the replies
are read, everything sent before has happened.

What the replies say is handled then, as it would have been at once: a profile Redis did not
hold at the version expected is written whole, a failure marks Redis down and remembers the
profiles for the refill after the outage. The commands are safe to send twice (they are
guarded by the version Redis must hold), so a connection that a restarted server closed is
replaced and the batches sent again.

Only the sync client of a single server takes part: on a cluster, with a client bound to one
connection, or from asyncio, the store waits for the replies as before.
"""

from __future__ import annotations

import asyncio
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
    """The outcome of the batches sent since the last :meth:`DeferredReplies.settle`, each
    named by the tag it was sent with."""

    answered: list[tuple[Tag, list[Any]]] = field(default_factory=list)
    """Batches and their replies, in the order sent."""
    lost: list[Tag] = field(default_factory=list)
    """Batches whose replies could not be read, or held an error: Redis may lack them."""
    error: BaseException | None = None
    """Why the last of ``lost`` was lost."""


_ALL: weakref.WeakSet[DeferredReplies[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for deferred in list(_ALL):
        deferred._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class DeferredReplies(Generic[Tag]):
    """Batches of commands sent to the server of ``redis`` on one connection of its sync
    client's pool (taken when first needed, and held until :meth:`close`), and read later."""

    def __init__(self, redis: RedisConnection) -> None:
        self._redis = redis
        self._lock = threading.Lock()
        self._connection: Any = None
        self._unsupported = False
        self._sent: list[tuple[Tag, Sequence[tuple[Any, ...]]]] = []
        self._lost: list[Tag] = []
        self._error: BaseException | None = None
        _ALL.add(self)

    @property
    def waiting(self) -> bool:
        """Whether batches wait to be settled."""
        return bool(self._sent or self._lost)

    def send(self, tag: Tag, calls: Calls) -> bool:
        """Sends ``calls`` without waiting for their replies; ``False`` (nothing sent) when the
        client is not a single server's pooled client. Raises ``StoreUnavailableError`` when
        they cannot be sent (then nothing was sent)."""
        with self._lock:
            connection = self._take()
            if connection is None:
                return False
            made = _made(calls)
            if not self._sent and _closed_by_server(connection):
                connection.disconnect()  # then noticed here, as a wait for the reply would have
            try:
                packed = _packed(connection, made)
                try:
                    connection.send_packed_command(packed, check_health=False)
                except _unavailable_errors():
                    # A restarted server closed the connection: the batches sent on it before
                    # may be lost, and this one goes on a new one.
                    self._drop_sent()
                    connection.send_packed_command(packed, check_health=False)
            except _unavailable_errors() as exc:
                connection.disconnect()
                raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc
            self._sent.append((tag, made))
            return True

    def settle(self) -> Settled[Tag]:
        """Reads the replies of every batch sent and not settled yet."""
        with self._lock:
            sent, self._sent = self._sent, []
            settled: Settled[Tag] = Settled(lost=self._lost, error=self._error)
            self._lost, self._error = [], None
            if not sent:
                return settled
            try:
                replies = self._read(sent)
            except _unavailable_errors():
                # The server may have closed the connection since (restarted): the batches go
                # once more on a new one (each is safe to run twice).
                self._connection.disconnect()
                try:
                    self._connection.send_packed_command(
                        _packed(self._connection, [call for _, calls in sent for call in calls]), check_health=False
                    )
                    replies = self._read(sent)
                except _unavailable_errors() as exc:
                    self._connection.disconnect()
                    settled.lost += [tag for tag, _ in sent]
                    settled.error = StoreUnavailableError(f"Redis is unavailable: {exc}")
                    return settled
            except BaseException:  # replies may be left unread: the connection cannot serve again
                self._connection.disconnect()
                raise
        for (tag, calls), answers in zip(sent, replies, strict=True):
            self._load_scripts_if_needed(calls, answers)
            error = next((a for a in answers if isinstance(a, Exception)), None)
            if error is None:
                settled.answered.append((tag, answers))
            else:
                settled.lost.append(tag)
                settled.error = error
        return settled

    def close(self) -> None:
        """Gives the connection back to the pool (after :meth:`settle`: unread replies would be
        read by the pool's next user, so a connection with some is closed instead)."""
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is None:
                return
            if self._sent:
                connection.disconnect()
                self._drop_sent()
            try:
                self._redis.sync().connection_pool.release(connection)
            except StoreUnavailableError:  # the client is closed already
                connection.disconnect()

    # -- with the lock held ----------------------------------------------------------------------

    def _take(self) -> Any:
        if self._connection is None and not self._unsupported:
            client = self._redis.sync()
            if not _pooled(client):
                self._unsupported = True
                return None
            try:
                self._connection = client.connection_pool.get_connection()
            except _unavailable_errors() as exc:
                raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc
        return self._connection

    def _read(self, sent: list[tuple[Tag, Sequence[tuple[Any, ...]]]]) -> list[list[Any]]:
        import redis.exceptions

        client = self._redis.sync()
        replies = []
        for _, calls in sent:
            answers: list[Any] = []
            for call in calls:
                try:
                    answers.append(_reply(client, call, self._connection.read_response()))
                except redis.exceptions.ResponseError as exc:
                    answers.append(exc)
            replies.append(answers)
        return replies

    def _drop_sent(self) -> None:
        """The batches sent on a connection that failed: Redis may lack them."""
        self._lost += [tag for tag, _ in self._sent]
        self._error = StoreUnavailableError("Redis is unavailable: a connection failed before its replies were read")
        self._sent = []

    # -- without the lock ------------------------------------------------------------------------

    def _load_scripts_if_needed(self, calls: Sequence[tuple[Any, ...]], answers: list[Any]) -> None:
        """Runs again, through the pool (which loads the scripts), the calls that found the
        server without its scripts (it restarted or was flushed)."""
        import redis.exceptions

        missing = [i for i, a in enumerate(answers) if isinstance(a, redis.exceptions.NoScriptError)]
        if not missing:
            return
        try:
            again = self._redis.run_sync([calls[i] for i in missing])
        except Exception as exc:  # reported as the batch's error
            again = [exc] * len(missing)
        for i, answer in zip(missing, again, strict=True):
            answers[i] = answer

    def _forked(self) -> None:
        """In a forked child, before any other thread runs: the parent's batches and connection
        stay the parent's (the socket is closed in this process only)."""
        self._lock = threading.Lock()
        self._sent, self._lost, self._error = [], [], None
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()  # redis-py shuts a socket down only in the process that opened it


def _closed_by_server(connection: Any) -> bool:
    """Whether a connection with no reply to come has something to read: the end of the
    stream, since the server closed it (a write would still succeed, once)."""
    sock = connection._sock
    return sock is not None and bool(select.select([sock], [], [], 0)[0])


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
    """:meth:`DeferredReplies.settle` (from asyncio, in a worker thread: the sync API sent the
    batches on a blocking socket)."""

    __slots__ = ("deferred",)

    def __init__(self, deferred: DeferredReplies[Any]) -> None:
        self.deferred = deferred

    def run_sync(self) -> Settled[Any]:
        return self.deferred.settle()

    async def run_async(self) -> Settled[Any]:
        return await asyncio.to_thread(self.deferred.settle)
