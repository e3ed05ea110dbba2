"""One PostgreSQL statement run through libpq's own calls (``psycopg.pq``), not a cursor.

A write of one user's events is one statement of ~20 parameters (``_Database.write_one``), run
for every event an application records. psycopg's way there (converting the query, adapting
each parameter, a cursor, loading the rows) cost the writing thread ~120-135 µs of CPU for such
a statement, libpq's prepared execution ~50-75 µs: a loop of a 25-parameter ``UPDATE`` on
loopback took a median 170-225 µs against 260-295 µs. So :class:`PreparedStatements` prepares
each statement once per connection under a name of its own and sends the parameters as they
are: text, integers and floats in PostgreSQL's text form, bytes in binary. Answers come in
binary, so that bytes need no unescaping: the read of a profile and its 50 history rows before a
write (~10 KB) took a median 144-159 µs on loopback against 248-339 µs in text.

The steps of a run are one generator that says what it waits for (:data:`Wait`), for the sync
API (:meth:`PreparedStatements.run`: it waits in ``poll`` or ``select``, so a signal such as
Ctrl-C or a test's timeout still interrupts it) and the async one
(:meth:`PreparedStatements.arun`: it waits on the event loop, so a timeout or a cancelled task
interrupts it). Either way an interrupted statement is cancelled on the server and its answer
read, so that the connection can be used again, as psycopg does.

A statement is prepared on its first run (one round trip more; psycopg prepares from the sixth
and sends the first five unprepared). The one-statement write's text depends only on its number
of events and history rows, on whether it trims and on whether it makes the profile, so a store
sees a handful of texts (and one each for the read before a write and the check of a replay);
at most :data:`MAX_PREPARED` stay prepared per connection. Anything that drops a session's prepared
statements (psycopg's ``DEALLOCATE ALL`` after a rollback on a connection where it prepared
statements of its own, ``DISCARD ALL``) makes the next run prepare its statement again.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import functools
import itertools
import numbers
import select
import struct
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg
    from psycopg import pq

__all__ = ["MAX_PREPARED", "PreparedStatements", "encode_parameters"]

MAX_PREPARED = 64
"""Statements that :class:`PreparedStatements` keeps prepared on one connection; past that, the
least recently run is closed."""

_BOOL, _BYTEA, _INT8, _TEXT, _FLOAT8 = 16, 17, 20, 25, 701
_NAMES = itertools.count()  # unique in the process, whichever runner prepares on a connection
_INTEGERS = frozenset((20, 21, 23))  # int8, int2, int4
_TEXTS = frozenset((25, 1043, 19))  # text, varchar, name
_UNDEFINED_STATEMENT = "26000"  # invalid_sql_statement_name: the session lost what was prepared


def encode_parameters(
    params: Sequence[Any], encoding: str = "utf-8"
) -> tuple[list[bytes | None], tuple[int, ...], list[int]]:
    """``params`` as libpq takes them: the values, their types (OIDs) and their formats (0 text,
    1 binary); text in the connection's ``encoding``. ``repr`` of a float reads back as the same
    double; other integral and real numbers (NumPy's, ``Decimal``) go as int8 and float8."""
    values: list[bytes | None] = []
    types: list[int] = []
    formats: list[int] = []
    for value in params:
        kind = type(value)
        if kind is int:
            values.append(b"%d" % value)
            types.append(_INT8)
        elif kind is float:
            values.append(repr(value).encode())
            types.append(_FLOAT8)
        elif value is None:
            values.append(None)
            types.append(0)  # the statement's context decides
        elif isinstance(value, bytes):
            values.append(value)
            types.append(_BYTEA)
        elif isinstance(value, str):
            if "\x00" in value:  # libpq would cut text there
                raise ValueError("PostgreSQL text cannot contain NUL (0x00) characters")
            values.append(value.encode(encoding))
            types.append(_TEXT)
        elif isinstance(value, bool):
            values.append(b"t" if value else b"f")
            types.append(_BOOL)
        elif isinstance(value, numbers.Integral):
            values.append(b"%d" % int(value))
            types.append(_INT8)
        elif isinstance(value, numbers.Real | decimal.Decimal):
            values.append(float.__repr__(float(value)).encode())
            types.append(_FLOAT8)
        else:
            raise TypeError(f"cannot send a {type(value).__name__} to PostgreSQL as a parameter")
        formats.append(1 if types[-1] == _BYTEA else 0)
    return values, tuple(types), formats


_INT = functools.partial(int.from_bytes, byteorder="big", signed=True)
_FLOAT4, _FLOAT8_UNPACK = struct.Struct(">f").unpack, struct.Struct(">d").unpack


def _loader(oid: int, encoding: str, connection: Any) -> Callable[[bytes], Any]:
    """How a value of type ``oid`` in binary form is read: the types penchant selects here, and
    any other as psycopg reads it."""
    if oid == _BOOL:
        return lambda data: data == b"\x01"
    if oid in _INTEGERS:
        return _INT
    if oid == _FLOAT8:
        return lambda data: _FLOAT8_UNPACK(data)[0]
    if oid == 700:
        return lambda data: _FLOAT4(data)[0]
    if oid == _BYTEA:
        return bytes
    if oid in _TEXTS:
        return lambda data: data.decode(encoding)
    from psycopg import pq

    # A type psycopg cannot read in binary (void, say) comes as its bytes, as psycopg answers it.
    load = connection.adapters.get_loader(oid, pq.Format.BINARY) or connection.adapters.get_loader(0, pq.Format.BINARY)
    return load(oid, connection).load  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=256)
