"""The subscriber of a tenant's invalidation channel, read by the store's own calls.

A thread woken for each message cost the writing thread dearly on a small machine: every write
of a process reaches that process's own subscriber, each wake-up of a thread cost 60-150 µs of
CPU, and the writer waited for the interpreter lock meanwhile. So the socket is not watched by a
thread. Each read or write of a profile through the tiered store first reads whatever has
arrived, without waiting (a non-blocking ``recv``, at most every :data:`READ_INTERVAL`), and
hands each message to the store.
So a call finds no cached copy whose invalidation reached the process more than
:data:`READ_INTERVAL` before it (unless another thread is handling that message at the time).

One daemon thread remains, asleep almost always: it subscribes (again, once a lost connection is
noticed), and reads every :data:`IDLE_READ_INTERVAL`, so that messages do not pile up in Redis's
output buffer for a process that makes no calls. What has piled up since is handled by the next
call, whole (a few µs a message).

Replies are parsed by hiredis when it is installed, else by :class:`RespParser`.

A process forked from one that had subscribed does not touch the socket it inherited (its
parent reads from it): its first call clears its cache and subscribes anew.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["ChannelReader", "RespParser"]

logger = logging.getLogger("penchant.profile_store")

READ_INTERVAL = 0.001
"""Seconds between two reads of the channel by the store's calls (a read that finds nothing
costs ~3 µs)."""

IDLE_READ_INTERVAL = 1.0
"""Seconds between two reads by the subscriber's thread, for a process that makes no calls."""

RECONNECT_PAUSE = 0.5
"""Seconds between two attempts to subscribe."""

SUBSCRIBE_TIMEOUT = 5.0
"""Seconds to wait for the server to confirm a subscription."""

MAX_NESTING = 16
"""Arrays nested deeper than this in a reply are refused by :class:`RespParser` (a message is
an array of strings)."""

_CHUNK = 65536

_INTEGER = re.compile(rb"-?[0-9]{1,19}")

_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class ProtocolError(ValueError):
    """Bytes that are not a RESP reply."""


class _Incomplete(Exception):
    """The buffer ends inside a reply."""


class RespParser:
    """RESP2 and RESP3 replies from bytes, with hiredis's ``Reader`` interface (``feed``, then
    ``gets`` until it returns ``False``), for when hiredis is not installed. It reads the kinds a
    subscriber receives: arrays, pushes and sets (as lists), bulk and simple strings (as bytes),
    integers, nulls, and errors (returned as :class:`ProtocolError` instances, not raised);
    anything else raises :class:`ProtocolError`."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def gets(self) -> Any:
        try:
            reply, end = self._parse(0, 0)
        except _Incomplete:
            return False
        del self._buffer[:end]
        return reply

    def _parse(self, at: int, depth: int) -> tuple[Any, int]:
        buffer = self._buffer
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            raise _Incomplete
        kind, head, at = buffer[at], bytes(buffer[at + 1 : line_end]), line_end + 2
        if kind in b"$*>~:":
            if not _INTEGER.fullmatch(head):
                raise ProtocolError(f"a number was expected, got {head[:40]!r}")
            number = int(head)
            if kind == ord(":"):
                return number, at
            if number < 0:
                return None, at
            if kind == ord("$"):
                if len(buffer) < at + number + 2:
                    raise _Incomplete
                return bytes(buffer[at : at + number]), at + number + 2
            if depth >= MAX_NESTING:
                raise ProtocolError(f"arrays nested more than {MAX_NESTING} deep")
            items = []
            for _ in range(number):
                item, at = self._parse(at, depth + 1)
                items.append(item)
            return items, at
        if kind == ord("+"):
            return head, at
        if kind == ord("_"):
            return None, at
        if kind == ord("-"):
            return ProtocolError(head.decode("utf-8", "replace")), at
        raise ProtocolError(f"unknown reply kind {chr(kind)!r}")


def _close(connection: Any) -> None:
    """Closes a subscriber's connection (if any)."""
    if connection is not None:
        try:
            connection.disconnect()
        except Exception as exc:  # closing a broken connection
            logger.debug("closing a pub/sub connection: %s", exc)


def _parser() -> Any:
    try:
        import hiredis
    except ImportError:
        return RespParser()
    return hiredis.Reader()


