"""Durable profile stores on SQL: SQLite (the embedded default, one file in WAL mode) and
PostgreSQL (psycopg 3 with a connection pool).

Two tables hold everything about a user:

* ``penchant_events``: the append-only feedback event log, unique per ``(tenant, event_id)``
  so a repeated event is ignored. It is the source of truth that ``rebuild`` replays.
* ``penchant_profiles``: one snapshot per ``(tenant, user_id)`` with its version, written in
  the same transaction as the events that changed it, without the interaction history;
* ``penchant_history``: the history, one row per entry, numbered by ``ord`` in the history's
  order; the snapshot's ``history_from`` is the ``ord`` of its first entry. An event that
  extends the history inserts its entry, so a write costs the same whatever the history's
  length (rewriting a snapshot that held 500 entries, ~90 KB, took most of an event's time).
  The rows that fell out of the window are deleted once :data:`TRIM_AFTER` of them gathered.

A write locks its users, logs the events (learning which are new), reads the snapshots, applies
the new events and writes the snapshots and history rows, in one transaction. On PostgreSQL, the
events of one user are written by one statement that does all of that at once, guarded by the
version and body of the profile the store wrote last, or read just before in one statement of
its own, or inserting a new user's profile (``_Database.write_one``: one user, up to 200
events, a history only appended to); if another writer changed the row since, or an event is
logged already, it writes nothing, and the transaction follows (unless the profile exists and
every event was logged already: then nothing changes). The sync and the async API send these statements through
libpq's own calls, prepared once per connection (``_libpq``).

penchant creates and migrates its own schema (``penchant_schema`` holds the version) on first
use. Every value reaches the database as a query parameter, never inside the SQL text.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import operator
import os
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

from penchant.errors import ConflictError, StoreUnavailableError, ValidationError
from penchant.feedback_collector import Signal
from penchant.profile_store._base import DEFAULT_TENANT, ProfileStore
from penchant.profile_store._effects import Effect, Op
from penchant.profile_store._libpq import PreparedStatements
from penchant.profile_store._loops import PerLoop
from penchant.profile_store.serializer import ProfileSerializer
from penchant.user_profile import SCHEMA_VERSION, Interaction, InterestModel, UserProfile

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

logger = logging.getLogger("penchant.profile_store")

__all__ = ["AppliedChange", "PostgresProfileStore", "SQLProfileStore", "SQLiteProfileStore"]

T = TypeVar("T")

Rows: TypeAlias = list[tuple[Any, ...]]
Events: TypeAlias = Sequence[tuple[str, str, float, bytes]]
"""Events to log, each as ``(event_id, user_id, occurred_at, payload)``."""


@dataclass(frozen=True, slots=True)
class Sql:
    """One statement of a transaction body, with ``?`` placeholders and its parameters."""

    text: str
    params: Sequence[Any] = ()

    @property
    def returns_rows(self) -> bool:
        """Whether the statement answers rows (a ``SELECT``, or a change ``RETURNING`` some)."""
        text = self.text.lstrip().upper()
        return text.startswith(("SELECT", "WITH")) or "RETURNING" in text


@dataclass(frozen=True, slots=True)
class Sent:
    """Statements that a transaction body sends without waiting for their rows: it receives an
    :class:`Answer`, does other work, then yields the answer and receives the list of their
    rows. PostgreSQL's pipeline works on them meanwhile; SQLite and the async API run them when
    sent (an error is then thrown into the body there)."""

    statements: list[Sql]


@dataclass(frozen=True, slots=True)
class Answer:
    """What a body receives for :class:`Sent` statements: yielded, it becomes their rows."""

    fetch: Callable[[], list[Rows]]
    pending: bool = False
    """Whether the database may still be working on them (PostgreSQL's pipeline): work done
    before yielding the answer then overlaps theirs. Otherwise they have run already."""


TransactionBody: TypeAlias = Generator[Sql | list[Sql] | Sent | Answer, Any, T]
"""Logic run inside one transaction: yields a statement and receives its rows, or yields a
list of statements and receives a list of their rows (or :class:`Sent` statements, to read
their rows later). A statement that answers no rows (see :attr:`Sql.returns_rows`) receives an
empty list, and PostgreSQL may send it without waiting for it (see
``_PostgresDatabase.run_sync``): an error in it fails the transaction later, at the next
statement waited for or at the commit."""


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """What one user's ``apply_feedback`` did in the durable tier: the tiered store uses it to
    bring Redis along with the fewest commands."""

    old_version: int
    old_landmark: float
    profile: UserProfile
    body: bytes
    """The profile encoded without its history (``ProfileSerializer.encode_apart``)."""
    history: bytes
    """Its history encoded (``ProfileSerializer.pack_history``)."""
    fresh: list[Signal]
    entries: dict[str, tuple[Interaction, bytes]] = field(default_factory=dict)
    """The history entries this change added, by event id, each with its encoding."""
    fields: dict[str, str] | None = None
    """``ProfileSerializer.follow_fields`` of the change, when the caller asked for them (read
    from the profile the store keeps, which ``profile``, a copy, decodes only when read)."""


@dataclass(frozen=True, slots=True)
class _History:
    """A user's history rows as read: the ``ord`` of the first, how many, and their bodies
    joined in order."""

    base: int
    count: int
    joined: bytes
    regular: bool = True
    """Whether the rows are numbered one after another from ``base`` (else the next write
    writes them anew)."""


Stored: TypeAlias = tuple[UserProfile, bytes, bytes]
"""A profile as an SQL store wrote it: the profile, its body without the history and its history
(``ProfileSerializer.encode_apart`` and ``pack_history``)."""

_ALL_ROWS = 1 << 62
"""A cut below which every history row lies."""

TRIM_AFTER = 256
"""History rows that fell out of a user's window stay (unread: a snapshot's ``history_from``
says where its history begins) until this many gathered; then the write that makes them so
many deletes them all (as does a write that empties the history, and the first write of a
store that did not write the user last: it cannot tell how many wait). Most of a deletion's
cost does not depend on its number of rows: on PostgreSQL, the one statement of a write of one
event took 0.3-0.45 ms more when it also deleted one row, 0.6-0.75 ms more when it deleted 64
(measured when psycopg ran the statement, which it prepared from its sixth run on). At 64, one
write in 64 of a full history paid it, and those writes were often most of the slowest 1 % (7
or 8 of the 12 slowest of 1,000 in 5 of 9 runs of the store benchmark); at 256, one in 256
does, for up to 256 waiting rows per user (~60 KB in the benchmarks, where a row takes ~240
bytes)."""


@dataclass(frozen=True, slots=True)
class _Written:
    """A profile on its way into the database: the size of its whole encoding, the snapshot
    body without the history, the history rows to delete (those numbered below ``cut``;
    ``None``: none) and to add, the ``ord`` of its first row after, the entries added (by event
    id, with their encodings) and the encoding of every entry of the history, in order."""

    profile: UserProfile
    size: int
    body: bytes
    cut: int | None
    rows: list[tuple[str, int, bytes]]
    base: int
    floor: int
    """No history row of the user is numbered below it after this write."""
    entries: dict[str, tuple[Interaction, bytes]]
    history: list[bytes]
    packed: bytes
    """``history`` as one encoded array (``ProfileSerializer.pack_history``)."""


@dataclass(slots=True)
class _Kept:
    """A profile this store wrote (or read for a write: ``SQLProfileStore._read_one_op``),
    decoded but for its history (kept encoded: the next write that only appends decodes its
    newest entry alone, and a preference refresh reads it encoded), with the body it wrote,
    its first row's ``ord``, the size of its whole encoding and the encoding of each of its
    history entries, in order (so that the next write encodes only the entries it adds)."""

    body: bytes
    profile: UserProfile
    base: int
    floor: int
    """No history row of the user is numbered below it (rows from it to ``base`` fell out of
    the window and wait to be trimmed)."""
    size: int
    history: list[bytes]


@dataclass(frozen=True, slots=True)
class _Ahead:
    """Events applied to a profile this store wrote (:meth:`SQLProfileStore._apply_ahead`) before
    the transaction read its row: its version and landmark before, what the store held, and what
    the change writes. It stands if the events were all new and the row still holds that body."""

    version: int
    landmark: float
    before: _Kept
    """What the store held (its profile is the one changed: the rest is as written)."""
    change: _Written

    def applies_to(self, row: tuple[Any, Any] | None) -> bool:
        """Whether the snapshot row ``(version, body)`` read under the lock is the one changed."""
        return row is not None and int(row[0]) == self.version and row[1] == self.before.body

    def kept(self, serializer: ProfileSerializer) -> _Kept:
        """The profile before the change, made again from what the store wrote."""
        before = self.before
        profile = serializer.decode_with_history(before.body, serializer.pack_history(before.history))
        return _Kept(before.body, profile, before.base, before.floor, before.size, before.history)


WRITTEN_BYTES = 8 << 20
"""An SQL store keeps the profiles it wrote last, so that the next event of the same user need
not read and decode its snapshot, up to this many bytes of their encodings (the least recently
written go first). A history stays encoded while writes only append to it (see
``SQLProfileStore._apply_to``); once a write decoded it (a preference refresh reads it all), the
profile is held decoded, about five times its encoding (~0.5 MB for 500 history entries), so
that the next refresh need not decode it again."""

_CHUNK = 200
"""Rows per multi-row statement (well under SQLite's limit of 32,766 parameters)."""


def _trim(base: int, floor: int, empty: bool) -> tuple[int | None, int]:
    """The cut (``None``: none) and the floor of a user's history rows after a write that
    leaves its history numbered from ``base`` (``empty``: no row of it left), the rows numbered
    from ``floor`` before it. An empty history leaves no row behind: a reader that finds none
    numbers the next rows from 0."""
    if base - floor >= TRIM_AFTER or (empty and base > floor):
        return base, base
    return None, floor


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _answered_now(execute: Callable[[Sql | list[Sql]], Rows | list[Rows]], statements: list[Sql]) -> Answer:
    """An :class:`Answer` to ``statements`` run at once."""
    rows = cast(list[Rows], execute(statements))  # a list of statements: a list of rows
    return Answer(lambda: rows)


def _drive(
    body: TransactionBody[T],
    execute: Callable[[Sql | list[Sql]], Rows | list[Rows]],
    send: Callable[[list[Sql]], Answer] | None = None,
) -> T:
    """Runs ``body`` with ``execute`` (and ``send`` for :class:`Sent` statements: by default
    they are executed when sent)."""
    try:
        statement = next(body)
        while True:
            try:
                if isinstance(statement, Answer):
                    rows: Any = statement.fetch()
                elif isinstance(statement, Sent):
                    rows = send(statement.statements) if send else _answered_now(execute, statement.statements)
                else:
                    rows = execute(statement)
            except Exception as exc:  # thrown into the body, which decides
                statement = body.throw(exc)
            else:
                statement = body.send(rows)
    except StopIteration as stop:
        value: T = stop.value
        return value


class _Transaction(Effect[T]):
    __slots__ = ("body", "database", "write")

    def __init__(self, database: _Database, body: TransactionBody[T], write: bool) -> None:
        self.database = database
        self.body = body
        self.write = write

    def run_sync(self) -> T:
        return self.database.run_sync(self.body, self.write)

    async def run_async(self) -> T:
        return await self.database.run_async(self.body, self.write)


class _Statement(Effect["Rows | None"]):
    __slots__ = ("database", "meanwhile", "statement")

    def __init__(self, database: _Database, statement: Sql, meanwhile: Callable[[], None] | None) -> None:
        self.database = database
        self.statement = statement
        self.meanwhile = meanwhile

    def run_sync(self) -> Rows | None:
        return self.database.run_statement_sync(self.statement, self.meanwhile)

    async def run_async(self) -> Rows | None:
        return await self.database.run_statement_async(self.statement, self.meanwhile)


class _Close(Effect[None]):
    __slots__ = ("database",)

    def __init__(self, database: _Database) -> None:
        self.database = database

    def run_sync(self) -> None:
        self.database.close_sync()

    async def run_async(self) -> None:
        await self.database.close_async()


class _Database(ABC):
    """Connections to one database, and the few statements whose text differs by dialect."""

    name: str
    blob: str
    float_type: str
    event_key: str
    clustered = ""
    """What makes a table keep its rows in primary-key order, where the database can."""
    snapshot_storage: tuple[str, ...] = ()
    """Statements that set how the database stores snapshot rows."""
    writes_one_user_at_once = False
    """Whether :meth:`write_one` can write a user's change in one statement."""

    def transaction(self, body: TransactionBody[T], *, write: bool) -> Effect[T]:
        return _Transaction(self, body, write)

    def write_one(
        self, tenant: str, key: str, before: tuple[int, bytes], change: _Written, recorded_at: float, events: Events
    ) -> Sql | None:
        """One statement that writes ``change`` of one user whose row holds the version and body
        ``before`` (an empty body: who has no row yet, and gets one), with the events that made
        it (all of them new), atomically: it answers one row, whose value says whether it wrote
        (else it wrote nothing; an event logged already fails it). ``None`` where the database
        cannot (a write is then a transaction of several statements)."""
        return None

    def read_one(self, tenant: str, user_id: str) -> Sql | None:
        """A statement that answers the user's row and history in one row, ``(version, body,
        first ord, count, last ord, bodies joined in ord order, lowest ord of all its rows)``
        (no row: no profile), for a write in one statement (:meth:`write_one`); ``None`` where
        the database has none."""
        return None

    def logged_already(
        self, tenant: str, user_id: str, before: tuple[int, bytes], event_ids: Sequence[str]
    ) -> Sql | None:
        """A statement that answers one row ``(logged, held)``: how many of ``event_ids`` the log
        holds, and whether the user's row holds the version and body ``before``, both as of the
        statement's start (a writer that commits later comes after the answer). ``None`` where
        the database does not write in one statement (:meth:`write_one`)."""
        return None

    def statement(self, statement: Sql, meanwhile: Callable[[], None] | None = None) -> Effect[Rows | None]:
        """Runs ``statement`` alone, in a transaction of its own: its rows, or ``None`` if it broke
        a constraint (and changed nothing). ``meanwhile``, if the database works on the statement
        while this process goes on, is called then (once, or not at all)."""
        return _Statement(self, statement, meanwhile)

    def run_statement_sync(self, statement: Sql, meanwhile: Callable[[], None] | None = None) -> Rows | None:
        raise NotImplementedError(f"{self.name} writes in transactions of several statements")

    async def run_statement_async(self, statement: Sql, meanwhile: Callable[[], None] | None = None) -> Rows | None:
        raise NotImplementedError(f"{self.name} writes in transactions of several statements")

    @abstractmethod
    def run_sync(self, body: TransactionBody[T], write: bool) -> T: ...

    @abstractmethod
    async def run_async(self, body: TransactionBody[T], write: bool) -> T: ...

    @abstractmethod
    def close_sync(self) -> None: ...

    @abstractmethod
    async def close_async(self) -> None: ...

    @abstractmethod
    def lock_user(self, key: str) -> Sql | None:
        """A statement that serialises writers of one user until the transaction ends (``None``
        where the write transaction locks the whole database already)."""

    @abstractmethod
    def lock_users(self, keys: Sequence[str]) -> Sql | None:
        """:meth:`lock_user` for many users at once, in an order every writer shares."""

    @abstractmethod
    def lock_schema(self) -> Sql | None: ...

    def select_profiles(self, tenant: str, user_ids: Sequence[str]) -> list[Sql]:
        """Statements that read the snapshots of ``user_ids`` as (user_id, version, body)."""
        statements = []
        for chunk in _chunks(user_ids):
            marks = ", ".join("?" * len(chunk))
            statements.append(
                Sql(
                    f"SELECT user_id, version, body FROM penchant_profiles WHERE tenant = ? AND user_id IN ({marks})",
                    (tenant, *chunk),
                )
            )
        return statements

    def select_history(self, tenant: str, user_ids: Sequence[str]) -> list[Sql]:
        """Statements that read the history of ``user_ids``, a row per user with history rows:
        ``(user_id, first ord, count, last ord, bodies joined in ord order, ords joined by
        commas or None)``. The database joins the bodies (hundreds of rows a user); where it
        cannot promise their order, the ords come along so that the reader can check it."""
        statements = []
        for chunk in _chunks(user_ids):
            marks = ", ".join("?" * len(chunk))
            statements.append(
                Sql(
                    "SELECT h.user_id, min(h.ord), count(*), max(h.ord), CAST(group_concat(h.body, '') AS BLOB), "
                    f"group_concat(h.ord) FROM {_LIVE_HISTORY} AND h.user_id IN ({marks}) AND p.user_id IN ({marks}) "
                    "GROUP BY h.user_id",
                    (tenant, *chunk, *chunk),
                )
            )
        return statements

    def select_history_rows(self, tenant: str, user_id: str) -> Sql:
        """The statement that reads one user's history rows as (ord, body), in order."""
        return Sql(f"SELECT h.ord, h.body FROM {_LIVE_HISTORY} AND h.user_id = ? ORDER BY h.ord", (tenant, user_id))

    def insert_history(self, tenant: str, rows: Sequence[tuple[str, int, bytes]]) -> list[Sql]:
        """Statements that add ``(user_id, ord, body)`` history rows."""
        return [
            Sql(
                "INSERT INTO penchant_history (tenant, user_id, ord, body) VALUES "
                + ", ".join(["(?, ?, ?, ?)"] * len(chunk)),
                [v for u, o, b in chunk for v in (tenant, u, o, b)],
            )
            for chunk in _chunks(rows)
        ]

    def trim_history(self, tenant: str, cuts: Sequence[tuple[str, int]]) -> list[Sql]:
        """Statements that delete each ``(user_id, ord)``'s history rows numbered below ``ord``."""
        return [
            Sql("DELETE FROM penchant_history WHERE tenant = ? AND user_id = ? AND ord < ?", (tenant, user_id, ord_))
            for user_id, ord_ in cuts
        ]

    def insert_events(self, tenant: str, recorded_at: float, events: Events) -> list[Sql]:
        """Statements that log ``(event_id, user_id, occurred_at, payload)`` rows unless their
        event id is logged already, returning the event ids they logged."""
        return [
            Sql(
                "INSERT INTO penchant_events (tenant, event_id, user_id, occurred_at, recorded_at, payload) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
                + " ON CONFLICT (tenant, event_id) DO NOTHING RETURNING event_id",
                [v for e, u, o, p in chunk for v in (tenant, e, u, o, recorded_at, p)],
            )
            for chunk in _chunks(events)
        ]

    def upsert_profiles(self, tenant: str, rows: Sequence[tuple[str, int, float, bytes, int]]) -> list[Sql]:
        """Statements that write ``(user_id, version, updated_at, body, history_from)`` snapshots."""
        return [
            Sql(
                f"INSERT INTO penchant_profiles ({_SNAPSHOT_COLUMNS}) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                + f" ON CONFLICT (tenant, user_id) DO UPDATE SET {_UPDATE_SNAPSHOT}",
                [v for u, version, t, b, f in chunk for v in (tenant, u, version, SCHEMA_VERSION, t, b, f)],
            )
            for chunk in _chunks(rows, 100)
        ]


_SNAPSHOT_COLUMNS = "tenant, user_id, version, schema_version, updated_at, body, history_from"
_UPDATE_SNAPSHOT = (
    "version = excluded.version, schema_version = excluded.schema_version, "
    "updated_at = excluded.updated_at, body = excluded.body, history_from = excluded.history_from"
)
_LIVE_HISTORY = (
    "penchant_history AS h JOIN penchant_profiles AS p ON p.tenant = h.tenant AND p.user_id = h.user_id "
    "WHERE h.tenant = ? AND h.ord >= p.history_from"
)
"""The history rows still in their user's window, for a query to narrow down (``AND ...``).
A query for a set of users names them on both tables: PostgreSQL plans with the statistics it
has, and for a tenant newer than them it took the tenant for one profile and walked all of its
profiles for each user asked for (writes of 3,000 users in turn, none held, through the cache
and PostgreSQL: 9.8-49.8 ms each at the median)."""


SQLITE_CACHE_MIB = 64
"""The default bound of an SQLite store's page cache, in MiB (SQLite's own is 2 MiB). Batches
of 1,000 events over 100 users touch the event log's two indexes and the history rows in
hundreds of places, and with 2 MiB the pages were read again from the file for each batch:
tiered SQLite ingestion, 3 alternating pairs of 60 batches (a script outside the repository),
SQL statements 17-20 ms per batch against 23-26 ms, process CPU 86-97 against 90-104 ms."""

MAX_SQLITE_CACHE_MIB = 1 << 20
"""The largest ``cache_mib`` accepted (1 TiB)."""

CHECKPOINT_EVERY = 1000
"""Write transactions of an SQLite store between two checkpoints of its write-ahead log (or a
second, whichever comes first). A checkpoint copies the log into the database and fsyncs it
while writers go on, and the write it overlaps slows down by 1-2 ms: every 100 writes, that
was 10 writes in 1,000, the p99 of ``apply_feedback`` through every tier (2.29 / 2.34 / 2.46 ms
against 2.10 / 1.98 / 1.57 ms every 1,000 writes, three alternating runs of the benchmark)."""

WAL_RESTART_FRAMES = 4096
"""Frames in an SQLite store's write-ahead log (16 MB at 4 KB pages) past which a checkpoint
holds the store's lock for its last part, so that the log restarts. A busy store passes it at
most checkpoints (1,000 one-event writes into heavy profiles are ~8,000 frames), and the log's
file keeps its largest size (~32 MB then), which later writes reuse from its start."""

RESTART_PASSES = 3
"""PASSIVE checkpoints at most, without the store's lock, that copy what writers added to the
log during the one that found it past :data:`WAL_RESTART_FRAMES`, before the checkpoint that
holds the lock; they stop once one finds fewer than :data:`RESTART_LOCKED_FRAMES` new frames.
The locked checkpoint then copies few pages and fsyncs little: 3,000 one-event writes to 1,000
users in turn through every tier (``synchronous=normal``, 4 restarts a run, 6 runs each way), the
writers waited 1.4-21.6 ms (11 of 24 under 2.2 ms) against 16.7-46.4 ms with the locked
checkpoint right after the first. (The p99 of the writes stays what it was.)"""

RESTART_LOCKED_FRAMES = 64
"""See :data:`RESTART_PASSES`."""

INLINE_CHECKPOINT_AFTER = 2 * CHECKPOINT_EVERY
"""Write transactions after which a writer checkpoints the log itself (the checkpoint thread
has fallen behind, or cannot run)."""


class _Checkpointer:
    """Copies an SQLite store's write-ahead log into the database from a thread of its own.

    SQLite's automatic checkpoint runs inside the commit that fills the log past 1,000 pages,
    so that write waits for the copy and its fsync (``benches/sqlite_checkpoint.py``: one event
    into a heavy profile at ``synchronous=NORMAL``, on a loaded machine, p99.9 17-18 ms with
    SQLite's checkpoints against 9.5-13 ms with this thread; when every event still rewrote the
    whole history, p99 14 ms against 1.9 ms with no checkpoint at all). The store's connection
    turns it off (``wal_autocheckpoint=0``) and this daemon thread, with a connection of its
    own, checkpoints every :data:`CHECKPOINT_EVERY` writes (or each second
    after one): a PASSIVE checkpoint while writers go on. It copies the log, but a log written to
    without a pause is never all copied, and SQLite starts a log afresh only after all of it
    was: so once the log holds more than :data:`WAL_RESTART_FRAMES` frames, a few more copy
    what was written meanwhile (:data:`RESTART_PASSES`), then one holds the store's lock, copies
    the few pages written since, and the next write starts the log afresh. That step fsyncs the
    database while writers wait (1.4-21.6 ms on this VM, see :data:`RESTART_PASSES`): doing it
    after every checkpoint put it into the p99 of writes. A writer checkpoints itself after
    :data:`INLINE_CHECKPOINT_AFTER` writes without one, whatever happens to the thread.
    """

    def __init__(self, path: str, busy_timeout: float, lock: threading.Lock) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._lock = lock
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.pending = 0  # writes since the last checkpoint
        self.checkpoints = 0  # those that restart the log (by this thread, or inline)
        self.passive = 0  # PASSIVE checkpoints by this thread alone

    def wrote(self) -> bool:
        """Counts a committed write; whether the writer must checkpoint now."""
        self.pending += 1
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="penchant-sqlite-checkpoint", daemon=True)
            self._thread.start()
        if self.pending >= CHECKPOINT_EVERY:
            self._wake.set()
        return self.pending >= INLINE_CHECKPOINT_AFTER

    def checkpoint(self, connection: sqlite3.Connection) -> None:
        self.pending = 0
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.checkpoints += 1

    def _run(self) -> None:
        try:
            connection = sqlite3.connect(
                self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            logger.warning("SQLite checkpoint thread for %r cannot connect: %s", self._path, exc)
            return
        try:
            while not self._stopping:
                self._wake.wait(1.0)
                self._wake.clear()
                if self.pending and not self._stopping:
                    self.pending = 0
                    frames = self._passive(connection)
                    if frames > WAL_RESTART_FRAMES:
                        for _ in range(RESTART_PASSES):  # what was written meanwhile, unlocked
                            added = self._passive(connection) - frames
                            frames += added
                            if added < RESTART_LOCKED_FRAMES:
                                break
                        with self._lock:
                            self.checkpoint(connection)
        except sqlite3.Error as exc:  # the writers checkpoint themselves from now on
            logger.warning("SQLite checkpoint thread for %r stopped: %s", self._path, exc)
        finally:
            connection.close()

    def _passive(self, connection: sqlite3.Connection) -> int:
        """A PASSIVE checkpoint while writers go on; the frames in the log."""
        _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.passive += 1
        return int(frames)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _enable_wal(connection: Any, busy_timeout: float) -> None:
    """Puts the database in WAL mode. Switching needs an exclusive lock, and SQLite answers
    "database is locked" at once, without waiting, when waiting could deadlock (processes
    opening a new database together): the switch is tried again until ``busy_timeout``."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class _SQLiteDatabase(_Database):
    name = "SQLite"
    blob = "BLOB"
    float_type = "REAL"
    event_key = "seq INTEGER PRIMARY KEY AUTOINCREMENT"
    # A user's history rows side by side: reading 500 of them scattered among other users'
    # took 2.1 ms through the primary-key index and the rowid table, 0.5 ms clustered.
    clustered = " WITHOUT ROWID"

    def __init__(self, path: str, *, synchronous: str, busy_timeout: float, cache_mib: int) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValidationError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        if isinstance(cache_mib, bool) or not isinstance(cache_mib, int) or not 1 <= cache_mib <= MAX_SQLITE_CACHE_MIB:
            raise ValidationError(f"cache_mib must be an int from 1 to {MAX_SQLITE_CACHE_MIB}, got {cache_mib!r}")
        self._cache_kib = cache_mib * 1024
        self.path = path
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.checkpointer = None if path == ":memory:" else _Checkpointer(path, busy_timeout, self._lock)

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailableError("the SQLite store is closed")
        if self._connection is None:
            try:
                directory = os.path.dirname(os.path.abspath(self.path))
                if self.path != ":memory:" and not os.path.isdir(directory):
                    os.makedirs(directory, exist_ok=True)
                connection = sqlite3.connect(
                    self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
                )
                _enable_wal(connection, self._busy_timeout)
                connection.execute(f"PRAGMA synchronous={self._synchronous}")  # checked against a fixed list
                connection.execute(f"PRAGMA cache_size=-{self._cache_kib}")  # an int, checked
                if self.checkpointer is not None:
                    connection.execute("PRAGMA wal_autocheckpoint=0")  # see _Checkpointer
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailableError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
            self._connection = connection
        return self._connection

    def run_sync(self, body: TransactionBody[T], write: bool) -> T:
        with self._lock:
            connection = self._connect()

            def execute(statement: Sql | list[Sql]) -> Rows | list[Rows]:
                if isinstance(statement, list):
                    return [connection.execute(s.text, s.params).fetchall() for s in statement]
                return connection.execute(statement.text, statement.params).fetchall()

            try:
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"SQLite database {self.path!r}: {exc}") from exc
            try:
                value = _drive(body, execute)
                connection.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                connection.execute("ROLLBACK")
                raise StoreUnavailableError(f"SQLite database {self.path!r}: {exc}") from exc
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            if write and self.checkpointer is not None and self.checkpointer.wrote():
                try:
                    self.checkpointer.checkpoint(connection)
                except sqlite3.Error as exc:  # the write is committed: a later one tries again
                    logger.warning("SQLite checkpoint of %r failed: %s", self.path, exc)
            return value

    async def run_async(self, body: TransactionBody[T], write: bool) -> T:
        # sqlite3 has no async API: the transaction runs whole in a worker thread.
        return await asyncio.to_thread(self.run_sync, body, write)

    def close_sync(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    async def close_async(self) -> None:
        self.close_sync()

    def lock_user(self, key: str) -> Sql | None:
        return None  # BEGIN IMMEDIATE holds the database's write lock already

    def lock_users(self, keys: Sequence[str]) -> Sql | None:
        return None

    def lock_schema(self) -> Sql | None:
        return None


def _answers_rows(statements: Sequence[Sql]) -> bool:
    return any(one.returns_rows for one in statements)


def _rows(statement: Sql | list[Sql], results: list[Rows]) -> Rows | list[Rows]:
    """What a body receives for ``statement``: its rows, or a list of rows for a list."""
    return results[0] if isinstance(statement, Sql) else results


_ARRAY_PARAMETER = re.compile(r"\?(?=::\w+\[\])")


def _text_array(values: Sequence[str]) -> str:
    """``values`` as a PostgreSQL array literal of text (each element quoted and escaped)."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


@functools.lru_cache(maxsize=256)
def _postgres_query(text: str) -> str:
    """``text`` with psycopg's placeholders: arrays (``?::type[]``) sent in binary, the rest as
    psycopg chooses. In text, psycopg dumps a list one element at a time, quoting and escaping
    each: 13.5 ms against 1.3 ms for 1,000 rows of the event log's columns (a batch insert of
    them took 18-22 ms, 4.6-5.0 ms in binary)."""
    return _ARRAY_PARAMETER.sub("%b", text).replace("?", "%s")


_READ_COMMITTED = "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED"
"""What every PostgreSQL connection of penchant's pools runs first, for its statements in
autocommit (a one-statement write); its transactions also ask for READ COMMITTED when they
begin. penchant's statements are built for it, PostgreSQL's default: a guarded one-statement
write checks the row as it is once it holds the user's lock, and a transaction locks its users
before it reads them. A server (or database, or role) whose default is REPEATABLE READ or
SERIALIZABLE would fail concurrent writes of one user with serialization errors."""


def _read_committed(connection: psycopg.Connection[Any]) -> None:
    connection.execute(_READ_COMMITTED)


async def _read_committed_async(connection: psycopg.AsyncConnection[Any]) -> None:
    import psycopg

    await connection.execute(_READ_COMMITTED)
    await connection.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)  # transaction()'s BEGIN