def _numbered(text: str) -> bytes:
    """``text`` with its ``?`` placeholders numbered as PostgreSQL's ``$1``, ``$2``..."""
    parts = text.split("?")
    return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, 1)).encode()


Wait = tuple[int, bool]
"""What a step of a statement waits for: the socket (a file descriptor) to be readable, or
writable too when the flag is set. The steps are generators of these, driven by
:func:`_drive_sync` (``poll``) or :func:`_drive_async` (the event loop): one implementation for
the sync and the async API."""

Steps = Generator[Wait, None, Any]


class _Socket:
    """Waits on a connection's socket."""

    __slots__ = ("fd", "poll")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.poll = select.poll() if hasattr(select, "poll") else None
        if self.poll is not None:
            self.poll.register(self.fd, select.POLLIN)

    def wait(self, writing: bool, timeout: float | None = None) -> bool:
        """Whether the socket got ready (within ``timeout`` seconds, if given)."""
        if self.poll is not None:
            self.poll.modify(self.fd, select.POLLIN | select.POLLOUT if writing else select.POLLIN)
            return bool(self.poll.poll(None if timeout is None else max(0, int(timeout * 1000))))
        readable, writable, _ = select.select([self.fd], [self.fd] if writing else [], [], timeout)
        return bool(readable or writable)


def _flush(pgconn: pq.abc.PGconn) -> Generator[Wait, None, None]:
    """Sends all that libpq holds (a nonblocking connection may keep part of a command)."""
    while pgconn.flush():
        yield pgconn.socket, True


def _answer(pgconn: pq.abc.PGconn) -> Generator[Wait, None, pq.abc.PGresult | None]:
    """The answer to the one command sent: its first error, else its last result."""
    yield from _flush(pgconn)
    answer = None
    while True:
        while pgconn.is_busy():
            yield pgconn.socket, False
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            return answer
        if answer is None or answer.error_message == b"":
            answer = result


CANCEL_TIMEOUT = 5.0
"""Seconds an interrupted statement's cancellation may take, and again the wait for its answer
(after which the connection, left busy, is closed by its pool)."""


def _interrupted(connection: Any, error: BaseException) -> bool:
    """Whether ``error`` left a statement running on the server that should be cancelled: not a
    failure of the connection (its server may be out of reach, and the failure is what the
    caller hears), and only while a command is in progress."""
    import psycopg
    from psycopg import pq

    return (
        not isinstance(error, psycopg.OperationalError)
        and connection.pgconn.transaction_status == pq.TransactionStatus.ACTIVE
    )


def _drive_sync(connection: psycopg.Connection[Any], steps: Steps, deadline: float | None = None) -> Any:
    """Runs ``steps``, waiting in ``poll`` (until ``deadline``, a ``time.monotonic()``, if
    given: then it stops and answers ``None``). If anything interrupts it while a statement runs
    (Ctrl-C, a test's timeout), the statement is cancelled on the server and its answer read,
    so that the connection can be used again, as psycopg does."""
    socket = None
    try:
        wait = next(steps)
        while True:
            if socket is None or socket.fd != wait[0]:
                socket = _Socket(wait[0])
            if deadline is None:
                socket.wait(wait[1])
            elif not socket.wait(wait[1], deadline - time.monotonic()):
                steps.close()
                return None
            wait = steps.send(None)
    except StopIteration as done:
        return done.value
    except BaseException as error:
        steps.close()
        if deadline is None and _interrupted(connection, error):
            with contextlib.suppress(Exception):
                connection.cancel_safe(timeout=CANCEL_TIMEOUT)
                _drive_sync(connection, _answer(connection.pgconn), time.monotonic() + CANCEL_TIMEOUT)
        raise


