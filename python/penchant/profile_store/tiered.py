"""The tiered store: an in-process cache in front of Redis in front of a durable SQL database.

* **Reads** try the cache, then Redis, then SQL, and fill the tiers above the one that answered.
* **Writes** reach SQL first (the event log and the snapshot, in one transaction), then Redis,
  then the cache: once a call returns, its events are durable, whatever happens to Redis.
  Redis is brought along with the fewest commands: the same forward-decay additions as SQL made,
  guarded by the version Redis must hold; when it does not hold it, the script removes Redis's
  copy (readers fill it from SQL), and a store that waited for the reply writes the whole
  snapshot.
  ``apply_feedback`` sends those commands and returns without waiting for Redis's reply (sync
  API, single server; ``wait_for_redis=True`` waits): the store's next operation that uses
  Redis reads it first, so the store finds its own changes there (:meth:`flush` reads it at
  once; see :mod:`penchant.profile_store._deferred`). Until Redis has run the commands, another
  process can read the version before from Redis, as it could while a waiting write was in
  flight.
* **Invalidation** of other processes' caches uses Redis **pub/sub**: every change is published
  (from inside the Lua script that makes it) on ``penchant:invalidate:<tenant>`` as
  ``version␟user_id`` (a batch through the tiered store: one message after its scripts, the
  records joined by ``␞``). Each tiered store subscribes once and drops cached copies older than
  the announced version. No thread waits for these messages: every read or write of a profile
  first reads, without waiting, whatever has arrived (at most once a millisecond), so a call
  finds no cached copy whose invalidation reached the process more than a millisecond before it
  (see :mod:`penchant.profile_store._invalidation`). We chose pub/sub over RESP3 client-side
  caching because it works the same on one server and on a cluster, with the sync and the async
  client, and because what we cache is a decoded profile rather than the replies of individual
  commands. When the loss of the subscription's connection is noticed the cache is cleared, and
  again once it is subscribed anew, since messages may have been missed; a cache TTL bounds
  staleness in any case.
* **Redis outages** do not stop the store: reads and writes go on against SQL and the cache,
  one warning is logged per outage, and :meth:`TieredProfileStore.stats` counts failures.
  Redis is retried after ``retry_interval`` seconds; when it answers again, the profiles written
  meanwhile are copied into it from SQL. :meth:`TieredProfileStore.rebuild` replays the whole
  event log into Redis.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from penchant._validate import check_id
from penchant.errors import StoreUnavailableError, ValidationError
from penchant.feedback_collector import Signal
from penchant.profile_store._base import ProfileStore
from penchant.profile_store._deferred import DeferredReplies, SendDeferred, SettleDeferred
from penchant.profile_store._effects import Op, run_async, run_sync
from penchant.profile_store._invalidation import ChannelReader
from penchant.profile_store.memory import InMemoryProfileStore
from penchant.profile_store.redis_store import (
    INVALIDATION_SEPARATOR,
    Calls,
    RedisBatch,
    RedisProfileStore,
    StreamedCalls,
)
from penchant.profile_store.sql_store import AppliedChange, SQLProfileStore, Stored
from penchant.user_profile import UserProfile

__all__ = ["RebuildReport", "TierStats", "TieredProfileStore"]

logger = logging.getLogger("penchant.profile_store")

T = TypeVar("T")

MAX_PENDING_REFILLS = 100_000
"""Users remembered for a refill after a Redis outage; beyond that, run ``rebuild``."""


def _same(made: list[AppliedChange], changed: list[AppliedChange]) -> bool:
    """Whether Redis's commands ``made`` for some changes are those for ``changed``: the same
    change objects, in the same order."""
    return len(made) == len(changed) and all(map(operator.is_, made, changed))


def _stale_reply(reply: Any) -> bool:
    """Whether a follow script found Redis at another version than expected."""
    return reply[0] not in (b"ok", "ok")


@dataclass
class TierStats:
    """Counters of a tiered store since it was opened."""

    cache_hits: int = 0
    cache_misses: int = 0
    redis_hits: int = 0
    redis_misses: int = 0
    sql_reads: int = 0
    redis_failures: int = 0
    """Redis calls that failed (each outage logs one warning), and batches of changes whose
    replies were lost."""
    redis_skipped: int = 0
    """Redis calls not attempted because Redis was down."""
    redis_stale_fallbacks: int = 0
    """Feedback that found Redis at an unexpected version (Redis's copy was removed; the whole
    profile was written when the store waited for the reply)."""
    redis_refills: int = 0
    """Profiles copied from SQL into Redis after an outage, or after their change's reply was
    lost."""
    invalidations: int = 0
    """Invalidation messages received from other processes."""


@dataclass(frozen=True)
class RebuildReport:
    """What :meth:`TieredProfileStore.rebuild` did."""

    users: int
    events: int


class _NotSent(Exception):
    """Redis's commands cannot be sent without waiting for their replies here."""


