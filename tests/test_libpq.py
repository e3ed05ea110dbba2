"""The statement runner a PostgreSQL store's one-statement writes go through
(``penchant.profile_store._libpq``), against the real server: values reach PostgreSQL and come
back exactly, errors are psycopg's, prepared statements stay bounded and survive a session that
drops them, a lost connection is an ``OperationalError``, and a signal interrupts a statement
that waits and cancels it on the server; the async runner, the same steps on the event loop,
answers alike and cancels a statement whose wait is cancelled."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import math
import signal
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penchant.profile_store import _libpq
from tests.store_support import postgres_url

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

RUNNER = _libpq.PreparedStatements()  # one for the property test: its statements stay bounded


@pytest.fixture(scope="module")
def connection() -> Iterator[Any]:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        yield conn


def penchant_statements(connection: Any) -> set[str]:
    rows = connection.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'penchant%'").fetchall()
    return {name for (name,) in rows}


def same_float(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))


texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200)


@given(
    text=texts,
    number=st.integers(-(2**63), 2**63 - 1),
    real=st.floats(allow_nan=True, allow_infinity=True),
    blob=st.binary(max_size=2_000),
    flag=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_values_reach_postgresql_and_come_back_exactly(
    connection: Any, text: str, number: int, real: float, blob: bytes, flag: bool
) -> None:
    query = "SELECT ?::text, ?::int8, ?::float8, ?::bytea, ?::bool, ?::text"
    ((t, n, r, b, f, nothing),) = RUNNER.run(connection, query, (text, number, real, blob, flag, None))
    assert (t, n, b, f, nothing) == (text, number, blob, flag, None)
    assert same_float(r, real)
    # The server saw the values, not only their round trip: it compares them as their types.
    query = "SELECT ?::int8 = ? AND ?::bytea = ? AND length(?::text) = ?"
    ((equal,),) = RUNNER.run(connection, query, (number, number, blob, blob, text, len(text)))
    assert equal is True


EVERY_TYPE = """SELECT 7::int2, -70000::int4, 0.5::float4, 2.5::numeric, 'é'::varchar, true, false,
    '2026-01-02T03:04:05Z'::timestamptz, count(*), sum(3::int8), pg_sleep(0)"""


def assert_every_type_read(rows: list[tuple[Any, ...]]) -> None:
    ((*values, void),) = rows
    assert values == [
        7, -70000, 0.5, decimal.Decimal("2.5"), "é", True, False,
        datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC), 1, decimal.Decimal(3),
    ]  # fmt: skip
    assert [type(v) for v in values[:3]] == [int, int, float]
    assert void == b""


def test_answers_of_every_type_come_back_as_psycopg_reads_them(connection: Any) -> None:
    """Answers come in binary: the types penchant selects are read here, any other as psycopg
    reads it (and one psycopg cannot read in binary, void, as its bytes)."""
    assert_every_type_read(RUNNER.run(connection, EVERY_TYPE, ()))


def test_numbers_of_other_types_go_as_their_values(connection: Any) -> None:
    """NumPy's scalars and ``Decimal`` (which psycopg also sends) go as int8 and float8."""
    values = (np.int64(-7), np.float64(0.1), decimal.Decimal("2.5"), np.float32(0.5))
    ((a, b, c, d),) = RUNNER.run(connection, "SELECT ?::int8, ?::float8, ?::float8, ?::float8", values)
    assert (a, b, c, d) == (-7, 0.1, 2.5, 0.5)
    assert type(a) is int
    assert type(b) is float


def test_a_statement_is_prepared_once_per_connection_and_reused(connection: Any) -> None:
    statements = _libpq.PreparedStatements()
    before = penchant_statements(connection)
    for n in range(5):
        assert statements.run(connection, "SELECT ? + 1", (n,)) == [(n + 1,)]
    assert len(penchant_statements(connection) - before) == 1
    # The same text with parameters of other types is another statement.
    assert statements.run(connection, "SELECT ? + 1", (1.5,)) == [(2.5,)]
    assert len(penchant_statements(connection) - before) == 2


