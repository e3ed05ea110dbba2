"""The contract every profile store keeps, in a sync and an async form built from one body."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence, Sized
from types import TracebackType
from typing import Self

from penchant import _core, _gc
from penchant._validate import MAX_NAME_BYTES, MAX_USER_ID_BYTES, check_id
from penchant.errors import ValidationError
from penchant.feedback_collector import FeedbackType, Signal
from penchant.profile_store._effects import Op, immediate, run_async, run_sync
from penchant.profile_store.serializer import ProfileSerializer, check_signal
from penchant.user_profile import InterestModel, UserProfile

__all__ = ["DEFAULT_TENANT", "ProfileStore", "group_signals"]

DEFAULT_TENANT = "default"


def group_signals(signals: Iterable[Signal], user_id: str | None = None) -> dict[str, list[Signal]]:
    """``signals`` validated, grouped by user in their order, each event id kept once (its first
    occurrence). Raises ``ValidationError`` for the first bad signal, before anything is stored."""
    if isinstance(signals, Signal):
        raise ValidationError("expected a sequence of Signals, got one Signal: wrap it in a list")
    signals = signals if type(signals) is list else list(signals)
    # One Rust pass accepts a batch that check_signal's fast paths would accept; anything else
    # goes through check_signal, which names the first problem.
    if not _core.signals_fit_to_store(signals, user_id, Signal, FeedbackType, MAX_USER_ID_BYTES, MAX_NAME_BYTES):
        for signal in signals:
            check_signal(signal, user_id)
    grouped: dict[str, list[Signal]] = {}
    seen: set[str] = set()
    for signal in signals:
        if signal.event_id in seen:
            continue
        seen.add(signal.event_id)
        grouped.setdefault(signal.user_id, []).append(signal)
    return grouped


class ProfileStore(ABC):
    """Where profiles live. Every method validates ids before they become keys or SQL.

    **Versions.** Each stored change raises a profile's ``version`` by one. ``put`` with an
    ``expected_version`` fails with :class:`~penchant.ConflictError` unless the stored version
    (0 for a missing profile) equals it.

    **Feedback.** ``apply_feedback`` is atomic per user and idempotent per event id: a signal
    whose ``event_id`` the store has applied before changes nothing. It creates missing profiles.

    **Sync and async.** Every method has an async twin with an ``a`` prefix (``aget``,
    ``aput``, ``aapply_feedback``, ...). Both run the same operation (see ``_effects``): a
    subclass writes each operation once, as a generator of I/O effects.

    **TTL.** Stores that expire idle profiles (Redis, the in-process cache) slide the expiry on
    every read and write; :meth:`touch` slides it without reading and :meth:`ttl` tells the
    time left. Durable SQL stores never expire a profile (``ttl`` gives ``None``).

    **Ownership.** :meth:`get` returns a profile that the caller owns and may change.
    :meth:`get_shared` may return an object that other readers share: read it, never change it;
    it is the fast path for ranking.
    """

    tenant: str
    model: InterestModel
    serializer: ProfileSerializer

    def __init__(
        self,
        *,
        tenant: str = DEFAULT_TENANT,
        model: InterestModel | None = None,
        serializer: ProfileSerializer | None = None,
    ) -> None:
        self.tenant = check_id(tenant, "tenant")
        if model is not None and not isinstance(model, InterestModel):
            raise ValidationError(f"model must be an InterestModel, got {type(model).__name__}")
        self.model = model or InterestModel()
        self.serializer = serializer or ProfileSerializer()

    # -- the operations a store writes once ----------------------------------------------------

    @abstractmethod
    def _get_op(self, user_id: str, *, shared: bool) -> Op[UserProfile | None]:
        """The stored profile or ``None``; ``shared`` allows an object other readers hold."""

    def _get_many_op(self, user_ids: list[str], *, shared: bool) -> Op[dict[str, UserProfile]]:
        found = {}
        for user_id in user_ids:
            profile = yield from self._get_op(user_id, shared=shared)
            if profile is not None:
                found[user_id] = profile
        return found

    @abstractmethod
    def _put_op(self, profile: UserProfile, expected_version: int | None) -> Op[UserProfile]:
        """Stores ``profile`` as the next version; returns what was stored."""

    def _put_many_op(self, profiles: list[UserProfile]) -> Op[list[UserProfile]]:
        stored = []
        for profile in profiles:
            stored.append((yield from self._put_op(profile, None)))
        return stored

    @abstractmethod
    def _delete_op(self, user_id: str) -> Op[bool]:
        """Removes every trace of the user; whether there was a profile."""

    @abstractmethod
    def _apply_feedback_op(self, user_id: str, signals: list[Signal]) -> Op[UserProfile]:
        """Applies validated, de-duplicated ``signals`` (at least one) of ``user_id``."""

    def _apply_feedback_many_op(self, by_user: dict[str, list[Signal]]) -> Op[dict[str, int]]:
        versions = {}
        for user_id, signals in by_user.items():
            profile = yield from self._apply_feedback_op(user_id, signals)
            versions[user_id] = profile.version
        return versions

    def _touch_op(self, user_id: str) -> Op[bool]:
        return (yield from self._get_op(user_id, shared=True)) is not None

    def _ttl_op(self, user_id: str) -> Op[float | None]:
        return immediate(None)

    def _close_op(self) -> Op[None]:
        return immediate(None)

    # -- argument checks shared by both APIs -------------------------------------------------

    @staticmethod
    def _ids(user_ids: Iterable[str]) -> list[str]:
        if isinstance(user_ids, str):
            raise ValidationError("user_ids must be an iterable of ids, not one str")
        return list(dict.fromkeys(check_id(u) for u in user_ids))

    @staticmethod
    def _profile(profile: UserProfile) -> UserProfile:
        if not isinstance(profile, UserProfile):
            raise ValidationError(f"expected a UserProfile, got {type(profile).__name__}")
        check_id(profile.user_id)
        return profile

    @staticmethod
    def _expected(expected_version: int | None) -> int | None:
        if expected_version is None:
            return None
        if isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0:
            raise ValidationError(f"expected_version must be a non-negative int, got {expected_version!r}")
        return expected_version

    def _apply_one(self, user_id: str, signals: Sequence[Signal]) -> Op[UserProfile]:
        check_id(user_id)
        grouped = group_signals(signals, user_id)
        if not grouped:
            existing = yield from self._get_op(user_id, shared=False)
            return existing if existing is not None else UserProfile(user_id=user_id)
        return (yield from self._apply_feedback_op(user_id, grouped[user_id]))

    def _apply_many(self, signals: Iterable[Signal]) -> Op[dict[str, int]]:
        # A batch makes objects by the thousand, none of them cyclic: with the collector paused
        # (see penchant._gc; a batch of unknown size counts as large), no full collection walks
        # the heap in the middle of it.
        with _gc.paused(len(signals) if isinstance(signals, Sized) else _gc.MIN_BATCH):
            return (yield from self._apply_feedback_many_op(group_signals(signals)))

    # -- the sync API --------------------------------------------------------------------------

    def get(self, user_id: str) -> UserProfile | None:
        """The stored profile, or ``None``. The caller owns the returned object."""
        return run_sync(self._get_op(check_id(user_id), shared=False))

    def get_shared(self, user_id: str) -> UserProfile | None:
        """The stored profile, or ``None``, possibly shared with other readers: do not change it."""
        return run_sync(self._get_op(check_id(user_id), shared=True))

    def get_many(self, user_ids: Iterable[str], *, shared: bool = False) -> dict[str, UserProfile]:
        """The stored profiles among ``user_ids``, by id, in one round trip per tier. They are
        owned by the caller unless ``shared`` (then, as with :meth:`get_shared`, read only)."""
        return run_sync(self._get_many_op(self._ids(user_ids), shared=shared))

    def put(self, profile: UserProfile, *, expected_version: int | None = None) -> UserProfile:
        """Stores ``profile`` as the next version and returns what was stored."""
        return run_sync(self._put_op(self._profile(profile), self._expected(expected_version)))

    def put_many(self, profiles: Iterable[UserProfile]) -> list[UserProfile]:
        """Stores each profile as its next version (no version check), in one batch."""
        return run_sync(self._put_many_op([self._profile(p) for p in profiles]))

    def delete(self, user_id: str) -> bool:
        """Removes every trace of the user; returns whether there was a profile."""
        return run_sync(self._delete_op(check_id(user_id)))

    def exists(self, user_id: str) -> bool:
        return self.get_shared(user_id) is not None

    def apply_feedback(self, user_id: str, signals: Sequence[Signal]) -> UserProfile:
        """Applies ``signals`` to the user's profile (created when missing) in one atomic step
        and returns the profile after it. Signals seen before are ignored."""
        return run_sync(self._apply_one(user_id, signals))

    def apply_feedback_many(self, signals: Iterable[Signal]) -> dict[str, int]:
        """Applies signals of any number of users in one batch (the ingestion path); returns
        each touched user's profile version afterwards. Atomic per user, not across users."""
        return run_sync(self._apply_many(signals))

    def touch(self, user_id: str) -> bool:
        """Slides the user's expiry without reading the profile; whether it exists."""
        return run_sync(self._touch_op(check_id(user_id)))

    def ttl(self, user_id: str) -> float | None:
        """Seconds until the profile expires if nobody touches it; ``None`` when it does not
        expire (or does not exist)."""
        return run_sync(self._ttl_op(check_id(user_id)))

    def close(self) -> None:
        """Releases connections; the store is unusable afterwards."""
        run_sync(self._close_op())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the async API: the same operations, awaited -------------------------------------------

    async def aget(self, user_id: str) -> UserProfile | None:
        return await run_async(self._get_op(check_id(user_id), shared=False))

    async def aget_shared(self, user_id: str) -> UserProfile | None:
        return await run_async(self._get_op(check_id(user_id), shared=True))

    async def aget_many(self, user_ids: Iterable[str], *, shared: bool = False) -> dict[str, UserProfile]:
        return await run_async(self._get_many_op(self._ids(user_ids), shared=shared))

    async def aput(self, profile: UserProfile, *, expected_version: int | None = None) -> UserProfile:
        return await run_async(self._put_op(self._profile(profile), self._expected(expected_version)))

    async def aput_many(self, profiles: Iterable[UserProfile]) -> list[UserProfile]:
        return await run_async(self._put_many_op([self._profile(p) for p in profiles]))

    async def adelete(self, user_id: str) -> bool:
        return await run_async(self._delete_op(check_id(user_id)))

    async def aexists(self, user_id: str) -> bool:
        return (await self.aget_shared(user_id)) is not None

    async def aapply_feedback(self, user_id: str, signals: Sequence[Signal]) -> UserProfile:
        return await run_async(self._apply_one(user_id, signals))

    async def aapply_feedback_many(self, signals: Iterable[Signal]) -> dict[str, int]:
        return await run_async(self._apply_many(signals))

    async def atouch(self, user_id: str) -> bool:
        return await run_async(self._touch_op(check_id(user_id)))

    async def attl(self, user_id: str) -> float | None:
        return await run_async(self._ttl_op(check_id(user_id)))

    async def aclose(self) -> None:
        await run_async(self._close_op())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