class _Skipped:
    """Redis was down, or failed: the step did not happen."""


_SKIPPED = _Skipped()


class _RedisHealth:
    """A circuit breaker: after a failure, Redis is left alone for ``retry_interval`` seconds."""

    def __init__(self, retry_interval: float) -> None:
        self.retry_interval = retry_interval
        self.down_since: float | None = None
        self._next_try = 0.0

    @property
    def is_down(self) -> bool:
        return self.down_since is not None

    def should_try(self) -> bool:
        return self.down_since is None or time.monotonic() >= self._next_try

    def failed(self) -> bool:
        """Records a failure; whether it starts an outage."""
        self._next_try = time.monotonic() + self.retry_interval
        if self.down_since is None:
            self.down_since = time.monotonic()
            return True
        return False

    def succeeded(self) -> bool:
        """Records a success; whether it ends an outage."""
        if self.down_since is None:
            return False
        self.down_since = None
        return True


class TieredProfileStore(ProfileStore):
    """In-process cache → Redis → SQL (see the module documentation).

    ``database`` is the durable tier and required; ``redis`` and ``cache`` are optional. All
    tiers must share one tenant and one :class:`~penchant.user_profile.InterestModel`.
    ``retry_interval`` is how long Redis is left alone after a failure. ``wait_for_redis``:
    whether ``apply_feedback`` waits for Redis's reply before it returns (by default it reads
    it at the store's next operation; see the module documentation).
    """

    def __init__(
        self,
        database: SQLProfileStore,
        redis: RedisProfileStore | None = None,
        cache: InMemoryProfileStore | None = None,
        *,
        retry_interval: float = 1.0,
        listen: bool = True,
        wait_for_redis: bool = False,
    ) -> None:
        if not isinstance(database, SQLProfileStore):
            raise ValidationError(f"database must be an SQL store, got {type(database).__name__}")
        super().__init__(tenant=database.tenant, model=database.model, serializer=database.serializer)
        for tier in (redis, cache):
            if tier is None:
                continue
            if tier.tenant != database.tenant:
                raise ValidationError(f"every tier must serve tenant {database.tenant!r}; one serves {tier.tenant!r}")
            if tier.model is not database.model:
                raise ValidationError("every tier must share the database tier's InterestModel")
        if redis is not None and not redis.channel and cache is not None:
            raise ValidationError("a Redis tier must publish invalidations (publish=True) for the cache tier")
        if not isinstance(wait_for_redis, bool):
            raise ValidationError(f"wait_for_redis must be a bool, got {wait_for_redis!r}")
        self.database = database
        self.redis = redis
        self.cache = cache
        self.counters = TierStats()
        self._health = _RedisHealth(retry_interval)
        self._pending: dict[str, bool] = {}  # user -> deleted? while Redis missed a change
        self._pending_lock = threading.Lock()
        self._listen = listen and redis is not None and cache is not None
        self._listener: ChannelReader | None = None
        self._listener_lock = threading.Lock()
        self._deferred: DeferredReplies[list[str]] | None = (
            None if redis is None or wait_for_redis else DeferredReplies(redis.connection)
        )

    def __repr__(self) -> str:
        return f"TieredProfileStore(cache={self.cache!r}, redis={self.redis!r}, database={self.database!r})"

    # -- observability --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters since the store was opened, and whether Redis is down now. Replies to
        ``apply_feedback`` that were not read yet are not counted (:meth:`flush` reads them)."""
        return {**asdict(self.counters), "redis_down": self._health.is_down, "pending_refills": len(self._pending)}

    @property
    def redis_is_down(self) -> bool:
        return self._health.is_down

    def flush(self) -> None:
        """Waits until Redis has run every change this store sent it without waiting for the
        reply (see the module documentation), and acts on the replies. Other operations that
        use Redis do this first by themselves."""
        run_sync(self._settle())

    async def aflush(self) -> None:
        await run_async(self._settle())

    def wait_until_listening(self, timeout: float = 5.0) -> bool:
        """Subscribes to the invalidation channel if needed and waits until it is subscribed."""
        listener = self._ensure_listener()
        return listener is None or listener.subscribed.wait(timeout)

    def _ensure_listener(self) -> ChannelReader | None:
        if self._listener is None and self._listen:
            with self._listener_lock:  # shared with close()
                if self._listener is None and self._listen:
                    assert self.redis is not None
                    assert self.cache is not None
                    self._listener = ChannelReader(
                        self.redis.channel, self.redis.connection.pubsub_client, self._invalidate, self.cache.clear
                    )
        return self._listener

    def _catch_up(self) -> int | None:
        """Drops the cached copies that invalidations arrived for (see the module documentation),
        and returns where the cache's invalidations then stand (``InMemoryProfileStore.mark``):
        what the operation reads afterwards is cached only if no invalidation handled meanwhile
        made it stale (by another thread or task of this process)."""
        listener = self._ensure_listener()
        if listener is not None:
            listener.catch_up()
        return None if self.cache is None else self.cache.mark()

    def _invalidate(self, data: bytes) -> None:
        """Handles one invalidation message: ``version␟user_id`` records joined by ``␞``."""
        cache = self.cache
        assert cache is not None
        for record in data.decode("utf-8", "surrogatepass").split(INVALIDATION_SEPARATOR):
            version, _, user_id = record.partition("\x1f")
            self.counters.invalidations += 1
            if version == "-":
                cache.forget(user_id)
            else:
                cache.forget(user_id, below_version=int(version))

    # -- Redis steps that may not happen ----------------------------------------------------------

    def _redis_step(self, op: Op[T]) -> Op[T | _Skipped]:
        """Runs a Redis operation unless Redis is down; a failure marks it down (and returns
        ``_SKIPPED``); the first success after an outage refills Redis."""
        if not self._health.should_try():
            op.close()
            self.counters.redis_skipped += 1
            return _SKIPPED
        try:
            value = yield from op
        except StoreUnavailableError as exc:
            self.counters.redis_failures += 1
            if self._health.failed():
                logger.warning("%s; serving from SQL and the in-process cache until it answers", exc)
            return _SKIPPED
        if self._health.succeeded():
            yield from self._after_outage()
        return value

    def _after_outage(self) -> Op[None]:
        if self.cache is not None:
            self.cache.clear()  # invalidation messages were missed while Redis was down
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        refilled = yield from self._refill(pending)
        logger.warning("Redis is back: %d profiles written during the outage were copied into it", refilled)

    def _refill(self, pending: dict[str, bool]) -> Op[int]:
        users = list(pending)
        refilled = 0
        try:
            for start in range(0, len(users), 500):
                refilled += yield from self._copy_from_sql(users[start : start + 500])
        except Exception as exc:  # an error reply (OOM, say) too: they wait for the next refill
            self._mark_pending({u: pending[u] for u in users})
            if self._health.failed():
                logger.warning("Redis failed again while being refilled (%s)", exc)
        return refilled

    def _copy_from_sql(self, users: list[str]) -> Op[int]:
        """Writes ``users`` into Redis as SQL holds them now (removes those SQL does not hold)."""
        found = yield from self.database._get_many_op(users, shared=False)
        return (yield from self._copy_calls(users, found))

    def _copy_calls(self, users: list[str], found: dict[str, UserProfile]) -> Op[int]:
        """Writes ``found`` into Redis, and removes the rest of ``users``."""
        assert self.redis is not None
        calls = []
        for user_id in users:
            profile = found.get(user_id)
            if profile is not None:
                calls.append(self.redis._write_call("fill", profile, str(profile.version)))
            else:  # deleted meanwhile
                calls.append(self.redis._delete_call(user_id))
        yield RedisBatch(self.redis.connection, calls)
        self.counters.redis_refills += len(users)
        return len(users)

    def _mark_pending(self, users: dict[str, bool]) -> None:
        with self._pending_lock:
            if len(self._pending) + len(users) > MAX_PENDING_REFILLS:
                logger.error("too many profiles missed Redis during this outage: run rebuild() when it is back")
                return
            self._pending.update(users)

    def _settle(self) -> Op[None]:
        """Reads the replies to the changes sent to Redis without waiting (see the module
        documentation) and acts on them; nothing to do, it yields nothing. A profile Redis did
        not hold at the version expected is not written whole, as when the reply is read at
        once: the script removed Redis's copy, and what the change held may be old by now. The
        profiles of changes whose replies were lost are copied from SQL as it holds them now."""
        deferred = self._deferred
        if deferred is None or not deferred.waiting:
            return
        settled = yield SettleDeferred(deferred)
        for users, replies in settled.answered:
            self.counters.redis_stale_fallbacks += sum(map(_stale_reply, replies[: len(users)]))
        if settled.lost:
            self.counters.redis_failures += len(settled.lost)
            remaining = list(dict.fromkeys(user_id for users in settled.lost for user_id in users))
            logger.log(
                logging.WARNING if settled.unexpected else logging.INFO,
                "Redis did not answer the changes of %d users as expected (%s): copying them from SQL",
                len(remaining),
                settled.error,
            )
            try:
                while remaining:
                    chunk = remaining[:500]
                    found = yield from self.database._get_many_op(chunk, shared=False)
                    copied = yield from self._redis_step(self._copy_calls(chunk, found))
                    if isinstance(copied, _Skipped):
                        break
                    remaining = remaining[500:]
            except Exception as exc:  # this operation goes on; the refill after the outage copies them
                self.counters.redis_failures += 1
                if self._health.failed():
                    logger.warning("copying users from SQL into Redis failed (%s); Redis is left alone for now", exc)
            finally:  # also when the operation is abandoned (a cancelled task)
                if remaining:
                    self._mark_pending(dict.fromkeys(remaining, False))

    # -- reads -----------------------------------------------------------------------------------

    def get_shared(self, user_id: str) -> UserProfile | None:
        # The hot path: no operation is built for a cache hit (unless Redis is down: the
        # operation probes it).
        listener = self._listener
        if listener is not None:
            listener.catch_up()
        if self.cache is not None and self._health.down_since is None:
            hit = self.cache.lookup(check_id(user_id), shared=True)
            if hit is not None:
                self.counters.cache_hits += 1
                return hit
        return run_sync(self._get_op(check_id(user_id), shared=True))

    async def aget_shared(self, user_id: str) -> UserProfile | None:
        listener = self._listener
        if listener is not None:
            listener.catch_up()
        if self.cache is not None and self._health.down_since is None:
            hit = self.cache.lookup(check_id(user_id), shared=True)
            if hit is not None:
                self.counters.cache_hits += 1
                return hit
        return await run_async(self._get_op(check_id(user_id), shared=True))

    def _get_op(self, user_id: str, *, shared: bool) -> Op[UserProfile | None]:
        found = yield from self._get_many_op([user_id], shared=shared)
        return found.get(user_id)

    def _get_many_op(self, user_ids: list[str], *, shared: bool) -> Op[dict[str, UserProfile]]:
        since = self._catch_up()
        if self.redis is not None and self._health.is_down and self._health.should_try():
            yield from self._settle()
            # Reads the cache answers never reach Redis: without a probe, a process that only
            # reads cached profiles would learn that Redis is back (and drop the copies whose
            # invalidations it missed) only when its listener subscribes again.
            yield from self._redis_step(self._redis_batch([("PING",)]))
        found: dict[str, UserProfile] = {}
        missing = user_ids
        if self.cache is not None:
            missing = []
            for user_id in user_ids:
                hit = self.cache.lookup(user_id, shared=shared)
                if hit is None:
                    missing.append(user_id)
                else:
                    found[user_id] = hit
            self.counters.cache_hits += len(found)
            self.counters.cache_misses += len(missing)
        if not missing:
            return found
        if self.redis is not None:
            yield from self._settle()  # Redis has run this process's changes
            from_redis = yield from self._redis_step(self.redis._get_many_op(missing, shared=False))
            if not isinstance(from_redis, _Skipped):
                self.counters.redis_hits += len(from_redis)
                self.counters.redis_misses += len(missing) - len(from_redis)
                self._remember(from_redis.values(), shared=shared, since=since)
                found.update(from_redis)
                missing = [u for u in missing if u not in from_redis]
        if not missing:
            return found
        self.counters.sql_reads += len(missing)
        from_sql = yield from self.database._get_many_op(missing, shared=False)
        if from_sql and self.redis is not None and not self._health.is_down:
            calls = [self.redis._write_call("fill", p, str(p.version)) for p in from_sql.values()]
            yield from self._redis_step(self._redis_batch(calls))
        self._remember(from_sql.values(), shared=shared, since=since)
        found.update(from_sql)
        return found

    def _remember(self, profiles: Iterable[UserProfile], *, shared: bool, since: int | None) -> None:
        if self.cache is None:
            return
        for profile in profiles:
            self.cache.remember(profile, shared=shared, since=since)

    def _redis_batch(self, calls: Calls) -> Op[list[Any]]:
        assert self.redis is not None
        replies: list[Any] = yield RedisBatch(self.redis.connection, calls)
        return replies

    # -- writes ----------------------------------------------------------------------------------

    def _write_through(self, stored: list[Stored], since: int | None) -> Op[None]:
        """After SQL accepted ``stored``: copy it into Redis (newer versions only) and the cache."""
        if self.redis is not None:
            yield from self._settle()
            calls = [self.redis._write_call("fill", p, str(p.version)) for p, _, _ in stored]
            done = yield from self._redis_step(self._redis_batch(calls))
            if isinstance(done, _Skipped):
                self._mark_pending({p.user_id: False for p, _, _ in stored})
        if self.cache is not None:
            for profile, body, history in stored:
                self.cache.remember(profile, body, history=history, since=since)

    def _put_op(self, profile: UserProfile, expected_version: int | None) -> Op[UserProfile]:
        since = self._catch_up()
        stored = yield from self.database._put_encoded_op(profile, expected_version)
        yield from self._write_through([stored], since)
        return stored[0]

    def _put_many_op(self, profiles: list[UserProfile]) -> Op[list[UserProfile]]:
        since = self._catch_up()
        stored = yield from self.database._put_many_encoded_op(profiles)
        yield from self._write_through(stored, since)
        by_id = {p.user_id: p for p, _, _ in stored}
        return [by_id[p.user_id] for p in profiles]

    def _delete_op(self, user_id: str) -> Op[bool]:
        existed = yield from self.database._delete_op(user_id)
        if self.redis is not None:
            yield from self._settle()  # a change sent before must not bring the user back
            done = yield from self._redis_step(self.redis._delete_op(user_id))
            if isinstance(done, _Skipped):
                self._mark_pending({user_id: True})
        if self.cache is not None:
            self.cache.forget(user_id)
        return existed

    def _apply_changes_op(self, by_user: dict[str, list[Signal]]) -> Op[dict[str, AppliedChange]]:
        since = self._catch_up()
        # Redis's commands are made while PostgreSQL writes (sent only after the commit), for
        # the changes of each way of writing tried: those made for the changes committed go.
        prepared: list[tuple[list[AppliedChange], list[tuple[Any, ...]]]] = []
        prepare = (
            None
            if self.redis is None
            else (lambda changed: prepared.append((changed, list(self._follow_calls(changed)))))
        )
        changes = yield from self.database._apply_changes_op(by_user, prepare, fields=self.redis is not None)
        changed = [c for c in changes.values() if c.fresh]
        if self.redis is not None:
            # Redis has run the changes sent before this one's SQL by now: reading their replies
            # here (not first) waits for nothing.
            yield from self._settle()
        if self.redis is not None and changed:
            follow = next((calls for made, calls in reversed(prepared) if _same(made, changed)), None)
            # Else they are made as they are sent (Redis runs the first while the rest are made).
            yield from self._redis_follow(
                changed, follow if follow is not None else StreamedCalls(self._follow_calls(changed))
            )
        if self.cache is not None:
            for change in changed:
                self.cache.remember(change.profile, change.body, history=change.history, since=since)
        return changes

    def _follow_calls(self, changed: list[AppliedChange]) -> Iterator[tuple[Any, ...]]:
        """The commands that bring Redis to the versions SQL writes: what changed when Redis
        holds the version before, the whole profile otherwise. On one server, a batch is
        announced in one message after its scripts (each listener wakes once), in the same
        pipeline, which runs in order; on a cluster :meth:`_redis_follow` announces it once
        every node has answered, since the nodes run their parts in no particular order."""
        redis = self.redis
        assert redis is not None
        announce = self._batch_announcement(changed)
        for change in changed:
            yield redis._follow_call(
                change.profile,
                change.old_version,
                change.old_landmark,
                change.fresh,
                self.serializer.encode_document(change.profile),
                change.entries,
                publish=announce is None,
                fields=change.fields,
            )
        if announce is not None and not redis.connection.is_cluster:
            yield announce

    def _batch_announcement(self, changed: list[AppliedChange]) -> tuple[Any, ...] | None:
        """One message for the changes of a batch of more than one user (``None``: each
        script publishes its own, or this store publishes nothing)."""
        assert self.redis is not None
        if len(changed) < 2:
            return None
        return self.redis._announce_call((c.profile.user_id, c.profile.version) for c in changed)

    def _redis_follow(self, changed: list[AppliedChange], calls: Calls) -> Op[None]:
        """Sends ``calls`` (:meth:`_follow_calls` of ``changed``). Unless the replies are read
        later (:meth:`_settle`), a profile Redis did not hold at the version before is then
        written whole."""
        redis = self.redis
        assert redis is not None
        if self._deferred is not None:
            try:
                sent = yield from self._redis_step(self._send_deferred(changed, calls))
            except _NotSent:
                pass  # a cluster, or asyncio: the replies are waited for
            else:
                if isinstance(sent, _Skipped):
                    self._mark_pending({c.profile.user_id: False for c in changed})
                return
        replies = yield from self._redis_step(self._redis_batch(calls))
        if isinstance(replies, _Skipped):
            self._mark_pending({c.profile.user_id: False for c in changed})
            return
        announce = self._batch_announcement(changed) if redis.connection.is_cluster else None
        if announce is not None:
            yield from self._redis_step(self._redis_batch([announce]))
        stale = self._stale(changed, replies)
        if stale:
            self.counters.redis_stale_fallbacks += len(stale)
            calls = [redis._write_call("fill", c.profile, str(c.profile.version)) for c in stale]
            done = yield from self._redis_step(self._redis_batch(calls))
            if isinstance(done, _Skipped):
                self._mark_pending({c.profile.user_id: False for c in stale})

    def _send_deferred(self, changed: list[AppliedChange], calls: Calls) -> Op[None]:
        """Sends ``calls`` without waiting for their replies; raises ``_NotSent`` (before any
        I/O, so that it does not count as Redis answering) when they cannot be sent so."""
        assert self._deferred is not None
        # The batch is known by its users alone: a change's profile and entries go with it.
        if not (yield SendDeferred(self._deferred, [c.profile.user_id for c in changed], calls)):
            raise _NotSent

    @staticmethod
    def _stale(changed: list[AppliedChange], replies: list[Any]) -> list[AppliedChange]:
        """The changes whose script found Redis at another version than expected."""
        return [c for c, reply in zip(changed, replies[: len(changed)], strict=True) if _stale_reply(reply)]

    def _apply_feedback_op(self, user_id: str, signals: list[Signal]) -> Op[UserProfile]:
        changes = yield from self._apply_changes_op({user_id: signals})
        return changes[user_id].profile

    def _apply_feedback_many_op(self, by_user: dict[str, list[Signal]]) -> Op[dict[str, int]]:
        changes = yield from self._apply_changes_op(by_user)
        return {user_id: change.profile.version for user_id, change in changes.items()}

    def _touch_op(self, user_id: str) -> Op[bool]:
        if self.redis is not None:
            yield from self._settle()
            touched = yield from self._redis_step(self.redis._touch_op(user_id))
            if touched is True:
                return True
        return (yield from self._get_op(user_id, shared=True)) is not None

    def _ttl_op(self, user_id: str) -> Op[float | None]:
        if self.redis is None:
            return None
        yield from self._settle()
        ttl = yield from self._redis_step(self.redis._ttl_op(user_id))
        return None if isinstance(ttl, _Skipped) else ttl

    def _close_op(self) -> Op[None]:
        try:
            yield from self._settle()
        except Exception as exc:  # closing goes on
            logger.warning("reading Redis's last replies before closing failed: %s", exc)
        if self._deferred is not None:
            self._deferred.close()
        with self._listener_lock:
            self._listen = False
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        if self.cache is not None:
            yield from self.cache._close_op()
        if self.redis is not None:
            yield from self.redis._close_op()
        yield from self.database._close_op()

    # -- rebuild ---------------------------------------------------------------------------------

    def _replay(self, base: UserProfile | None, user_id: str, events: list[Signal]) -> UserProfile:
        """The profile that the event log gives: interests and history replayed from
        ``events``; every other field (and the version) from the SQL snapshot ``base``."""
        profile = UserProfile(user_id=user_id) if base is None else base
        version, updated_at = profile.version, profile.updated_at
        profile.interests = {}
        profile.interaction_history = []
        profile.landmark = 0.0
        profile.event_count = 0  # counted again by the replay
        self.model.apply(profile, events)
        profile.version = max(version, 1)
        if base is not None:
            profile.updated_at = updated_at
        return profile

    def _rebuild_op(self, user_ids: list[str] | None, batch_size: int) -> Op[RebuildReport]:
        redis = self.redis
        if redis is None:
            raise ValidationError("rebuild needs a Redis tier")
        yield from self._settle()
        users = events = 0
        after: str | None = None
        while True:
            if user_ids is None:
                page = yield from self.database._user_ids_op(after, batch_size)
                if not page:
                    break
                after = page[-1]
            else:
                page, user_ids = user_ids[:batch_size], user_ids[batch_size:]
                if not page:
                    break
            snapshots = yield from self.database._get_many_op(page, shared=False)
            calls = []
            for user_id in page:
                logged = yield from self.database._events_op(user_id)
                base = snapshots.get(user_id)
                if not logged and base is None:
                    calls.append(redis._delete_call(user_id))
                    continue
                profile = self._replay(base, user_id, logged) if logged else base
                assert profile is not None
                calls.append(redis._write_call("force", profile, str(profile.version)))
                users += 1
                events += len(logged)
            yield RedisBatch(redis.connection, calls)
            if self.cache is not None:
                for user_id in page:
                    self.cache.forget(user_id)
        with self._pending_lock:
            self._pending.clear()
        return RebuildReport(users=users, events=events)

    def rebuild(self, user_ids: Iterable[str] | None = None, *, batch_size: int = 500) -> RebuildReport:
        """Replays the event log into Redis: for each user of this tenant (or of ``user_ids``),
        interests and history are recomputed from the logged events and written to Redis with
        the rest of the SQL snapshot, replacing whatever Redis held. Users with neither events
        nor a snapshot are removed from Redis. Raises ``StoreUnavailableError`` if Redis or SQL
        cannot be reached."""
        return run_sync(self._rebuild_op(self._rebuild_ids(user_ids), self._batch_size(batch_size)))

    async def arebuild(self, user_ids: Iterable[str] | None = None, *, batch_size: int = 500) -> RebuildReport:
        return await run_async(self._rebuild_op(self._rebuild_ids(user_ids), self._batch_size(batch_size)))

    def _rebuild_ids(self, user_ids: Iterable[str] | None) -> list[str] | None:
        return None if user_ids is None else self._ids(user_ids)

    @staticmethod
    def _batch_size(batch_size: int) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 10_000:
            raise ValidationError(f"batch_size must be an int in [1, 10000], got {batch_size!r}")
        return batch_size
