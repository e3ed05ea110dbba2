"""User profiles (seed module 1): what penchant knows about one user.

A profile's interests are forward-decayed sums (Cormode et al., "Forward Decay", ICDE 2009):
each :class:`Interest` keeps its positive and its negative evidence apart as
``S = Σ wᵢ·2^((tᵢ − L)/h)`` against the profile's ``landmark`` ``L``, so recording an event is an
addition and the current value of a sum is ``S·2^(−(now − L)/h)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from penchant import _core
from penchant._time import TimeLike, to_datetime, to_epoch, utcnow
from penchant._validate import check_finite, check_id, check_name, check_unit_interval
from penchant.errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from penchant.feedback_collector import Signal

__all__ = [
    "DEFAULT_HALF_LIFE",
    "SCHEMA_VERSION",
    "Interaction",
    "Interest",
    "InterestModel",
    "Preference",
    "PreferenceCategory",
    "PreferenceSource",
    "UserProfile",
    "channel_key",
    "parse_channel_key",
]

DEFAULT_HALF_LIFE = 30 * 86_400.0
"""Interests lose half their weight in 30 days unless configured otherwise."""

SCHEMA_VERSION = 1
"""The version of the stored form of a profile. Raise it when a change to these classes needs
stored profiles to be converted (``penchant.profile_store.ProfileSerializer`` keeps the steps);
adding a field with a default does not need it, since readers ignore fields they do not know."""


class PreferenceSource(StrEnum):
    """Where a preference came from."""

    EXPLICIT = "explicit"
    """Set by the user ("never show horror")."""
    IMPLICIT = "implicit"
    """Learned from behaviour (clicks, dwell, ratings)."""
    INFERRED = "inferred"
    """Derived by rules or from similar users."""


class PreferenceCategory(StrEnum):
    """What kind of value a preference holds."""

    CATEGORICAL = "categorical"
    """A feature or set of features ("genre:jazz")."""
    NUMERIC = "numeric"
    """A range of a numeric attribute ("price between 5 and 20")."""
    TEMPORAL = "temporal"
    """A time pattern (hours of day or days of week when the user is active)."""


@dataclass
class Preference:
    """One preference of a user, with how sure penchant is of it."""

    name: str
    value: Any
    confidence: float
    source: PreferenceSource
    category: PreferenceCategory
    last_updated: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        check_name(self.name, "preference name")
        self.confidence = check_unit_interval(self.confidence, f"confidence of preference {self.name!r}")
        self.source = PreferenceSource(self.source)
        self.category = PreferenceCategory(self.category)
        self.last_updated = to_datetime(self.last_updated, "last_updated")


def channel_key(positive: bool, half_life: float) -> str:
    """The key of one evidence channel of an interest: its sign and half-life in seconds, such
    as ``"+604800"`` or ``"-2592000"``. Stores use it as part of a hash field name."""
    return f"{'+' if positive else '-'}{half_life:g}"


def parse_channel_key(key: str) -> tuple[bool, float]:
    """``(positive, half_life)`` of a channel key made by :func:`channel_key`."""
    if len(key) < 2 or key[0] not in "+-":
        raise ValidationError(f"invalid interest channel key {key!r}")
    half_life = check_finite(key[1:], f"half-life of channel {key!r}")
    if half_life <= 0:
        raise ValidationError(f"invalid interest channel key {key!r}")
    return key[0] == "+", half_life


@dataclass
class Interest:
    """Interest in one feature (``"genre:sci-fi"``), as forward-decayed evidence.

    ``sums`` maps an evidence channel (:func:`channel_key`: a sign and a half-life, since each
    feedback type may decay at its own rate) to ``Σ |wᵢ|·2^((tᵢ − L)/h)`` against the owning
    profile's ``landmark`` ``L``. Positive and negative evidence stay apart, so "dislikes sci-fi"
    (much negative evidence) differs from "no opinion on sci-fi" (none of either). Every update
    is an addition to one sum, so updates commute and a store can apply them atomically.
    """

    name: str
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    last_updated: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        check_name(self.name, "interest name")
        for key, value in self.sums.items():
            parse_channel_key(key)
            if check_finite(value, f"evidence of {self.name!r}") < 0:
                raise ValidationError(f"evidence of interest {self.name!r} must not be negative")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise ValidationError(f"count of interest {self.name!r} must be a non-negative int")
        self.last_updated = to_datetime(self.last_updated, "last_updated")

    def evidence(self, now: float, landmark: float) -> tuple[float, float]:
        """``(positive, negative)`` decayed evidence at ``now`` (epoch seconds)."""
        positive = negative = 0.0
        for key, total in self.sums.items():
            is_positive, half_life = parse_channel_key(key)
            value = total * math.exp2(-(now - landmark) / half_life)
            if is_positive:
                positive += value
            else:
                negative += value
        return positive, negative

    def weight(self, now: float, landmark: float) -> float:
        """Positive minus negative decayed evidence at ``now``."""
        positive, negative = self.evidence(now, landmark)
        return positive - negative


@dataclass
class Interaction:
    """One remembered event of the user's history."""

    item_id: str
    feedback_type: str
    value: float
    weight: float
    features: dict[str, float] = field(default_factory=dict)
    attributes: dict[str, float] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)
    event_id: str = ""

    def __post_init__(self) -> None:
        check_id(self.item_id, "item_id")
        self.value = check_finite(self.value, "value")
        self.weight = check_finite(self.weight, "weight")
        self.timestamp = to_datetime(self.timestamp, "timestamp")


