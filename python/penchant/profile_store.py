"""Profile storage (seed module 2).

:class:`ProfileStore` is the contract every store keeps; :class:`InMemoryProfileStore` keeps
profiles in this process.
"""

from __future__ import annotations

import copy
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

from penchant._validate import check_id
from penchant.errors import ConflictError
from penchant.feedback_collector import Signal
from penchant.user_profile import InterestModel, UserProfile

__all__ = ["InMemoryProfileStore", "ProfileStore"]


class ProfileStore(ABC):
    """Where profiles live. Every method validates ids before they become keys.

    Versions: each stored change raises a profile's ``version`` by one. ``put`` with an
    ``expected_version`` fails with :class:`~penchant.ConflictError` unless the stored version
    (0 for a missing profile) equals it. ``apply_feedback`` is atomic per user and idempotent per
    event id: a signal whose ``event_id`` the store has applied before changes nothing.
    """

    @abstractmethod
    def get(self, user_id: str) -> UserProfile | None:
        """The stored profile, or ``None``. The caller owns the returned object."""

    def get_many(self, user_ids: Iterable[str]) -> dict[str, UserProfile]:
        """The stored profiles among ``user_ids``, by id."""
        found = {}
        for user_id in user_ids:
            profile = self.get(user_id)
            if profile is not None:
                found[user_id] = profile
        return found

    @abstractmethod
    def put(self, profile: UserProfile, *, expected_version: int | None = None) -> UserProfile:
        """Stores ``profile`` as the next version and returns what was stored."""

    def put_many(self, profiles: Iterable[UserProfile]) -> list[UserProfile]:
        return [self.put(p) for p in profiles]

    @abstractmethod
    def delete(self, user_id: str) -> bool:
        """Removes every trace of the user; returns whether there was a profile."""

    def exists(self, user_id: str) -> bool:
        return self.get(user_id) is not None

    @abstractmethod
    def apply_feedback(self, user_id: str, signals: Sequence[Signal]) -> UserProfile:
        """Applies ``signals`` to the user's profile (created when missing) in one atomic step
        and returns the profile after it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases connections; the store is unusable afterwards."""

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InMemoryProfileStore(ProfileStore):
    """Profiles in a dict, guarded by one lock. Returns copies, so callers cannot change stored
    state by accident."""

    def __init__(self, *, model: InterestModel | None = None) -> None:
        self.model = model or InterestModel()
        self._profiles: dict[str, UserProfile] = {}
        self._applied: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def get(self, user_id: str) -> UserProfile | None:
        check_id(user_id)
        with self._lock:
            profile = self._profiles.get(user_id)
            return None if profile is None else copy.deepcopy(profile)

    def put(self, profile: UserProfile, *, expected_version: int | None = None) -> UserProfile:
        check_id(profile.user_id)
        with self._lock:
            current = self._profiles.get(profile.user_id)
            current_version = 0 if current is None else current.version
            if expected_version is not None and expected_version != current_version:
                raise ConflictError(
                    f"profile {profile.user_id!r} is at version {current_version}, not {expected_version}"
                )
            stored = copy.deepcopy(profile)
            stored.version = current_version + 1
            self._profiles[profile.user_id] = stored
            return copy.deepcopy(stored)

    def delete(self, user_id: str) -> bool:
        check_id(user_id)
        with self._lock:
            self._applied.pop(user_id, None)
            return self._profiles.pop(user_id, None) is not None

    def apply_feedback(self, user_id: str, signals: Sequence[Signal]) -> UserProfile:
        check_id(user_id)
        with self._lock:
            current = self._profiles.get(user_id)
            # Work on a copy so that a signal that fails validation leaves the stored profile as it was.
            profile = UserProfile(user_id=user_id) if current is None else copy.deepcopy(current)
            applied = self._applied.setdefault(user_id, set())
            fresh = [s for s in signals if s.event_id not in applied]
            self.model.apply(profile, fresh)
            applied.update(s.event_id for s in fresh)
            self._profiles[user_id] = profile
            return copy.deepcopy(profile)
