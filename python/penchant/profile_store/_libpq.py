"""One PostgreSQL statement run through libpq's own calls (``psycopg.pq``), not a cursor.

A write of one user's events is one statement of ~20 parameters (``_Database.write_one``), run
for every event an application records. psycopg's way there (converting the query, adapting
each parameter, a cursor, loading the rows) cost the writing thread ~120-135 µs of CPU for such
a statement, libpq's prepared execution ~50-75 µs: a loop of a 25-parameter ``UPDATE`` on
loopback took a median 170-225 µs against 260-295 µs. So :class:`PreparedStatements` prepares
each statement once per connection under a name of its own and sends the parameters as they
are: text, integers and floats in PostgreSQL's text form, bytes in binary. It waits for the
answer in ``poll`` (or ``select``), so a signal (Ctrl-C, a test's timeout) still interrupts it.
"""

from __future__ import annotations

import functools
import itertools
import select
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg
    from psycopg import pq

__all__ = ["MAX_PREPARED", "PreparedStatements", "encode_parameters"]

MAX_PREPARED = 64
"""Statements that :class:`PreparedStatements` keeps prepared on one connection; past that, the
least recently run is deallocated."""

_BOOL, _BYTEA, _INT8, _TEXT, _FLOAT8 = 16, 17, 20, 25, 701
_NAMES = itertools.count()  # unique in the process, whichever runner prepares on a connection
_INTEGERS = frozenset((20, 21, 23))  # int8, int2, int4
_FLOATS = frozenset((700, 701))
_TEXTS = frozenset((19, 25, 1043))  # name, text, varchar


def encode_parameters(params: Sequence[Any]) -> tuple[list[bytes | None], tuple[int, ...], list[int]]:
    """``params`` as libpq takes them: the values, their types (OIDs) and their formats (0 text,
    1 binary). ``repr`` of a float reads back as the same double."""
    values: list[bytes | None] = []
    types: list[int] = []
    formats: list[int] = []
    for value in params:
        if value is None:
            values.append(None)
            types.append(0)  # the statement's context decides
        elif isinstance(value, bytes):
            values.append(value)
            types.append(_BYTEA)
        elif isinstance(value, str):
            values.append(value.encode())
            types.append(_TEXT)
        elif isinstance(value, bool):
            values.append(b"t" if value else b"f")
            types.append(_BOOL)
        elif isinstance(value, int):
            values.append(b"%d" % value)
            types.append(_INT8)
        elif isinstance(value, float):
            values.append(repr(value).encode())
            types.append(_FLOAT8)
        else:
            raise TypeError(f"cannot send a {type(value).__name__} to PostgreSQL as a parameter")
        formats.append(1 if types[-1] == _BYTEA else 0)
    return values, tuple(types), formats


def _load(oid: int, data: bytes | None) -> Any:
    """A value of a row in text form."""
    if data is None:
        return None
    if oid == _BOOL:
        return data == b"t"
    if oid in _INTEGERS:
        return int(data)
    if oid in _FLOATS:
        return float(data)
    if oid in _TEXTS:
        return data.decode()
    if oid == _BYTEA:
        return bytes.fromhex(data[2:].decode())  # \x followed by hex digits
    raise TypeError(f"cannot read a value of PostgreSQL type {oid}")


@functools.lru_cache(maxsize=256)
def _numbered(text: str) -> bytes:
    """``text`` with its ``?`` placeholders numbered as PostgreSQL's ``$1``, ``$2``..."""
    parts = text.split("?")
    return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, 1)).encode()


def _wait(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    """Sends what libpq holds and reads the answer to the one command sent: its first error, else
    its last result."""
    fd = pgconn.socket
    poll = select.poll() if hasattr(select, "poll") else None
    if poll is not None:
        poll.register(fd, select.POLLIN | select.POLLOUT)
    while pgconn.flush():
        if poll is not None:
            poll.poll()
        else:
            select.select([fd], [fd], [])
    if poll is not None:
        poll.modify(fd, select.POLLIN)
    answer = None
    while True:
        while pgconn.is_busy():
            if poll is not None:
                poll.poll()
            else:
                select.select([fd], [], [])
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            return answer
        if answer is None or answer.error_message == b"":
            answer = result


def _raise_for(result: pq.abc.PGresult | None, expected: int) -> pq.abc.PGresult:
    """``result`` if it has the ``expected`` status, else the error psycopg would raise."""
    import psycopg
    from psycopg import pq

    if result is not None and result.status == expected:
        return result
    if result is None:
        raise psycopg.OperationalError("PostgreSQL sent no answer")
    message = result.error_message.decode("utf-8", "replace").strip() or f"unexpected answer {result.status}"
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    try:
        error = psycopg.errors.lookup(sqlstate.decode()) if sqlstate else psycopg.OperationalError
    except KeyError:
        error = psycopg.DatabaseError
    raise error(message, info=result)


class PreparedStatements:
    """Runs statements through libpq, each prepared once per connection (of any pool)."""

    def __init__(self) -> None:
        self._prepared: weakref.WeakKeyDictionary[psycopg.Connection[Any], OrderedDict[Any, bytes]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def run(
        self,
        connection: psycopg.Connection[Any],
        text: str,
        params: Sequence[Any],
        meanwhile: Callable[[], None] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Runs ``text`` (with ``?`` placeholders) on ``connection``, which no other thread uses
        meanwhile, and answers its rows; an error raises what psycopg would raise for it.
        ``meanwhile`` is called once the statement is sent, while the server runs it (the
        answer is read after it, even if it raises)."""
        from psycopg import pq

        values, types, formats = encode_parameters(params)
        key = (text, types)
        with self._lock:
            prepared = self._prepared.get(connection)
            if prepared is None:
                prepared = self._prepared[connection] = OrderedDict()
            name = prepared.get(key)
            if name is None:
                name = b"penchant_%d" % next(_NAMES)
        pgconn = connection.pgconn
        if key in prepared:
            prepared.move_to_end(key)
        else:
            if len(prepared) >= MAX_PREPARED:
                _, oldest = prepared.popitem(last=False)
                pgconn.send_query(b"DEALLOCATE " + oldest)
                _raise_for(_wait(pgconn), pq.ExecStatus.COMMAND_OK)
            pgconn.send_prepare(name, _numbered(text), param_types=types)
            _raise_for(_wait(pgconn), pq.ExecStatus.COMMAND_OK)
            prepared[key] = name
        pgconn.send_query_prepared(name, values, param_formats=formats)
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            answer = _wait(pgconn)
        result = _raise_for(answer, pq.ExecStatus.TUPLES_OK)
        columns = [result.ftype(n) for n in range(result.nfields)]
        return [
            tuple(_load(oid, result.get_value(row, n)) for n, oid in enumerate(columns))
            for row in range(result.ntuples)
        ]