class _PostgresDatabase(_Database):
    name = "PostgreSQL"
    blob = "BYTEA"
    float_type = "DOUBLE PRECISION"
    event_key = "seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    # A snapshot (~3.5 KB for a typical profile) is stored as it is up to a page: compressed
    # (past 2 KB by default) it took ~1.3 KB, and a write of one event ~0.1 ms more.
    snapshot_storage = ("ALTER TABLE penchant_profiles SET (toast_tuple_target = 8160)",)
    writes_one_user_at_once = True

    def __init__(self, url: str, *, min_size: int, max_size: int, timeout: float) -> None:
        try:
            import psycopg  # noqa: F401 - fail early with a clear message
            import psycopg_pool  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError("PostgreSQL support needs psycopg: pip install 'penchant[postgres]'") from exc
        self.url = url
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]] | None = None
        self._async_pools: PerLoop[psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]] = (
            PerLoop(self._make_async_pool, lambda pool: pool.close())
        )
        self._lock = threading.Lock()
        self._closed = False
        self._prepared = PreparedStatements()  # a one-statement write, sent through libpq

    @staticmethod
    def _sql(statement: Sql) -> str:
        return _postgres_query(statement.text)

    def _unavailable(self, exc: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(f"PostgreSQL is unavailable: {exc}")

    def _sync_pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]]:
        import psycopg_pool

        with self._lock:
            if self._closed:
                raise StoreUnavailableError("the PostgreSQL store is closed")
            if self._pool is None:
                pool = psycopg_pool.ConnectionPool(
                    self.url,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=self._timeout,
                    open=False,
                    kwargs={"autocommit": True},  # transactions are explicit: one BEGIN, one COMMIT
                    configure=_read_committed,
                )
                pool.open(wait=False)
                self._pool = pool
            return self._pool

    # A transaction runs in psycopg's pipeline mode, with BEGIN and COMMIT sent as statements:
    # statements that answer no rows are sent without waiting for them, so a write of one user
    # waits for two answers (the lock, the event and the snapshot read; then the writes and the
    # COMMIT) instead of eight, and an error in any statement fails the transaction where it
    # is next waited for. Measured on loopback (SQL-only apply_feedback of one event, three
    # runs each): median 2.1-2.5 ms against 2.7-4.1 ms with a round trip per statement.
    # (psycopg's transaction() in pipeline mode waits at BEGIN and at COMMIT, and one pipeline
    # per list of statements cost more than it saved.) The async path runs statement by
    # statement: with psycopg's AsyncPipeline, one run in about five of the async store tests
    # hung at asyncio.run's exit, a pool worker never finishing once cancelled.
    # Rows come in binary: bytes need no unescaping (in text, the server sends them as hex, twice
    # their size). A SQL-only get_many of 100 typical profiles took a median 10.3-11.4 ms against
    # 16.4 ms in text.

    def run_sync(self, body: TransactionBody[T], write: bool) -> T:
        import psycopg
        import psycopg_pool

        pool = self._sync_pool()
        try:
            # The connection's context rolls back a transaction left open by an error.
            with pool.connection() as connection, connection.pipeline() as pipeline:
                connection.execute("BEGIN ISOLATION LEVEL READ COMMITTED")  # see _READ_COMMITTED

                def send(statements: list[Sql]) -> Answer:
                    cursors = [connection.execute(self._sql(one), one.params, binary=True) for one in statements]
                    if not _answers_rows(statements):  # on their way: an error fails the commit
                        return Answer(lambda: [[] for _ in cursors], pending=True)

                    def fetch() -> list[Rows]:
                        pipeline.sync()
                        return [c.fetchall() if c.description else [] for c in cursors]

                    return Answer(fetch, pending=True)

                def execute(statement: Sql | list[Sql]) -> Rows | list[Rows]:
                    return _rows(statement, send([statement] if isinstance(statement, Sql) else statement).fetch())

                value = _drive(body, execute, send)
                connection.execute("COMMIT")
            return value
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    async def run_async(self, body: TransactionBody[T], write: bool) -> T:
        import psycopg
        import psycopg_pool

        try:
            pool = await self._open_async_pool()
            async with pool.connection() as connection, connection.transaction():
                statement = next(body)
                try:
                    while True:
                        try:
                            rows = await self._execute_async(connection, statement)
                        except Exception as exc:  # thrown into the body, which decides
                            statement = body.throw(exc)
                        else:
                            statement = body.send(rows)
                except StopIteration as stop:
                    value: T = stop.value
                    return value
        except StopIteration as stop:  # a body that needs no statement
            empty: T = stop.value
            return empty
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    async def _execute_async(
        self, connection: psycopg.AsyncConnection[tuple[Any, ...]], statement: Sql | list[Sql] | Sent | Answer
    ) -> Rows | list[Rows] | Answer:
        if isinstance(statement, Answer):
            return statement.fetch()
        statements = [statement] if isinstance(statement, Sql) else statement
        if isinstance(statements, Sent):  # run now: the async API sends statement by statement
            statements = statements.statements
        results: list[Rows] = []
        for one in statements:
            cursor = await connection.execute(self._sql(one), one.params, binary=True)
            results.append(await cursor.fetchall() if cursor.description is not None else [])
        if isinstance(statement, Sent):
            return Answer(lambda: results)
        return results[0] if isinstance(statement, Sql) else results

    def run_statement_sync(self, statement: Sql, meanwhile: Callable[[], None] | None = None) -> Rows | None:
        import psycopg
        import psycopg_pool

        try:
            with self._sync_pool().connection() as connection:  # autocommit: the statement commits
                try:
                    return self._prepared.run(connection, statement.text, statement.params, meanwhile)
                except psycopg.IntegrityError:
                    return None
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    async def run_statement_async(self, statement: Sql, meanwhile: Callable[[], None] | None = None) -> Rows | None:
        import psycopg
        import psycopg_pool

        try:
            pool = await self._open_async_pool()
            async with pool.connection() as connection:  # autocommit: the statement commits
                try:
                    return await self._prepared.arun(connection, statement.text, statement.params, meanwhile)
                except psycopg.IntegrityError:
                    return None
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    def write_one(
        self, tenant: str, key: str, before: tuple[int, bytes], change: _Written, recorded_at: float, events: Events
    ) -> Sql | None:
        # The user's lock first (as a transaction of several statements takes it), then the
        # snapshot, guarded: READ COMMITTED checks the guard again on the newest row if another
        # writer changed it since the statement began. The rest writes only if it matched. (A
        # rewrite's new rows would collide with the old ones it deletes in the same statement.)
        # Values go one by one, not in arrays (dumping an array cost psycopg more than the rest
        # of the statement's values), so a statement writes up to _CHUNK events and rows. A
        # profile that was not there (`before`'s body empty) is inserted unless one is now.
        if change.cut == _ALL_ROWS or not 0 < len(events) <= _CHUNK or len(change.rows) > _CHUNK:
            return None
        profile = change.profile
        snapshot = (profile.version, SCHEMA_VERSION, profile.updated_at.timestamp(), change.body, change.base)
        parts = ["WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtextextended(?, 0)))"]
        params: list[Any] = [key]
        if before[1]:
            parts.append(
                """, snapshot AS (
                UPDATE penchant_profiles AS p SET version = ?, schema_version = ?, updated_at = ?, body = ?,
                    history_from = ?
                FROM lock WHERE p.tenant = ? AND p.user_id = ? AND p.version = ? AND p.body = ?
                RETURNING 1
            )"""
            )
            params += [*snapshot, tenant, profile.user_id, *before]
        else:
            parts.append(
                f""", snapshot AS (
                INSERT INTO penchant_profiles ({_SNAPSHOT_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ? FROM lock
                ON CONFLICT (tenant, user_id) DO NOTHING RETURNING 1
            )"""
            )
            params += [tenant, profile.user_id, *snapshot]
        parts.append(
            """, events AS (
                INSERT INTO penchant_events (tenant, event_id, user_id, occurred_at, recorded_at, payload)
                SELECT ?, e, ?, o, ?, p FROM (VALUES """
            + ", ".join(["(?, ?::float8, ?::bytea)"] * len(events))
            + """) AS t(e, o, p)
                WHERE EXISTS (SELECT FROM snapshot)
            )"""
        )
        params += [
            tenant,
            profile.user_id,
            recorded_at,
            *(v for event_id, _, occurred_at, payload in events for v in (event_id, occurred_at, payload)),
        ]
        if change.rows:
            parts.append(
                """, added AS (
                    INSERT INTO penchant_history (tenant, user_id, ord, body)
                    SELECT ?, ?, o, b FROM (VALUES """
                + ", ".join(["(?::int8, ?::bytea)"] * len(change.rows))
                + """) AS x(o, b)
                    WHERE EXISTS (SELECT FROM snapshot)
                )"""
            )
            params += [tenant, profile.user_id, *(v for _, ord_, body in change.rows for v in (ord_, body))]
        if change.cut is not None:
            parts.append(
                """, trimmed AS (
                    DELETE FROM penchant_history WHERE tenant = ? AND user_id = ? AND ord < ?
                    AND EXISTS (SELECT FROM snapshot)
                )"""
            )
            params += [tenant, profile.user_id, change.cut]
        parts.append(" SELECT EXISTS (SELECT FROM snapshot)")
        return Sql("".join(parts), tuple(params))

    def read_one(self, tenant: str, user_id: str) -> Sql | None:
        return Sql(
            """SELECT p.version, p.body, h.first, h.n, h.last, h.joined,
                (SELECT min(ord) FROM penchant_history WHERE tenant = p.tenant AND user_id = p.user_id)
            FROM penchant_profiles AS p CROSS JOIN LATERAL (
                SELECT min(ord) AS first, count(*) AS n, max(ord) AS last,
                    string_agg(body, ''::bytea ORDER BY ord) AS joined
                FROM penchant_history WHERE tenant = p.tenant AND user_id = p.user_id AND ord >= p.history_from
            ) AS h
            WHERE p.tenant = ? AND p.user_id = ?""",
            (tenant, user_id),
        )

    def logged_already(
        self, tenant: str, user_id: str, before: tuple[int, bytes], event_ids: Sequence[str]
    ) -> Sql | None:
        # The ids go as one array (in its text form), so that any number of them is one
        # statement, prepared once.
        return Sql(
            """SELECT (SELECT count(*) FROM penchant_events WHERE tenant = ? AND event_id = ANY (?::text[])),
                EXISTS (SELECT FROM penchant_profiles WHERE tenant = ? AND user_id = ? AND version = ? AND body = ?)""",
            (tenant, _text_array(event_ids), tenant, user_id, *before),
        )

    async def _open_async_pool(self) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]:
        """The running loop's pool (made and opened when first asked for)."""
        if self._closed:
            raise StoreUnavailableError("the PostgreSQL store is closed")
        pool = await self._async_pools.get()
        if pool.closed:
            await pool.open(wait=False)
        return pool

    def _make_async_pool(self) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]:
        import psycopg_pool

        return psycopg_pool.AsyncConnectionPool(
            self.url,
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._timeout,
            open=False,
            kwargs={"autocommit": True},  # transactions are explicit: one BEGIN, one COMMIT
            configure=_read_committed_async,
        )

    def close_sync(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        self._async_pools.close_idle()

    async def close_async(self) -> None:
        await self._async_pools.close_current()
        await asyncio.to_thread(self.close_sync)

    def lock_user(self, key: str) -> Sql | None:
        return Sql("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    def lock_users(self, keys: Sequence[str]) -> Sql | None:
        if len(keys) == 1:
            return self.lock_user(keys[0])
        # Ordered by lock id (not by key): two keys may share an id, and one global order of
        # ids is what rules out a deadlock between two batches.
        return Sql(
            """SELECT pg_advisory_xact_lock(id) FROM (
                   SELECT DISTINCT hashtextextended(key, 0) AS id FROM unnest(?::text[]) AS key ORDER BY id
               ) AS ids""",
            (list(keys),),
        )

    def lock_schema(self) -> Sql | None:
        return Sql("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", ("penchant schema",))

    # Batches travel as arrays: one short statement whatever the batch size, which psycopg
    # parses once and PostgreSQL prepares once (a VALUES list of N rows is a new statement for
    # every N, and slow to parse when long).

    def select_profiles(self, tenant: str, user_ids: Sequence[str]) -> list[Sql]:
        if len(user_ids) == 1:  # one user (the latency path): the plainest statement
            return super().select_profiles(tenant, user_ids)
        return [
            Sql(
                "SELECT user_id, version, body FROM penchant_profiles WHERE tenant = ? AND user_id = ANY(?::text[])",
                (tenant, list(user_ids)),
            )
        ]

    def insert_events(self, tenant: str, recorded_at: float, events: Events) -> list[Sql]:
        columns: list[list[Any]] = [list(c) for c in zip(*events, strict=True)] if events else [[], [], [], []]
        return [
            Sql(
                """INSERT INTO penchant_events (tenant, event_id, user_id, occurred_at, recorded_at, payload)
                   SELECT ?, e, u, o, ?, p FROM unnest(?::text[], ?::text[], ?::float8[], ?::bytea[]) AS t(e, u, o, p)
                   ON CONFLICT (tenant, event_id) DO NOTHING RETURNING event_id""",
                (tenant, recorded_at, *columns),
            )
        ]

    def select_history(self, tenant: str, user_ids: Sequence[str]) -> list[Sql]:
        return [
            Sql(
                "SELECT h.user_id, min(h.ord), count(*), max(h.ord), string_agg(h.body, ''::bytea ORDER BY h.ord), "
                f"NULL FROM {_LIVE_HISTORY} AND h.user_id = ANY(?::text[]) AND p.user_id = ANY(?::text[]) "
                "GROUP BY h.user_id",
                (tenant, list(user_ids), list(user_ids)),
            )
        ]

    def insert_history(self, tenant: str, rows: Sequence[tuple[str, int, bytes]]) -> list[Sql]:
        if len(rows) <= 4:
            return super().insert_history(tenant, rows)
        columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
        return [
            Sql(
                """INSERT INTO penchant_history (tenant, user_id, ord, body)
                   SELECT ?, u, o, b FROM unnest(?::text[], ?::int8[], ?::bytea[]) AS x(u, o, b)""",
                (tenant, *columns),
            )
        ]

    def trim_history(self, tenant: str, cuts: Sequence[tuple[str, int]]) -> list[Sql]:
        if len(cuts) <= 1:
            return super().trim_history(tenant, cuts)
        users, ords = [list(c) for c in zip(*cuts, strict=True)]
        return [
            Sql(
                """DELETE FROM penchant_history AS h USING unnest(?::text[], ?::int8[]) AS c(u, o)
                   WHERE h.tenant = ? AND h.user_id = c.u AND h.ord < c.o""",
                (users, ords, tenant),
            )
        ]

    def upsert_profiles(self, tenant: str, rows: Sequence[tuple[str, int, float, bytes, int]]) -> list[Sql]:
        if len(rows) <= 4:
            return super().upsert_profiles(tenant, rows)
        columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
        return [
            Sql(
                f"""INSERT INTO penchant_profiles ({_SNAPSHOT_COLUMNS})
                   SELECT ?, u, v, ?, t, b, f
                   FROM unnest(?::text[], ?::int8[], ?::float8[], ?::bytea[], ?::int8[]) AS x(u, v, t, b, f)
                   ON CONFLICT (tenant, user_id) DO UPDATE SET {_UPDATE_SNAPSHOT}""",
                (tenant, SCHEMA_VERSION, *columns),
            )
        ]


def _migrations(db: _Database) -> list[list[str]]:
    """``_migrations(db)[n]`` takes the schema from version ``n`` to ``n + 1``. Append only."""
    return [
        [
            f"""CREATE TABLE penchant_events (
                {db.event_key},
                tenant TEXT NOT NULL,
                event_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                occurred_at {db.float_type} NOT NULL,
                recorded_at {db.float_type} NOT NULL,
                payload {db.blob} NOT NULL,
                UNIQUE (tenant, event_id)
            )""",
            "CREATE INDEX penchant_events_by_user ON penchant_events (tenant, user_id, seq)",
            f"""CREATE TABLE penchant_profiles (
                tenant TEXT NOT NULL,
                user_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                schema_version INTEGER NOT NULL,
                updated_at {db.float_type} NOT NULL,
                body {db.blob} NOT NULL,
                PRIMARY KEY (tenant, user_id)
            )""",
        ],
        [
            # Snapshots written before this step hold their history inline: they are read as
            # they are, and the next write moves the history into rows.
            f"""CREATE TABLE penchant_history (
                tenant TEXT NOT NULL,
                user_id TEXT NOT NULL,
                ord BIGINT NOT NULL,
                body {db.blob} NOT NULL,
                PRIMARY KEY (tenant, user_id, ord)
            ){db.clustered}""",
        ],
        [
            # Rows before history_from fell out of the window and wait to be trimmed (TRIM_AFTER);
            # a snapshot written before this step has none.
            "ALTER TABLE penchant_profiles ADD COLUMN history_from BIGINT NOT NULL DEFAULT 0",
            *db.snapshot_storage,
        ],
    ]


class SQLProfileStore(ProfileStore):
    """A durable store on an SQL database; see :class:`SQLiteProfileStore` and
    :class:`PostgresProfileStore`. Profiles never expire here."""

    def __init__(
        self,
        database: _Database,
        *,
        tenant: str = DEFAULT_TENANT,
        model: InterestModel | None = None,
        serializer: ProfileSerializer | None = None,
    ) -> None:
        super().__init__(tenant=tenant, model=model, serializer=serializer)
        self._db = database
        self._schema_ready = False
        # user -> the profile this store last wrote, decoded: the next apply starts from it when
        # the row still holds exactly the body written then (see _apply_ahead).
        self._written: OrderedDict[str, _Kept] = OrderedDict()
        self._written_bytes = 0
        self._written_lock = threading.Lock()

    @property
    def schema_version(self) -> int:
        """The schema version this penchant creates and reads."""
        return len(_migrations(self._db))

    # -- schema ---------------------------------------------------------------------------------

    def _ready(self) -> Op[None]:
        if not self._schema_ready:
            yield self._db.transaction(self._migrate(), write=True)
            self._schema_ready = True

    def _migrate(self) -> TransactionBody[None]:
        lock = self._db.lock_schema()
        if lock is not None:
            yield lock
        yield Sql("CREATE TABLE IF NOT EXISTS penchant_schema (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)")
        rows = yield Sql("SELECT version FROM penchant_schema WHERE id = 1")
        current = int(rows[0][0]) if rows else 0
        steps = _migrations(self._db)
        if current > len(steps):
            raise StoreUnavailableError(
                f"the {self._db.name} schema is at version {current}, newer than this penchant's {len(steps)}: "
                "upgrade penchant"
            )
        for statements in steps[current:]:
            for text in statements:
                yield Sql(text)
        if current < len(steps):
            if rows:
                yield Sql("UPDATE penchant_schema SET version = ? WHERE id = 1", (len(steps),))
            else:
                yield Sql("INSERT INTO penchant_schema (id, version) VALUES (1, ?)", (len(steps),))

    # -- transaction bodies -------------------------------------------------------------------------

    def _lock(self, user_id: str) -> TransactionBody[None]:
        lock = self._db.lock_user(f"{self.tenant}\x1f{user_id}")
        if lock is not None:
            yield lock

    def _select_statements(self, user_ids: Sequence[str]) -> list[Sql]:
        return self._db.select_profiles(self.tenant, user_ids)

    def _select_history(self, user_ids: Sequence[str]) -> TransactionBody[dict[str, _History]]:
        """The history of each of ``user_ids`` that has one (see :meth:`_Database.select_history`:
        a user whose rows are not numbered one after another, or came joined out of order, is
        read again row by row)."""
        if not user_ids:
            return {}
        results = yield self._db.select_history(self.tenant, user_ids)
        found: dict[str, _History] = {}
        irregular = []
        for rows in results:
            for user_id, first, count, last, joined, ords in rows:
                first, count, last = int(first), int(count), int(last)
                if last - first + 1 == count and (ords is None or ords == ",".join(map(str, range(first, last + 1)))):
                    found[user_id] = _History(first, count, bytes(joined))
                else:
                    irregular.append(user_id)
        for user_id in irregular:
            rows = yield self._db.select_history_rows(self.tenant, user_id)
            joined = b"".join(bytes(body) for _, body in rows)
            found[user_id] = _History(int(rows[0][0]), len(rows), joined, regular=False)
        return found

    def _decode_profile(self, version: Any, body: Any, history: _History | None) -> tuple[UserProfile, int | None]:
        """A profile from its row and its history, and the ``ord`` of its first history row
        (``None`` when the history rows must be written anew: a body that held its history
        inline, or rows that are not numbered one after another)."""
        if history is None:
            history = _History(0, 0, b"")
        profile, inline = self.serializer.decode_apart(body, history.count, history.joined)
        profile.version = int(version)
        if inline or not history.regular:
            return profile, None
        return profile, history.base

    def _select_profiles(self, user_ids: Sequence[str]) -> TransactionBody[dict[str, UserProfile]]:
        results = yield self._select_statements(user_ids)
        rows = [row for result in results for row in result]
        history = yield from self._select_history([row[0] for row in rows])
        return {
            user_id: self._decode_profile(version, body, history.get(user_id))[0] for user_id, version, body in rows
        }

    def _select_version(self, user_id: str) -> TransactionBody[int]:
        rows = yield Sql(
            "SELECT version FROM penchant_profiles WHERE tenant = ? AND user_id = ?", (self.tenant, user_id)
        )
        return int(rows[0][0]) if rows else 0

    def _write_statements(self, written: Sequence[_Written]) -> list[Sql]:
        """The snapshots and history rows of ``written``, in a few statements."""
        cuts = [(w.profile.user_id, w.cut) for w in written if w.cut is not None]
        added = [row for w in written for row in w.rows]
        return [
            *self._db.upsert_profiles(
                self.tenant,
                [
                    (w.profile.user_id, w.profile.version, w.profile.updated_at.timestamp(), w.body, w.base)
                    for w in written
                ],
            ),
            *(self._db.trim_history(self.tenant, cuts) if cuts else []),
            *(self._db.insert_history(self.tenant, added) if added else []),
        ]

    def _rewrite(self, profile: UserProfile) -> _Written:
        """``profile`` to be stored whole: every history row replaced."""
        encoded = self._encoded(profile.interaction_history)
        history = [body_ for _, body_ in encoded]
        packed = self.serializer.pack_history(history)
        body, size = self.serializer.encode_apart(profile, packed)
        rows = [(profile.user_id, n, body_) for n, body_ in enumerate(history)]
        entries = {e.event_id: (e, b) for e, b in encoded}
        return _Written(profile, size, body, _ALL_ROWS, rows, 0, 0, entries, history, packed)

    def _encoded(self, history: Sequence[Interaction]) -> list[tuple[Interaction, bytes]]:
        encode = self.serializer.encode_interaction
        return [(entry, encode(entry)) for entry in history]

    def _extend(
        self,
        profile: UserProfile,
        before: list[Interaction],
        base: int | None,
        floor: int,
        encoded_before: list[bytes],
    ) -> _Written:
        """``profile`` to be stored after a change that took its history from ``before`` (whose
        rows are numbered from ``base``, none below ``floor``, and whose entries are encoded as
        ``encoded_before``) to what it holds now: when the change only dropped entries from the
        front and appended new ones (events in time order), the new rows are added (and the
        dropped ones trimmed, see :data:`TRIM_AFTER`); anything else rewrites every row."""
        history = profile.interaction_history
        if base is None:
            return self._rewrite(profile)
        # The entries of `before` still held must be the first of `history`, in order, and
        # `before`'s last among them: find the first one held, then compare identities.
        first = len(before)
        if history:
            head = history[0]
            for n, entry in enumerate(before):
                if entry is head:
                    first = n
                    break
        kept = len(before) - first
        if (
            len(history) < kept
            or not all(map(operator.is_, before[first:], history[:kept]))
            or not {id(e) for e in before[:first]}.isdisjoint(id(e) for e in history[kept:])
        ):
            return self._rewrite(profile)
        encoded = self._encoded(history[kept:])
        added = [body_ for _, body_ in encoded]
        encoded_after = encoded_before[first:] + added
        packed = self.serializer.pack_history(encoded_after)
        body, size = self.serializer.encode_apart(profile, packed)
        end = base + len(before)
        rows = [(profile.user_id, end + n, body_) for n, body_ in enumerate(added)]
        entries = {e.event_id: (e, b) for e, b in encoded}
        cut, floor = _trim(base + first, floor, not encoded_after)
        return _Written(profile, size, body, cut, rows, base + first, floor, entries, encoded_after, packed)

    def _apply_to(
        self, work: UserProfile, fresh: list[Signal], base: int | None, floor: int, encoded_before: list[bytes]
    ) -> _Written:
        """Applies ``fresh`` to ``work`` (whose history rows are numbered from ``base``, none
        below ``floor``, and encoded as ``encoded_before``) and says what to write. While ``work``'s history is
        still encoded and the change only appends to it (see ``InterestModel.places_before``),
        the model sees its newest entry alone, and the history is never decoded: a write costs
        what it adds, not the ~1.2 µs per entry of decoding a history of 500 (a preference
        refresh reads the encoded history)."""
        version = work.version + 1
        if base is not None and self.serializer.history_is_encoded(work):
            last = self.serializer.decode_interaction(encoded_before[-1]) if encoded_before else None
            if not self.model.places_before(last, fresh):
                count = work.event_count
                work.interaction_history = [] if last is None else [last]
                self.model.apply(work, fresh, refresh=False)
                work.version = version
                added = [e for e in work.interaction_history if e is not last]
                return self._append(work, base, floor, encoded_before, added, work.event_count - count)
        before = list(work.interaction_history)
        self.model.apply(work, fresh)
        work.version = version
        return self._extend(work, before, base, floor, encoded_before)

    def _append(
        self,
        profile: UserProfile,
        base: int,
        floor: int,
        encoded_before: list[bytes],
        added: list[Interaction],
        new_events: int,
    ) -> _Written:
        """``profile`` to be stored with ``added`` after the history encoded as ``encoded_before``
        (rows numbered from ``base``, none below ``floor``), which keeps its ``max_history``
        newest entries; the profile's history becomes that, encoded (decoded when first read).
        Its preferences are re-extracted from it if its ``new_events`` crossed a multiple of
        ``refresh_every``."""
        encoded = self._encoded(added)
        history = encoded_before + [body_ for _, body_ in encoded]
        drop = max(0, len(history) - self.model.max_history)
        del history[:drop]
        packed = self.serializer.pack_history(history)
        self.serializer.keep_history_encoded(profile, packed)
        if self.model.refresh_crosses(profile.event_count, new_events):
            # The newest entry is the last added (none of them sorts before the history's).
            latest = added[-1].timestamp.timestamp() if added else None
            self.model.refresh_preferences(profile, new_events, (), crossed=True, latest=latest)
        body, size = self.serializer.encode_apart(profile, packed)
        end, first = base + len(encoded_before), base + drop
        rows = [(profile.user_id, end + n, body_) for n, (_, body_) in enumerate(encoded) if end + n >= first]
        entries = {e.event_id: (e, b) for n, (e, b) in enumerate(encoded) if end + n >= first}
        cut, floor = _trim(first, floor, not history)
        return _Written(profile, size, body, cut, rows, first, floor, entries, history, packed)

    def _put_body(self, profile: UserProfile, expected_version: int | None) -> TransactionBody[Stored]:
        yield from self._lock(profile.user_id)
        current = yield from self._select_version(profile.user_id)
        if expected_version is not None and expected_version != current:
            raise ConflictError(f"profile {profile.user_id!r} is at version {current}, not {expected_version}")
        profile.version = current + 1
        written = self._rewrite(profile)
        yield self._write_statements([written])
        return profile, written.body, written.packed

    def _put_many_body(self, profiles: list[UserProfile]) -> TransactionBody[list[Stored]]:
        stored = []
        for profile in sorted(profiles, key=lambda p: p.user_id):
            stored.append((yield from self._put_body(profile, None)))
        return stored

    def _apply_body(
        self,
        by_user: dict[str, list[Signal]],
        payloads: dict[str, bytes],
        while_writing: Callable[[list[AppliedChange]], None] | None = None,
        fields: bool = False,
    ) -> TransactionBody[dict[str, AppliedChange]]:
        """Every user of the batch in a few statements: lock them, log the events (learning
        which are new), read their snapshots (and the history rows of those this store does
        not hold decoded), apply the new events, write the snapshots and the history rows that
        changed. Where the database works on the writes while this process goes on
        (PostgreSQL), ``while_writing`` is called then with the changes."""
        users = sorted(by_user)
        recorded_at = time.time()
        signals = [s for u in users for s in by_user[u]]
        lock = self._db.lock_users([f"{self.tenant}\x1f{u}" for u in users])
        inserts = self._db.insert_events(
            self.tenant, recorded_at, [(e.event_id, e.user_id, e.timestamp, payloads[e.event_id]) for e in signals]
        )
        selects = self._select_statements(users)
        # The locks come first, so the snapshots read after them are current.
        answer = yield Sent([*([lock] if lock is not None else []), *inserts, *selects])
        # Where the database works on them meanwhile (PostgreSQL's pipeline: a batch's event log
        # insert took ~25 ms, about as long as applying its events), the events are applied to
        # the profiles this store wrote last, as if every event were new and every row still
        # held what this store wrote. That stands if both hold once the rows are in; if only the
        # row does, the profile is made again from what this store wrote.
        ahead = {u: self._apply_ahead(u, by_user[u]) for u in users} if answer.pending else {}
        results = yield answer
        fresh_ids = {
            row[0]
            for rows in results[len(results) - len(selects) - len(inserts) : len(results) - len(selects)]
            for row in rows
        }
        selected = results[len(results) - len(selects) :]
        stored = {user_id: (version, body) for rows in selected for user_id, version, body in rows}
        fresh_by_user = {u: [s for s in by_user[u] if s.event_id in fresh_ids] for u in users}
        applied: dict[str, _Ahead] = {}
        kept: dict[str, _Kept | None] = {}
        for u, early in ahead.items():
            if early is not None and early.applies_to(stored.get(u)):
                if len(fresh_by_user[u]) == len(by_user[u]):
                    applied[u] = early
                elif fresh_by_user[u]:  # some were applied before: the others go to the profile made again
                    kept[u] = early.kept(self.serializer)
                else:  # none is new: kept for the user's next write
                    self._keep_again(u, early.kept(self.serializer))
        for u in users:
            if u not in applied and u not in kept and fresh_by_user[u] and u in stored:
                kept[u] = self._take_kept(u, *stored[u])
        history = yield from self._select_history(
            [u for u in users if u in stored and u not in applied and kept.get(u) is None]
        )
        changes: dict[str, AppliedChange] = {}
        written: list[_Written] = []
        for user_id in users:
            fresh = fresh_by_user[user_id]
            early = applied.get(user_id)
            if early is not None:
                old_version, old_landmark, change = early.version, early.landmark, early.change
            else:
                row = stored.get(user_id)
                held = kept.get(user_id)
                base: int | None
                floor = 0  # the lowest a row can be numbered, unless the store knows better
                encoded_before: list[bytes] = []
                if held is not None:
                    work, base, floor, encoded_before = held.profile, held.base, held.floor, held.history
                elif row is not None:
                    rows_read = history.get(user_id)
                    work, base = self._decode_profile(*row, rows_read)
                    if fresh and base is not None and rows_read is not None:
                        encoded_before = self.serializer.history_entries(rows_read.count, rows_read.joined)
                else:
                    work, base = UserProfile(user_id=user_id), 0
                if not fresh:
                    changes[user_id] = AppliedChange(work.version, work.landmark, work, b"", b"", fresh)
                    continue
                old_version, old_landmark = work.version, work.landmark
                change = self._apply_to(work, fresh, base, floor, encoded_before)
            written.append(change)
            changes[user_id] = self._applied(old_version, old_landmark, change, fresh, fields)
        if written:
            sent = yield Sent(self._write_statements(written))
            if while_writing is not None and sent.pending:
                while_writing([c for c in changes.values() if c.fresh])
            yield sent
            self._remember(written)
        return changes

    def _evict(self) -> None:
        """Drops the least recently written profiles past :data:`WRITTEN_BYTES` (lock held)."""
        while self._written_bytes > WRITTEN_BYTES:
            _, dropped = self._written.popitem(last=False)
            self._written_bytes -= dropped.size

    def _apply_ahead(self, user_id: str, signals: list[Signal], kept: _Kept | None = None) -> _Ahead | None:
        """``signals`` applied to the profile this store wrote last for ``user_id``, if it holds
        one (taken out of the map: a failure after the change leaves nothing half-changed
        behind), or to ``kept``; ``None`` otherwise, or if they cannot be applied (applied
        again from the row, the events that are new among them raise it there)."""
        if kept is None:
            with self._written_lock:
                kept = self._written.pop(user_id, None)
                if kept is None:
                    return None
                self._written_bytes -= kept.size
        work = kept.profile
        version, landmark = work.version, work.landmark
        try:
            change = self._apply_to(work, signals, kept.base, kept.floor, kept.history)
        except ValidationError:
            return None
        return _Ahead(version, landmark, kept, change)

    def _take_kept(self, user_id: str, version: Any, body: Any) -> _Kept | None:
        """The profile this store wrote last for ``user_id``, to be changed, if the row holds
        exactly the body it wrote (another writer, a deletion or a failed commit since then
        leaves another body, or a newer version). Taken out of the map, so that a failure after
        the change leaves nothing half-changed behind."""
        with self._written_lock:
            kept = self._written.pop(user_id, None)
            if kept is not None:
                self._written_bytes -= kept.size
        if kept is not None and kept.profile.version == int(version) and kept.body == body:
            return kept
        return None

    def _keep_again(self, user_id: str, kept: _Kept) -> None:
        """Puts back a profile this store wrote or read (unless it wrote the user's profile
        since)."""
        with self._written_lock:
            if user_id not in self._written:
                self._written[user_id] = kept
                self._written_bytes += kept.size
                self._evict()

    def _delete_body(self, user_id: str) -> TransactionBody[bool]:
        yield from self._lock(user_id)
        yield Sql("DELETE FROM penchant_events WHERE tenant = ? AND user_id = ?", (self.tenant, user_id))
        yield Sql("DELETE FROM penchant_history WHERE tenant = ? AND user_id = ?", (self.tenant, user_id))
        rows = yield Sql(
            "DELETE FROM penchant_profiles WHERE tenant = ? AND user_id = ? RETURNING user_id", (self.tenant, user_id)
        )
        return bool(rows)

    def _events_body(self, user_id: str) -> TransactionBody[list[Signal]]:
        rows = yield Sql(
            "SELECT payload FROM penchant_events WHERE tenant = ? AND user_id = ? ORDER BY seq", (self.tenant, user_id)
        )
        return [self.serializer.decode_signal(payload) for (payload,) in rows]

    def _user_ids_body(self, after: str | None, limit: int) -> TransactionBody[list[str]]:
        rows = yield Sql(
            """SELECT user_id FROM (
                   SELECT user_id FROM penchant_profiles WHERE tenant = ?
                   UNION SELECT user_id FROM penchant_events WHERE tenant = ?
               ) AS users WHERE user_id > ? ORDER BY user_id LIMIT ?""",
            (self.tenant, self.tenant, "" if after is None else after, limit),
        )
        return [r[0] for r in rows]

    # -- operations used by the tiered store ---------------------------------------------------------

    def _encode_payloads(self, by_user: dict[str, list[Signal]]) -> dict[str, bytes]:
        return {s.event_id: self.serializer.encode_signal(s) for signals in by_user.values() for s in signals}

    def _apply_changes_op(
        self,
        by_user: dict[str, list[Signal]],
        while_writing: Callable[[list[AppliedChange]], None] | None = None,
        *,
        fields: bool = False,
    ) -> Op[dict[str, AppliedChange]]:
        """Applies the events; ``while_writing``, if the database works on the writes while this
        process goes on, is called then with the changes being written (a tiered store prepares
        its Redis commands): at most once per way of writing tried. A one-statement write that
        does not happen commits nothing, and the transaction that follows writes changes of its
        own: the changes committed are the objects answered. ``fields``: each change carries its
        :attr:`AppliedChange.fields`."""
        payloads = self._encode_payloads(by_user)  # a signal that cannot be stored fails before any write
        yield from self._ready()
        if len(by_user) == 1:
            ((user_id, signals),) = by_user.items()
            done = yield from self._write_one_op(user_id, signals, payloads, fields, while_writing)
            if done is not None:
                return {user_id: done}
        changes: dict[str, AppliedChange] = yield self._db.transaction(
            self._apply_body(by_user, payloads, while_writing, fields), write=True
        )
        return changes

    def _write_one_op(
        self,
        user_id: str,
        signals: list[Signal],
        payloads: dict[str, bytes],
        fields: bool = False,
        while_writing: Callable[[list[AppliedChange]], None] | None = None,
    ) -> Op[AppliedChange | None]:
        """The events of one user applied to the profile this store wrote last (or, if it holds
        none, reads now in one statement: :meth:`_read_one_op`; a new one if there is none) and
        written in one statement (:meth:`_Database.write_one`), if the database can, the row
        still holds that profile (or, for a new one, there is still none) and every event is
        new; else ``None``, and nothing written (the profile kept is put back for the
        transaction that follows, unless the row changed).
        Events that were all logged before (delivered again) to a profile that exists are
        answered by :meth:`_unchanged_op`, with no transaction. While the database runs the statement, the
        caller's copy is made and ``while_writing`` called with it: through every tier, 1,500
        writes alternating in blocks of 150 with and without that took a median 903-1,034 µs
        against 1,023-1,247 µs."""
        if not self._db.writes_one_user_at_once or len(signals) > _CHUNK:
            return None
        with self._written_lock:
            held = user_id in self._written
        read = None if held else (yield from self._read_one_op(user_id))
        if not held and read is None:
            return None
        recorded_at = time.time()
        early = self._apply_ahead(user_id, signals, read)
        if early is None:
            return None
        statement = self._db.write_one(
            self.tenant,
            f"{self.tenant}\x1f{user_id}",
            (early.version, early.before.body),
            early.change,
            recorded_at,
            [(s.event_id, s.user_id, s.timestamp, payloads[s.event_id]) for s in signals],
        )
        applied: AppliedChange | None = None

        def meanwhile() -> None:
            # What fails here is made again (or fails) once the answer says the write happened.
            nonlocal applied
            with contextlib.suppress(Exception):
                applied = self._applied(early.version, early.landmark, early.change, signals, fields)
                if while_writing is not None:
                    while_writing([applied])

        rows = None if statement is None else (yield self._db.statement(statement, meanwhile))
        if rows is None:  # not written in one statement: events delivered again?
            return (yield from self._unchanged_op(user_id, signals, early, tried=statement is not None))
        if not rows[0][0]:  # another writer changed the row: what this store held is stale
            return None
        if applied is None:
            applied = self._applied(early.version, early.landmark, early.change, signals, fields)
        self._remember([early.change])  # (another thread may change it from then on)
        return applied

    def _read_one_op(self, user_id: str) -> Op[_Kept | None]:
        """``user_id``'s profile read in one statement (:meth:`_Database.read_one`), as this
        store keeps the profiles it wrote, for the write in one statement that follows: a write
        of a user the store does not hold takes two statements, not a transaction of several
        round trips (a profile read so may be kept for the transaction that follows: its guards
        check it as they check one written). No profile: a new one, with an empty body, which
        the write inserts unless one is there by then. ``None`` when the database has no such
        statement, or the history rows must be written anew: the transaction does that."""
        statement = self._db.read_one(self.tenant, user_id)
        if statement is None:
            return None
        rows = yield self._db.statement(statement)
        if not rows:
            return _Kept(b"", UserProfile(user_id=user_id), 0, 0, 0, [])
        version, body, first, count, last, joined, lowest = rows[0]
        history = None
        if count:
            history = _History(int(first), int(count), bytes(joined))
            if int(last) - history.base + 1 != history.count:
                return None
        body = bytes(body)
        profile, base = self._decode_profile(version, body, history)
        if base is None:
            return None
        encoded = [] if history is None else self.serializer.history_entries(history.count, history.joined)
        size = len(body) + (0 if history is None else len(history.joined))
        # The rows below the window that wait to be trimmed (TRIM_AFTER) are known from the
        # lowest: the write deletes them only once enough gathered, as for a profile it wrote.
        floor = base if lowest is None else min(int(lowest), base)
        return _Kept(body, profile, base, floor, size, encoded)

    def _unchanged_op(
        self, user_id: str, signals: list[Signal], early: _Ahead, *, tried: bool
    ) -> Op[AppliedChange | None]:
        """After a one-statement write of ``early`` that did not happen (``tried``: an event
        logged already stopped it; else it was not tried, the change rewriting the history):
        the caller's copy of the profile this store kept, if every event was logged already and
        the row still holds that profile (events delivered again change nothing, and no
        transaction runs); else ``None``, and what was kept is put back for the transaction that
        follows, unless the row changed. A change not tried is asked about only if every event
        id appears in the kept history's encoding (a replay of recent events): a new event
        older than the newest entry goes to the transaction at once."""
        if not early.before.body:  # a profile that was to be created: the transaction decides
            return None
        before = early.kept(self.serializer)
        packed = self.serializer.pack_history(before.history)
        ids = list(dict.fromkeys(s.event_id for s in signals))
        check = None
        if tried or all(i.encode("utf-8", "surrogatepass") in packed for i in ids):
            check = self._db.logged_already(self.tenant, user_id, (early.version, before.body), ids)
        rows = None if check is None else (yield self._db.statement(check))
        logged, held = rows[0] if rows else (0, check is None)
        if not held:  # another writer changed the row: what this store held is stale
            return None
        self._keep_again(user_id, before)
        if logged < len(ids):
            return None  # some are new: the transaction applies them to the row
        copy_ = self.serializer.decode_with_history(before.body, packed)
        return AppliedChange(copy_.version, copy_.landmark, copy_, b"", b"", [])

    def _applied(
        self, old_version: int, old_landmark: float, change: _Written, fresh: list[Signal], fields: bool = False
    ) -> AppliedChange:
        """What a change did, for the caller: its own copy of the profile, made from the parts
        (the history stays encoded until read); the store keeps ``change.profile``."""
        copy_ = self.serializer.decode_with_history(change.body, change.packed)
        follow = self.serializer.follow_fields(change.profile, old_version, old_landmark, fresh) if fields else None
        return AppliedChange(
            old_version, old_landmark, copy_, change.body, change.packed, fresh, change.entries, follow
        )

    def _remember(self, written: list[_Written]) -> None:
        """Keeps the profiles just written for their users' next writes."""
        with self._written_lock:
            for change in written:
                user_id = change.profile.user_id
                old = self._written.pop(user_id, None)
                if old is not None:
                    self._written_bytes -= old.size
                if not self.serializer.history_is_encoded(change.profile):
                    self.serializer.keep_history_encoded(change.profile, change.packed)
                self._written[user_id] = _Kept(
                    change.body, change.profile, change.base, change.floor, change.size, change.history
                )
                self._written_bytes += change.size
            self._evict()

    def _put_encoded_op(self, profile: UserProfile, expected_version: int | None) -> Op[Stored]:
        stored, _ = self.serializer.checked_copy(profile)
        yield from self._ready()
        result: Stored = yield self._db.transaction(self._put_body(stored, expected_version), write=True)
        return result

    def _put_many_encoded_op(self, profiles: list[UserProfile]) -> Op[list[Stored]]:
        checked = [self.serializer.checked_copy(p)[0] for p in profiles]
        yield from self._ready()
        result: list[Stored] = yield self._db.transaction(self._put_many_body(checked), write=True)
        return result

    def _events_op(self, user_id: str) -> Op[list[Signal]]:
        yield from self._ready()
        events: list[Signal] = yield self._db.transaction(self._events_body(user_id), write=False)
        return events

    def _user_ids_op(self, after: str | None, limit: int) -> Op[list[str]]:
        yield from self._ready()
        ids: list[str] = yield self._db.transaction(self._user_ids_body(after, limit), write=False)
        return ids

    # -- ProfileStore operations ------------------------------------------------------------------

    def _get_op(self, user_id: str, *, shared: bool) -> Op[UserProfile | None]:
        found = yield from self._get_many_op([user_id], shared=shared)
        return found.get(user_id)

    def _get_many_op(self, user_ids: list[str], *, shared: bool) -> Op[dict[str, UserProfile]]:
        yield from self._ready()
        found: dict[str, UserProfile] = yield self._db.transaction(self._select_profiles(user_ids), write=False)
        return found

    def _put_op(self, profile: UserProfile, expected_version: int | None) -> Op[UserProfile]:
        stored, _, _ = yield from self._put_encoded_op(profile, expected_version)
        return stored

    def _put_many_op(self, profiles: list[UserProfile]) -> Op[list[UserProfile]]:
        stored = yield from self._put_many_encoded_op(profiles)
        by_id = {p.user_id: p for p, _, _ in stored}
        return [by_id[p.user_id] for p in profiles]

    def _delete_op(self, user_id: str) -> Op[bool]:
        yield from self._ready()
        existed: bool = yield self._db.transaction(self._delete_body(user_id), write=True)
        return existed

    def _apply_feedback_op(self, user_id: str, signals: list[Signal]) -> Op[UserProfile]:
        changes = yield from self._apply_changes_op({user_id: signals})
        return changes[user_id].profile

    def _apply_feedback_many_op(self, by_user: dict[str, list[Signal]]) -> Op[dict[str, int]]:
        changes = yield from self._apply_changes_op(by_user)
        return {user_id: change.profile.version for user_id, change in changes.items()}

    def _close_op(self) -> Op[None]:
        yield _Close(self._db)


class SQLiteProfileStore(SQLProfileStore):
    """Profiles and the event log in one SQLite file (WAL mode, so readers never block the
    writer and several processes can share the file).

    ``synchronous="FULL"`` (the default) makes every acknowledged write survive a power loss;
    ``"NORMAL"`` is faster and survives a crash of the process but not of the machine.
    ``busy_timeout`` is how long a writer waits for another process's write lock.
    ``cache_mib`` bounds SQLite's page cache (taken as pages are read, not at once): SQLite's
    own default, 2 MiB, held too few of the pages that a stream of writes touches (see
    :data:`SQLITE_CACHE_MIB`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        tenant: str = DEFAULT_TENANT,
        model: InterestModel | None = None,
        serializer: ProfileSerializer | None = None,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        cache_mib: int = SQLITE_CACHE_MIB,
    ) -> None:
        self.path = os.fspath(path)
        if not self.path or "\x00" in self.path:
            raise ValidationError(f"invalid SQLite path {self.path!r}")
        super().__init__(
            _SQLiteDatabase(self.path, synchronous=synchronous, busy_timeout=busy_timeout, cache_mib=cache_mib),
            tenant=tenant,
            model=model,
            serializer=serializer,
        )

    def __repr__(self) -> str:
        return f"SQLiteProfileStore({self.path!r}, tenant={self.tenant!r})"


class PostgresProfileStore(SQLProfileStore):
    """Profiles and the event log in PostgreSQL, through psycopg 3 connection pools (a sync
    pool, and an async pool per event loop, both opened on first use).

    ``url`` is a libpq connection string or ``postgresql://`` URL. Writers of one user are
    serialised by a transaction-scoped advisory lock, so concurrent processes never lose an
    update and never deadlock (batches lock users in one order).
    """

    def __init__(
        self,
        url: str,
        *,
        tenant: str = DEFAULT_TENANT,
        model: InterestModel | None = None,
        serializer: ProfileSerializer | None = None,
        min_pool_size: int = 1,
        max_pool_size: int = 10,
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ValidationError("a PostgreSQL URL is required")
        self.url = url
        super().__init__(
            _PostgresDatabase(url, min_size=min_pool_size, max_size=max_pool_size, timeout=timeout),
            tenant=tenant,
            model=model,
            serializer=serializer,
        )

    def __repr__(self) -> str:
        return f"PostgresProfileStore(<url>, tenant={self.tenant!r})"