def test_prepared_statements_stay_bounded(connection: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_libpq, "MAX_PREPARED", 2)
    statements = _libpq.PreparedStatements()
    before = penchant_statements(connection)
    for n in range(4):
        assert statements.run(connection, f"SELECT ? * {n}", (3,)) == [(3 * n,)]
        assert len(penchant_statements(connection) - before) <= 2
    last = penchant_statements(connection) - before
    assert statements.run(connection, "SELECT ? * 0", (3,)) == [(0,)]  # closed, so prepared again
    again = penchant_statements(connection) - before
    assert len(again) == 2
    assert again - last  # under a new name


def test_a_session_that_dropped_its_statements_prepares_them_again(connection: Any) -> None:
    """psycopg sends ``DEALLOCATE ALL`` after a rollback on a connection where it prepared
    statements; a pooler may send ``DISCARD ALL``."""
    statements = _libpq.PreparedStatements()
    assert statements.run(connection, "SELECT ?::text || 'a'", ("x",)) == [("xa",)]
    for reset in ("DEALLOCATE ALL", "DISCARD ALL"):
        connection.execute(reset)
        assert statements.run(connection, "SELECT ?::text || 'a'", ("y",)) == [("ya",)]


def test_errors_are_psycopg_s_and_leave_the_connection_usable(connection: Any) -> None:
    statements = _libpq.PreparedStatements()
    connection.execute("CREATE TEMP TABLE IF NOT EXISTS libpq_unique (k text PRIMARY KEY)")
    statements.run(connection, "INSERT INTO libpq_unique VALUES (?) RETURNING k", ("a",))
    with pytest.raises(psycopg.errors.UniqueViolation) as unique:
        statements.run(connection, "INSERT INTO libpq_unique VALUES (?) RETURNING k", ("a",))
    assert isinstance(unique.value, psycopg.IntegrityError)
    assert unique.value.sqlstate == "23505"
    with pytest.raises(psycopg.errors.DivisionByZero):
        statements.run(connection, "SELECT 1 / ?", (0,))
    with pytest.raises(psycopg.errors.SyntaxError):
        statements.run(connection, "SELEC ?", (0,))
    assert statements.run(connection, "INSERT INTO libpq_unique VALUES (?)", ("b",)) == []  # no rows
    assert statements.run(connection, "SELECT ?::text", ("still here",)) == [("still here",)]