@dataclass
class UserProfile:
    """Everything penchant knows about one user.

    The seven seed fields come first; the rest are penchant's own: ``version`` rises with every
    change, ``landmark`` (epoch seconds) is the reference time of the forward-decayed sums in
    ``interests``, and ``taste_vector`` (optional) is compared with item embeddings by the taste
    factor.
    """

    user_id: str
    preferences: dict[str, Preference] = field(default_factory=dict)
    interests: dict[str, Interest] = field(default_factory=dict)
    interaction_history: list[Interaction] = field(default_factory=list)
    explicit_preferences: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    version: int = 0
    landmark: float = 0.0
    taste_vector: list[float] | None = None

    def __post_init__(self) -> None:
        check_id(self.user_id, "user_id")
        self.created_at = to_datetime(self.created_at, "created_at")
        self.updated_at = to_datetime(self.updated_at, "updated_at")
        self.landmark = check_finite(self.landmark, "landmark")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise ValidationError("version must be a non-negative int")
        if self.taste_vector is not None:
            self.taste_vector = [check_finite(v, "taste_vector value") for v in self.taste_vector]

    def interest_weights(self, now: TimeLike | None = None) -> dict[str, float]:
        """The current decayed weight (positive minus negative evidence) of every interest."""
        moment = to_epoch(now, "now")
        # One multiplier per evidence channel, shared by every interest that has the channel.
        multipliers: dict[str, float] = {}
        weights: dict[str, float] = {}
        for name, interest in self.interests.items():
            total = 0.0
            for key, value in interest.sums.items():
                multiplier = multipliers.get(key)
                if multiplier is None:
                    positive, half_life = parse_channel_key(key)
                    decay = math.exp2(-(moment - self.landmark) / half_life)
                    multiplier = multipliers[key] = decay if positive else -decay
                total += value * multiplier
            weights[name] = total
        return weights


REBASE_EXPONENT = _core.MAX_EXPONENT / 2
"""Move a profile's landmark forward once an event lies this many half-lives past it."""


class InterestModel:
    """Applies processed feedback (:class:`~penchant.feedback_collector.Signal`) to a profile's
    interests by forward decay, and keeps the bounded interaction history.

    The arithmetic is shared with the stores: :meth:`increments` gives the additions that
    :meth:`apply` makes in memory and that a Redis store makes with ``HINCRBYFLOAT``.
    """

    def __init__(self, *, max_history: int = 500) -> None:
        if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 0:
            raise ValidationError(f"max_history must be a non-negative int, got {max_history!r}")
        self.max_history = max_history

    @staticmethod
    def needs_rebase(landmark: float, signal: Signal) -> bool:
        """Whether ``signal`` lies so far past ``landmark`` that the landmark must move first."""
        return (signal.timestamp - landmark) / signal.half_life > REBASE_EXPONENT

    @staticmethod
    def increments(landmark: float, signal: Signal) -> list[tuple[str, str, float]]:
        """``(feature, channel key, amount)`` additions for one signal: each feature's share
        ``|weight·feature weight|·2^((t − L)/h)`` goes to the positive or the negative channel of
        the signal's half-life. Raises ``ValidationError`` when the landmark must move first."""
        names = list(signal.features)
        products = np.fromiter((signal.weight * signal.features[n] for n in names), dtype=np.float64, count=len(names))
        times = np.full(len(names), signal.timestamp)
        amounts = _core.forward_increments(times, products, landmark, signal.half_life)
        return [
            (name, channel_key(amount > 0, signal.half_life), abs(float(amount)))
            for name, amount in zip(names, amounts, strict=True)
            if amount != 0
        ]

    @staticmethod
    def rebase(profile: UserProfile, landmark: float) -> None:
        """Moves ``profile``'s landmark to ``landmark``, rescaling every sum so that no current
        value changes."""
        for interest in profile.interests.values():
            for key, total in interest.sums.items():
                _, half_life = parse_channel_key(key)
                interest.sums[key] = total * _core.rebase_factor(profile.landmark, landmark, half_life)
        profile.landmark = landmark

    def apply(self, profile: UserProfile, signals: Iterable[Signal]) -> None:
        """Adds ``signals`` to ``profile`` in place: interests, history, version, ``updated_at``."""
        changed = False
        for signal in signals:
            if self.needs_rebase(profile.landmark, signal):
                self.rebase(profile, signal.timestamp)
            when = to_datetime(signal.timestamp, "timestamp")
            for name, key, amount in self.increments(profile.landmark, signal):
                interest = profile.interests.get(name)
                if interest is None:
                    interest = profile.interests[name] = Interest(name=name, last_updated=when)
                interest.sums[key] = interest.sums.get(key, 0.0) + amount
                interest.count += 1
                interest.last_updated = max(interest.last_updated, when)
            if self.max_history:
                profile.interaction_history.append(
                    Interaction(
                        item_id=signal.item_id,
                        feedback_type=str(signal.feedback_type),
                        value=signal.value,
                        weight=signal.weight,
                        features=dict(signal.features),
                        attributes=dict(signal.attributes),
                        timestamp=when,
                        event_id=signal.event_id,
                    )
                )
            changed = True
        if changed:
            excess = len(profile.interaction_history) - self.max_history
            if excess > 0:
                del profile.interaction_history[:excess]
            profile.version += 1
            profile.updated_at = utcnow()
