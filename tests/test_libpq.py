"""The statement runner a PostgreSQL store's one-statement writes go through
(``penchant.profile_store._libpq``), against the real server: values reach PostgreSQL and come
back exactly, errors are psycopg's, prepared statements stay bounded, and a signal interrupts
a statement that waits."""

from __future__ import annotations

import math
import signal
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penchant.profile_store import _libpq
from tests.store_support import postgres_url

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def connection() -> Iterator[Any]:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        yield conn


def penchant_statements(connection: Any) -> list[str]:
    rows = connection.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'penchant%'").fetchall()
    return sorted(name for (name,) in rows)


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
    statements = _libpq.PreparedStatements()
    query = "SELECT ?::text, ?::int8, ?::float8, ?::bytea, ?::bool, ?::text"
    ((t, n, r, b, f, nothing),) = statements.run(connection, query, (text, number, real, blob, flag, None))
    assert (t, n, b, f, nothing) == (text, number, blob, flag, None)
    assert same_float(r, real)
    # The server saw the values, not only their round trip: it compares them as their types.
    query = "SELECT ?::int8 = ? AND ?::bytea = ? AND length(?::text) = ?"
    ((equal,),) = statements.run(connection, query, (number, number, blob, blob, text, len(text)))
    assert equal is True


def test_a_statement_is_prepared_once_per_connection_and_reused(connection: Any) -> None:
    statements = _libpq.PreparedStatements()
    before = penchant_statements(connection)
    for n in range(5):
        assert statements.run(connection, "SELECT ? + 1", (n,)) == [(n + 1,)]
    added = sorted(set(penchant_statements(connection)) - set(before))
    assert len(added) == 1
    # The same text with parameters of other types is another statement.
    assert statements.run(connection, "SELECT ? + 1", (1.5,)) == [(2.5,)]
    assert len(set(penchant_statements(connection)) - set(before)) == 2


def test_prepared_statements_stay_bounded(connection: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_libpq, "MAX_PREPARED", 2)
    statements = _libpq.PreparedStatements()
    before = set(penchant_statements(connection))
    for n in range(4):
        assert statements.run(connection, f"SELECT ? * {n}", (3,)) == [(3 * n,)]
        assert len(set(penchant_statements(connection)) - before) <= 2
    assert statements.run(connection, "SELECT ? * 0", (3,)) == [(0,)]  # deallocated, prepared again


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
    assert statements.run(connection, "SELECT ?::text", ("still here",)) == [("still here",)]


def test_parameters_of_other_types_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot send a list"):
        _libpq.encode_parameters([[1, 2]])


def test_placeholders_are_numbered_in_order() -> None:
    assert _libpq._numbered("SELECT ?, ? FROM t WHERE a = ?") == b"SELECT $1, $2 FROM t WHERE a = $3"
    assert _libpq._numbered("SELECT 1") == b"SELECT 1"


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_a_signal_interrupts_a_statement_that_waits(connection: Any) -> None:
    """Ctrl-C (or a test's timeout) stops a write that waits on the server: the signal's
    exception is raised while the statement still runs there."""
    assert threading.current_thread() is threading.main_thread()

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    sleeper = psycopg.connect(postgres_url(), autocommit=True)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            _libpq.PreparedStatements().run(sleeper, "SELECT pg_sleep(?)", (30.0,))
        signal.setitimer(signal.ITIMER_REAL, 0)
        ((state,),) = connection.execute(
            "SELECT state FROM pg_stat_activity WHERE pid = %s", (sleeper.info.backend_pid,)
        ).fetchall()
        assert state == "active"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sleeper.cancel_safe()
        sleeper.close()