def test_a_lost_connection_is_an_operational_error(connection: Any) -> None:
    statements = _libpq.PreparedStatements()
    doomed = psycopg.connect(postgres_url(), autocommit=True)
    try:
        assert statements.run(doomed, "SELECT ?::int8", (1,)) == [(1,)]
        connection.execute("SELECT pg_terminate_backend(%s)", (doomed.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError):
            statements.run(doomed, "SELECT ?::int8", (2,))
    finally:
        doomed.close()


def test_parameters_that_cannot_be_sent_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot send a list"):
        _libpq.encode_parameters([[1, 2]])
    with pytest.raises(ValueError, match="NUL"):
        _libpq.encode_parameters(["a\x00b"])


def test_placeholders_are_numbered_in_order() -> None:
    assert _libpq._numbered("SELECT ?, ? FROM t WHERE a = ?") == b"SELECT $1, $2 FROM t WHERE a = $3"
    assert _libpq._numbered("SELECT 1") == b"SELECT 1"


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_a_signal_interrupts_a_statement_that_waits_and_cancels_it() -> None:
    """Ctrl-C (or a test's timeout) stops a write that waits on the server, and the server
    stops running it: the answer still to come is the cancellation's."""
    assert threading.current_thread() is threading.main_thread()

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    sleeper = psycopg.connect(postgres_url(), autocommit=True)
    statements = _libpq.PreparedStatements()
    previous = signal.signal(signal.SIGALRM, interrupt)
    remaining = 0.0
    try:
        assert len(statements.run(sleeper, "SELECT pg_sleep(?)", (0.0,))) == 1  # prepared already
        remaining, _ = signal.setitimer(signal.ITIMER_REAL, 0.2)  # pytest-timeout's, if it set one
        started = time.monotonic()
        with pytest.raises(Interrupted):
            statements.run(sleeper, "SELECT pg_sleep(?)", (30.0,))
        signal.setitimer(signal.ITIMER_REAL, 0)
        # Cancelled, and its answer read: the connection is idle and usable at once.
        assert time.monotonic() - started < _libpq.CANCEL_TIMEOUT
        assert sleeper.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert statements.run(sleeper, "SELECT ?::int8", (1,)) == [(1,)]
    finally:
        signal.signal(signal.SIGALRM, previous)
        signal.setitimer(signal.ITIMER_REAL, remaining)
        sleeper.close()


# -- the async API: the same steps, waited for on the event loop ------------------------------------


def run_async(test: Callable[[Any], Awaitable[None]]) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(postgres_url(), autocommit=True) as connection:
            await test(connection)

    asyncio.run(main())


@given(
    values=st.lists(
        st.one_of(texts, st.integers(-(2**63), 2**63 - 1), st.floats(), st.binary(max_size=100)), max_size=6
    )
)
@settings(max_examples=25, deadline=None)
def test_the_async_runner_sends_and_answers_as_the_sync_one(values: list[Any]) -> None:
    async def check(connection: Any) -> None:
        statements = _libpq.PreparedStatements()
        text = "SELECT " + ", ".join("?" for _ in values) if values else "SELECT 1"
        rows = await statements.arun(connection, text, values)
        expected = [tuple(values)] if values else [(1,)]
        assert len(rows) == 1
        for got, sent in zip(rows[0], expected[0], strict=True):
            assert same_float(got, sent) if isinstance(sent, float) else got == sent

    run_async(check)


def test_the_async_runner_reads_answers_of_every_type_as_the_sync_one() -> None:
    async def check(connection: Any) -> None:
        assert_every_type_read(await _libpq.PreparedStatements().arun(connection, EVERY_TYPE, ()))

    run_async(check)


def test_the_async_runner_prepares_once_reports_errors_and_survives_dropped_statements() -> None:
    async def check(connection: Any) -> None:
        statements = _libpq.PreparedStatements()
        for n in range(3):
            assert await statements.arun(connection, "SELECT ? + 1", (n,)) == [(n + 1,)]
        cursor = await connection.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'penchant%'")
        assert await cursor.fetchone() == (1,)
        with pytest.raises(psycopg.errors.DivisionByZero):
            await statements.arun(connection, "SELECT 1 / ?", (0,))
        await connection.execute("DEALLOCATE ALL")
        assert await statements.arun(connection, "SELECT ? + 1", (5,)) == [(6,)]  # prepared again
        calls: list[int] = []
        assert await statements.arun(connection, "SELECT ?::int8", (7,), lambda: calls.append(1)) == [(7,)]
        assert calls == [1]

    run_async(check)


def test_a_cancelled_async_statement_is_cancelled_on_the_server() -> None:
    """A timeout (or a cancelled task) stops a write that waits on the server, the server stops
    running it, and the connection is idle and usable at once."""

    async def check(connection: Any) -> None:
        statements = _libpq.PreparedStatements()
        assert len(await statements.arun(connection, "SELECT pg_sleep(?)", (0.0,))) == 1  # prepared already
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(statements.arun(connection, "SELECT pg_sleep(?)", (30.0,)), 0.2)
        assert time.monotonic() - started < _libpq.CANCEL_TIMEOUT
        assert connection.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert await statements.arun(connection, "SELECT ?::int8", (1,)) == [(1,)]

    run_async(check)