_READERS: weakref.WeakSet[ChannelReader] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for reader in list(_READERS):
        reader._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ChannelReader:
    """A subscription to ``channel``, read by :meth:`catch_up` (see the module documentation).

    ``open_client()`` gives a sync redis-py client whose connection settings the subscription
    uses (it takes no connection from the client's pool), and whether to close that client
    afterwards; ``on_message(data)`` handles one message; ``forget_all()`` is called when
    messages may have been missed (a lost connection, a new subscription, a message that could
    not be handled). Messages are handled with the reader's lock held, one caller at a time.
    """

    def __init__(
        self,
        channel: str,
        open_client: Callable[[], tuple[Any, bool]],
        on_message: Callable[[bytes], None],
        forget_all: Callable[[], None],
    ) -> None:
        self._channel = channel
        self._open_client = open_client
        self._on_message = on_message
        self._forget_all = forget_all
        self._lock = threading.Lock()
        self._next_read = 0.0
        self._connection: Any = None
        self._socket: socket.socket | None = None
        self._tls = False
        self._replies: Any = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._start_afresh = False
        self.subscribed = threading.Event()
        self._thread = self._start()
        _READERS.add(self)

    def catch_up(self) -> None:
        """Handles every message that has arrived, unless that was done less than
        :data:`READ_INTERVAL` ago or another thread is doing it now. Never waits for the
        network."""
        if time.monotonic() >= self._next_read and self._lock.acquire(blocking=False):
            try:
                self._read()
            finally:
                self._lock.release()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        with self._lock:
            self._disconnect()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._keep, name=f"penchant-invalidate-{self._channel}", daemon=True)
        thread.start()
        return thread

    def _forked(self) -> None:
        """In a forked child, before any other thread runs: leave the parent's socket to the
        parent (no shutdown, which would end it for the parent too) and start afresh."""
        stopped = self._stop.is_set()
        self._lock = threading.Lock()
        self._stop, self._wake, self.subscribed = threading.Event(), threading.Event(), threading.Event()
        if stopped:  # closed before the fork: it stays closed
            self._stop.set()
        if self._connection is not None:
            self._connection._sock = None  # redis-py's disconnect() must not shut it down
        if self._socket is not None:
            self._socket.close()  # this process's descriptor only
        self._connection = self._socket = self._replies = None
        self._start_afresh = not stopped
        self._next_read = 0.0

    # -- with the lock held ------------------------------------------------------------------------

    def _read(self) -> None:
        self._next_read = time.monotonic() + READ_INTERVAL
        if self._start_afresh:  # the first call in a forked child
            self._start_afresh = False
            self._forget_all()
            self._thread = self._start()
        sock = self._socket
        if sock is None:
            return
        try:
            while True:
                data = sock.recv(_CHUNK)
                if not data:
                    raise ConnectionError("the server closed the connection")
                self._replies.feed(data)
                if len(data) < _CHUNK and not self._tls:  # TLS: one record per recv, read on
                    break
        except _WOULD_BLOCK:
            pass
        except Exception as exc:  # a reset or closed connection
            self._lost(exc)
            return
        try:
            while (reply := self._replies.gets()) is not False:
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    self._handle(reply[2])
        except Exception as exc:  # bytes that are not RESP: start afresh
            self._lost(exc)

    def _handle(self, data: Any) -> None:
        try:
            self._on_message(data)
        except Exception as exc:  # a message that makes no sense: whatever it named must go
            logger.warning(
                "invalidation channel %s: a message could not be handled (%s): cache cleared", self._channel, exc
            )
            self._forget_all()

    def _lost(self, exc: BaseException) -> None:
        logger.debug("invalidation channel %s: %s", self._channel, exc)
        self._disconnect()
        self._forget_all()  # messages may be missed until the thread subscribes again
        self._wake.set()

    def _disconnect(self) -> None:
        self.subscribed.clear()
        _close(self._connection)
        self._connection = self._socket = self._replies = None

    # -- the subscriber's thread ------------------------------------------------------------------

    def _keep(self) -> None:
        while not self._stop.is_set():
            if self._socket is None:
                try:
                    self._subscribe()
                except Exception as exc:  # any failure: try again after a pause
                    logger.debug("subscribing to %s: %s", self._channel, exc)
                    self._stop.wait(RECONNECT_PAUSE)
                    continue
            self._wake.wait(IDLE_READ_INTERVAL)
            self._wake.clear()
            self.catch_up()

    def _subscribe(self) -> None:
        client, owned = self._open_client()
        try:
            pool = client.connection_pool
            connection = pool.connection_class(**pool.connection_kwargs)  # not counted by the pool
        finally:
            if owned:
                client.close()
        try:
            connection.connect()  # authenticated, on TLS if asked, by redis-py
            connection.send_command("SUBSCRIBE", self._channel)
            sock: socket.socket = connection._sock
            replies = _parser()
            sock.settimeout(SUBSCRIBE_TIMEOUT)
            while True:
                reply = replies.gets()
                if reply is False:
                    data = sock.recv(_CHUNK)
                    if not data:
                        raise ConnectionError("the server closed the connection")
                    replies.feed(data)
                elif isinstance(reply, Exception):
                    raise reply
                elif isinstance(reply, list) and reply[:1] == [b"subscribe"]:
                    break
            sock.setblocking(False)
        except BaseException:
            _close(connection)
            raise
        with self._lock:
            self._connection, self._socket, self._replies = connection, sock, replies
            self._tls = isinstance(sock, ssl.SSLSocket)
            if self._stop.is_set():
                self._disconnect()
                return
            self._forget_all()  # messages may have been missed before this subscription
            self.subscribed.set()
            self._next_read = 0.0