async def _drive_async(connection: psycopg.AsyncConnection[Any], steps: Steps, cancel: bool = True) -> Any:
    """Runs ``steps``, waiting on the event loop. If anything interrupts it while a statement
    runs (a timeout, a cancelled task), the statement is cancelled on the server and its answer
    read (for up to :data:`CANCEL_TIMEOUT` seconds), as :func:`_drive_sync` does."""
    loop = asyncio.get_running_loop()
    try:
        wait = next(steps)
        while True:
            await _ready(loop, *wait)
            wait = steps.send(None)
    except StopIteration as done:
        return done.value
    except GeneratorExit:  # this coroutine is being closed: it may not wait any more
        steps.close()
        raise
    except BaseException as error:
        steps.close()
        if cancel and _interrupted(connection, error):
            with contextlib.suppress(Exception):
                await connection.cancel_safe(timeout=CANCEL_TIMEOUT)
                await asyncio.wait_for(_drive_async(connection, _answer(connection.pgconn), False), CANCEL_TIMEOUT)
        raise


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, writing: bool) -> None:
    """Until ``fd`` is readable (or writable too, with ``writing``)."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, wake)
        if writing:
            loop.add_writer(fd, wake)
        await ready
    finally:
        loop.remove_reader(fd)
        if writing:
            loop.remove_writer(fd)


def _checked(result: pq.abc.PGresult | None, encoding: str) -> pq.abc.PGresult:
    """``result`` unless it failed; else the error psycopg raises for it."""
    import psycopg
    from psycopg import pq

    if result is None:
        raise psycopg.OperationalError("PostgreSQL sent no answer")
    if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        return result
    if result.error_field(pq.DiagnosticField.SQLSTATE) is None:
        raise psycopg.OperationalError(result.error_message.decode(encoding, "replace").strip() or "no answer")
    raise psycopg.errors.error_from_result(result, encoding=encoding)


def _sqlstate(error: BaseException) -> str | None:
    return getattr(error, "sqlstate", None)


class PreparedStatements:
    """Runs statements through libpq, each prepared once per connection (of any pool), from the
    sync API (:meth:`run`) or the async one (:meth:`arun`)."""

    def __init__(self) -> None:
        self._prepared: weakref.WeakKeyDictionary[Any, OrderedDict[Any, bytes]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def run(
        self,
        connection: psycopg.Connection[Any],
        text: str,
        params: Sequence[Any],
        meanwhile: Callable[[], None] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Runs ``text`` (with ``?`` placeholders) on ``connection``, in autocommit, which no
        other thread uses meanwhile, and answers its rows; an error raises what psycopg raises
        for it. ``meanwhile`` is called once the statement is sent, while the server runs it
        (the answer is read after it, even if it raises)."""
        rows: list[tuple[Any, ...]] = _drive_sync(connection, self._steps(connection, text, params, meanwhile))
        return rows

    async def arun(
        self,
        connection: psycopg.AsyncConnection[Any],
        text: str,
        params: Sequence[Any],
        meanwhile: Callable[[], None] | None = None,
    ) -> list[tuple[Any, ...]]:
        """:meth:`run` on an async connection, which no other task uses meanwhile."""
        rows: list[tuple[Any, ...]] = await _drive_async(connection, self._steps(connection, text, params, meanwhile))
        return rows

    def _steps(
        self, connection: Any, text: str, params: Sequence[Any], meanwhile: Callable[[], None] | None
    ) -> Generator[Wait, None, list[tuple[Any, ...]]]:
        encoding = connection.info.encoding
        values, types, formats = encode_parameters(params, encoding)
        key = (text, types)
        with self._lock:
            prepared = self._prepared.get(connection)
            if prepared is None:
                prepared = self._prepared[connection] = OrderedDict()
        pgconn = connection.pgconn
        name = yield from self._prepare(pgconn, prepared, key, encoding)
        pgconn.send_query_prepared(name, values, param_formats=formats, result_format=1)
        try:
            yield from _flush(pgconn)
            if meanwhile is not None:
                meanwhile()
        except GeneratorExit:  # the driver gave up waiting (and cancels the statement)
            raise
        except BaseException:
            yield from _answer(pgconn)  # the statement runs on: its answer is read, then this goes on
            raise
        result = yield from _answer(pgconn)
        try:
            _checked(result, encoding)
        except Exception as error:
            if _sqlstate(error) != _UNDEFINED_STATEMENT:
                raise
            prepared.clear()  # the session lost them all: prepare again, and run it (it did not run)
            name = yield from self._prepare(pgconn, prepared, key, encoding)
            pgconn.send_query_prepared(name, values, param_formats=formats, result_format=1)
            result = _checked((yield from _answer(pgconn)), encoding)
        assert result is not None
        loaders = [_loader(result.ftype(n), encoding, connection) for n in range(result.nfields)]
        return [
            tuple(None if (data := result.get_value(row, n)) is None else load(data) for n, load in enumerate(loaders))
            for row in range(result.ntuples)
        ]

    @staticmethod
    def _prepare(
        pgconn: pq.abc.PGconn, prepared: OrderedDict[Any, bytes], key: tuple[str, tuple[int, ...]], encoding: str
    ) -> Generator[Wait, None, bytes]:
        """The name under which ``key``'s statement is prepared on the connection (prepared now
        if it is not, the least recently run closed if too many are)."""
        from psycopg import pq

        name = prepared.get(key)
        if name is not None:
            prepared.move_to_end(key)
            return name
        if len(prepared) >= MAX_PREPARED:
            _, oldest = prepared.popitem(last=False)
            if pq.version() >= 170000:
                pgconn.send_close_prepared(oldest)
            else:
                pgconn.send_query(b"DEALLOCATE " + oldest)
            _checked((yield from _answer(pgconn)), encoding)
        name = b"penchant_%d" % next(_NAMES)
        pgconn.send_prepare(name, _numbered(key[0]), param_types=key[1])
        _checked((yield from _answer(pgconn)), encoding)
        prepared[key] = name
        return name
