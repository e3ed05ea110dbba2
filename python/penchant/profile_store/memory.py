"""Profiles in this process: a bounded LRU map with a TTL (the first tier of the tiered store,
and a store of its own for tests and single-process use)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from penchant.errors import ConflictError, ValidationError
from penchant.feedback_collector import Signal
from penchant.profile_store._base import DEFAULT_TENANT, ProfileStore
from penchant.profile_store._effects import Op, immediate
from penchant.profile_store.serializer import ProfileSerializer
from penchant.user_profile import InterestModel, UserProfile

__all__ = ["InMemoryProfileStore"]

DEFAULT_MAX_EVENT_IDS = 10_000
"""Event ids remembered per user for idempotency (the most recent ones)."""

FORGOTTEN_SECONDS = 5.0
"""How long at least the cache remembers an invalidation it handled
(:meth:`InMemoryProfileStore.forget`), so that a copy read before it and handed over after it is
refused (reads take milliseconds). Older ones are dropped by later invalidations, a few at a
time, or by :meth:`~InMemoryProfileStore.clear`; once one is dropped, a read that began before
it is refused whatever it read. Each remembered one takes ~300 bytes."""

MAX_FORGOTTEN = 100_000
"""The most invalidations remembered at once, one per user (~30 MB)."""

_PRUNE_AT_ONCE = 8
"""Invalidations no longer remembered that one :meth:`~InMemoryProfileStore.forget` drops at
most (each adds one), so that none holds the lock long after a burst."""


class _Entry:
    __slots__ = ("applied", "data", "expires_at", "history", "shared", "version")

    def __init__(
        self, data: bytes, version: int, expires_at: float, applied: dict[str, None], history: bytes | None = None
    ) -> None:
        self.data = data  # the encoded profile: each `get` decodes its own copy from it
        self.history = history  # if not None: `data` is encoded without its history, and this is it
        self.shared: UserProfile | None = None  # decoded once, for `get_shared`
        self.version = version
        self.expires_at = expires_at
        self.applied = applied


class InMemoryProfileStore(ProfileStore):
    """Profiles in an LRU map guarded by one lock.

    ``max_entries`` bounds the number of profiles (the least recently used goes first) and
    ``ttl`` (seconds) drops idle ones; ``None`` disables either bound. With ``sliding`` (the
    default) every read and write restarts the TTL; without it only writes (and ``touch``) do,
    so that the TTL bounds the age of a copy however often it is read (a cache's bound on
    staleness). Profiles are kept encoded, so no caller can change a stored profile by accident:
    :meth:`get` decodes a fresh copy, :meth:`get_shared` decodes once and hands the same object
    to every reader. Idempotency remembers the last ``max_event_ids`` event ids of each user
    while the user stays in the map.
    """

    def __init__(
        self,
        *,
        max_entries: int | None = 100_000,
        ttl: float | None = None,
        tenant: str = DEFAULT_TENANT,
        model: InterestModel | None = None,
        serializer: ProfileSerializer | None = None,
        max_event_ids: int = DEFAULT_MAX_EVENT_IDS,
        sliding: bool = True,
    ) -> None:
        super().__init__(tenant=tenant, model=model, serializer=serializer)
        if max_entries is not None and (
            isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1
        ):
            raise ValidationError(f"max_entries must be a positive int or None, got {max_entries!r}")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0):
            raise ValidationError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        if not isinstance(sliding, bool):
            raise ValidationError(f"sliding must be True or False, got {sliding!r}")
        self.max_entries = max_entries
        self.ttl_seconds = None if ttl is None else float(ttl)
        self.sliding = sliding
        self.max_event_ids = max_event_ids
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        # Invalidations, for remember(since=...): each forget() or clear() takes the next mark;
        # a user's entry holds its last mark, when it came, the highest version announced since
        # the user's last deletion, and the mark of that deletion (0: none remembered).
        self._marks = 0
        self._forgotten: OrderedDict[str, tuple[int, float, int, int]] = OrderedDict()
        self._horizon = 0  # reads that began before this mark are refused

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # -- the cache interface the tiered store uses ------------------------------------------------

    def lookup(self, user_id: str, *, shared: bool) -> UserProfile | None:
        """The profile if present and not expired (sliding its TTL if ``sliding``); no I/O, no
        id check."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is None:
                return None
            if entry.expires_at <= now:
                del self._entries[user_id]
                return None
            self._entries.move_to_end(user_id)
            if self.sliding and self.ttl_seconds is not None:
                entry.expires_at = now + self.ttl_seconds
            if shared and entry.shared is not None:
                return entry.shared
        profile = self._decoded(entry)
        if shared:
            entry.shared = profile  # a race only decodes twice; both copies are equal
        return profile

    def mark(self) -> int:
        """Where the invalidations stand: take it before a read whose result :meth:`remember`
        is then given with ``since``."""
        return self._marks  # no lock: an int read whole, and an older mark only refuses more

    def remember(
        self,
        profile: UserProfile,
        data: bytes | None = None,
        *,
        shared: bool = False,
        history: bytes | None = None,
        since: int | None = None,
    ) -> None:
        """Keeps a copy of ``profile`` (encoded as ``data`` when the caller has that already: its
        whole encoding, or with ``history``, ``ProfileSerializer.encode_apart``'s body and the
        packed history) unless a newer version is already here. With ``shared``, ``profile``
        itself becomes the object that :meth:`lookup` shares: the caller hands it over and must
        not change it. With ``since`` (a :meth:`mark` taken before ``profile`` was read), a copy
        that an invalidation handled meanwhile made stale is refused: the user was forgotten
        below a higher version, or deleted, or everything was cleared."""
        if data is None:
            data, history = self.serializer.encode(profile), None
        with self._lock:
            if since is not None and self._marks != since:
                if since < self._horizon:
                    return
                forgotten = self._forgotten.get(profile.user_id)
                if forgotten is not None and (
                    forgotten[3] > since or (forgotten[0] > since and profile.version < forgotten[2])
                ):
                    return
            current = self._entries.get(profile.user_id)
            if current is not None and current.version > profile.version:
                return
            applied = current.applied if current is not None else {}
            entry = _Entry(data, profile.version, self._expiry(), applied, history)
            if shared:
                entry.shared = profile
            self._store(profile.user_id, entry)

    def _decoded(self, entry: _Entry) -> UserProfile:
        if entry.history is None:
            return self.serializer.decode(entry.data)
        return self.serializer.decode_with_history(entry.data, entry.history)

    def forget(self, user_id: str, *, below_version: int | None = None) -> None:
        """Drops the user's entry (only if older than ``below_version`` when given: else the user
        was deleted), and refuses for a while (:data:`FORGOTTEN_SECONDS`) what reads that began
        before now hand over for that user: copies older than ``below_version``, or any copy
        after a deletion (see :meth:`remember`)."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is not None and (below_version is None or entry.version < below_version):
                del self._entries[user_id]
            self._marks += 1
            forgotten = self._forgotten
            _, _, floor, deleted = forgotten.pop(user_id, (0, 0.0, 0, 0))
            if below_version is None:  # versions start afresh after a deletion
                floor, deleted = 0, self._marks
            else:
                floor = max(floor, below_version)
            forgotten[user_id] = (self._marks, now, floor, deleted)
            for _ in range(_PRUNE_AT_ONCE):
                oldest = next(iter(forgotten.values()), None)
                if oldest is None or (len(forgotten) <= MAX_FORGOTTEN and now - oldest[1] < FORGOTTEN_SECONDS):
                    break
                forgotten.popitem(last=False)
                self._horizon = max(self._horizon, oldest[0])

    def clear(self) -> None:
        """Drops every entry, and refuses the copies that reads that began before now hand over."""
        with self._lock:
            self._entries.clear()
            self._marks += 1
            self._horizon = self._marks
            self._forgotten.clear()

    # -- ProfileStore operations ------------------------------------------------------------------

    def _get_op(self, user_id: str, *, shared: bool) -> Op[UserProfile | None]:
        return immediate(self.lookup(user_id, shared=shared))

    def _put_op(self, profile: UserProfile, expected_version: int | None) -> Op[UserProfile]:
        stored, _ = self.serializer.checked_copy(profile)
        with self._lock:
            current = self._live(profile.user_id)
            current_version = 0 if current is None else current.version
            if expected_version is not None and expected_version != current_version:
                raise ConflictError(
                    f"profile {profile.user_id!r} is at version {current_version}, not {expected_version}"
                )
            stored.version = current_version + 1
            applied = current.applied if current is not None else {}
            self._store(
                profile.user_id, _Entry(self.serializer.encode(stored), stored.version, self._expiry(), applied)
            )
        return immediate(stored)

    def _delete_op(self, user_id: str) -> Op[bool]:
        with self._lock:
            return immediate(self._entries.pop(user_id, None) is not None)

    def _apply_feedback_op(self, user_id: str, signals: list[Signal]) -> Op[UserProfile]:
        with self._lock:
            current = self._live(user_id)
            # Work on a copy so that a failure leaves the stored profile as it was.
            profile = UserProfile(user_id=user_id) if current is None else self._decoded(current)
            applied = {} if current is None else current.applied
            fresh = [s for s in signals if s.event_id not in applied]
            if not fresh:
                return immediate(profile)
            self.model.apply(profile, fresh)
            data = self.serializer.encode(profile)
            applied = dict(applied)
            applied.update(dict.fromkeys(s.event_id for s in fresh))
            while len(applied) > self.max_event_ids:
                del applied[next(iter(applied))]
            self._store(user_id, _Entry(data, profile.version, self._expiry(), applied))
        return immediate(profile)

    def _touch_op(self, user_id: str) -> Op[bool]:
        with self._lock:
            entry = self._live(user_id)
            if entry is not None:
                entry.expires_at = self._expiry()
                self._entries.move_to_end(user_id)
            return immediate(entry is not None)

    def _ttl_op(self, user_id: str) -> Op[float | None]:
        with self._lock:
            entry = self._live(user_id)
            if entry is None or self.ttl_seconds is None:
                return immediate(None)
            return immediate(max(0.0, entry.expires_at - time.monotonic()))

    def _close_op(self) -> Op[None]:
        self.clear()
        return immediate(None)

    # -- helpers (called with the lock held) --------------------------------------------------------

    def _live(self, user_id: str) -> _Entry | None:
        entry = self._entries.get(user_id)
        if entry is not None and entry.expires_at <= time.monotonic():
            del self._entries[user_id]
            return None
        return entry

    def _expiry(self) -> float:
        return float("inf") if self.ttl_seconds is None else time.monotonic() + self.ttl_seconds

    def _store(self, user_id: str, entry: _Entry) -> None:
        self._entries[user_id] = entry
        self._entries.move_to_end(user_id)
        if self.max_entries is not None:
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
