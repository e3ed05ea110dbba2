"""Store calls as effects, so that the collector, the retriever and the engine write each
operation once and run it sync or async (the store's own design: :mod:`penchant._effects`).

An operation is a generator that yields these effects and receives their results;
:func:`~penchant._effects.run_sync` performs each with the store's blocking
method, :func:`~penchant._effects.run_async` with its ``a``-prefixed twin. Only
public store methods are called, so any :class:`~penchant.ProfileStore` works, and the tiered
store's fast path for cached profiles (``get_shared``) is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from penchant._effects import Effect, Op, run_async, run_sync

if TYPE_CHECKING:
    from penchant.feedback_collector import Signal
    from penchant.profile_store import ProfileStore
    from penchant.user_profile import UserProfile

__all__ = ["ApplyFeedback", "ApplyFeedbackMany", "LoadProfile", "LoadProfiles", "Op", "run_async", "run_sync"]


class LoadProfile(Effect["UserProfile | None"]):
    """The user's profile for reading (``get_shared``): never change it."""

    __slots__ = ("store", "user_id")

    def __init__(self, store: ProfileStore, user_id: str) -> None:
        self.store = store
        self.user_id = user_id

    def run_sync(self) -> UserProfile | None:
        return self.store.get_shared(self.user_id)

    async def run_async(self) -> UserProfile | None:
        return await self.store.aget_shared(self.user_id)


class LoadProfiles(Effect["dict[str, UserProfile]"]):
    """The stored profiles of several users, for reading, in one round trip per tier."""

    __slots__ = ("store", "user_ids")

    def __init__(self, store: ProfileStore, user_ids: list[str]) -> None:
        self.store = store
        self.user_ids = user_ids

    def run_sync(self) -> dict[str, UserProfile]:
        return self.store.get_many(self.user_ids, shared=True)

    async def run_async(self) -> dict[str, UserProfile]:
        return await self.store.aget_many(self.user_ids, shared=True)


class ApplyFeedback(Effect["UserProfile"]):
    """``signals`` of one user applied in one atomic step."""

    __slots__ = ("signals", "store", "user_id")

    def __init__(self, store: ProfileStore, user_id: str, signals: list[Signal]) -> None:
        self.store = store
        self.user_id = user_id
        self.signals = signals

    def run_sync(self) -> UserProfile:
        return self.store.apply_feedback(self.user_id, self.signals)

    async def run_async(self) -> UserProfile:
        return await self.store.aapply_feedback(self.user_id, self.signals)


class ApplyFeedbackMany(Effect["dict[str, int]"]):
    """Signals of any number of users in one batch, atomic per user."""

    __slots__ = ("signals", "store")

    def __init__(self, store: ProfileStore, signals: list[Signal]) -> None:
        self.store = store
        self.signals = signals

    def run_sync(self) -> dict[str, int]:
        return self.store.apply_feedback_many(self.signals)

    async def run_async(self) -> dict[str, int]:
        return await self.store.aapply_feedback_many(self.signals)
