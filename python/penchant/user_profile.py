"""User profiles (seed module 1): what penchant knows about one user.

A profile's interests are forward-decayed sums (Cormode et al., "Forward Decay", ICDE 2009):
each :class:`Interest` keeps its positive and its negative evidence apart as
``S = Σ wᵢ·2^((tᵢ − L)/h)`` against the profile's ``landmark`` ``L``, so recording an event is an
addition and the current value of a sum is ``S·2^(−(now − L)/h)``.

Confidence. With ``P`` and ``N`` the positive and negative evidence of a feature at ``now``,
``E`` the strength of an explicit like or dislike of it (0 without one) and ``s`` its sign::

    weight     = s·E + P − N
    confidence = |weight| / (E + P + N + k)        k = CONFIDENCE_PRIOR = 1

Confidence grows with evidence (one click's worth gives 0.5, ten give 0.91) and falls when the
evidence disagrees (as much for as against gives 0).

Explicit preferences (``UserProfile.explicit_preferences``, keys ``"<rule>:<target>"``):

- ``never:<feature>`` and ``min:<attribute>`` / ``max:<attribute>`` are **hard filters**:
  :func:`penchant.rank_items` never returns an item that breaks one, whatever the evidence.
- ``like:<feature>`` and ``dislike:<feature>`` are **strong priors**: ``E`` (default 20, twenty
  clicks' worth) enters the weight above, so a stated like starts at confidence 20/21 ≈ 0.95.
  Implicit evidence overtakes it only when it is strong: the weight changes sign when the net
  implicit evidence against the statement, ``−s·(P − N)``, exceeds ``E``.
"""

from __future__ import annotations

import copy
import hashlib
import math
import operator
import time
from bisect import insort
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from penchant import _core, _gc
from penchant._time import TimeLike, to_datetime, to_epoch, utcnow
from penchant._validate import MAX_NAME_BYTES, _check_text, check_finite, check_id, check_name, check_unit_interval
from penchant.errors import ConflictError, ValidationError
from penchant.scoring import Filters

if TYPE_CHECKING:
    from penchant.feedback_collector import Signal
    from penchant.profile_store import ProfileStore

__all__ = [
    "CONFIDENCE_PRIOR",
    "DEFAULT_HALF_LIFE",
    "EXPLICIT_STRENGTH",
    "PROFILE_CONFIDENCE_PRIOR",
    "SCHEMA_VERSION",
    "ExplicitRule",
    "Interaction",
    "Interest",
    "InterestModel",
    "Preference",
    "PreferenceCategory",
    "PreferenceExtractor",
    "PreferenceSource",
    "ProfileManager",
    "UserProfile",
    "channel_key",
    "parse_channel_key",
    "profile_confidence_of",
]

SCHEMA_VERSION = 1
"""The version of the stored form of a profile (the stores' serializer and
:meth:`UserProfile.to_dict`). Raise it when a change to these classes needs stored profiles to
be converted (``penchant.profile_store.ProfileSerializer`` keeps the steps, and
:meth:`UserProfile.from_dict` must read the older form); adding a field with a default does not
need it, since readers ignore fields they do not know."""

DEFAULT_HALF_LIFE = 30 * 86_400.0
"""Interests lose half their weight in 30 days unless configured otherwise."""

CONFIDENCE_PRIOR = 1.0
"""``k`` in ``confidence = |weight| / (E + P + N + k)``: the evidence (in units of one click of
default weight) at which confidence reaches one half."""

PROFILE_CONFIDENCE_PRIOR = 5.0
"""The evidence (in clicks' worth) at which a whole profile's confidence reaches one half; see
:meth:`UserProfile.profile_confidence`."""

EXPLICIT_STRENGTH = 20.0
"""The default strength ``E`` of an explicit like or dislike, in units of one click's evidence."""

MAX_EXPLICIT_STRENGTH = 1e6

MAX_PREFERENCE_NAME_BYTES = MAX_NAME_BYTES + 16
"""Preference names are a feature or attribute name with a short prefix (``"dislike:"``)."""


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


class ExplicitRule(StrEnum):
    """The kinds of explicit preference a user can state."""

    NEVER = "never"
    """Hard filter: never show items that carry this feature."""
    MIN = "min"
    """Hard filter: only items whose numeric attribute is at least this value."""
    MAX = "max"
    """Hard filter: only items whose numeric attribute is at most this value."""
    LIKE = "like"
    """Strong prior: adds the stated strength to this feature's interest weight."""
    DISLIKE = "dislike"
    """Strong prior: subtracts the stated strength from this feature's interest weight."""

    @property
    def is_hard_filter(self) -> bool:
        return self in (ExplicitRule.NEVER, ExplicitRule.MIN, ExplicitRule.MAX)

    @property
    def on_attribute(self) -> bool:
        """Whether the target is a numeric attribute (else a feature)."""
        return self in (ExplicitRule.MIN, ExplicitRule.MAX)

    @classmethod
    def parse(cls, value: ExplicitRule | str) -> ExplicitRule:
        if isinstance(value, ExplicitRule):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise ValidationError(
            f"unknown explicit preference rule {value!r}; expected one of: {', '.join(r.value for r in cls)}"
        )


# Rules that contradict each other on one target: setting one removes the others.
_CONTRADICTS = {
    ExplicitRule.LIKE: (ExplicitRule.DISLIKE, ExplicitRule.NEVER),
    ExplicitRule.DISLIKE: (ExplicitRule.LIKE,),
    ExplicitRule.NEVER: (ExplicitRule.LIKE,),
    ExplicitRule.MIN: (),
    ExplicitRule.MAX: (),
}


def explicit_key(rule: ExplicitRule | str, target: str) -> str:
    """The key of an explicit preference in ``UserProfile.explicit_preferences``."""
    return f"{ExplicitRule.parse(rule).value}:{target}"


def parse_explicit_key(key: str) -> tuple[ExplicitRule, str] | None:
    """``(rule, target)`` of an explicit preference key, or ``None`` for a key that is not a
    rule (``explicit_preferences`` may hold other application data, which penchant ignores)."""
    head, sep, target = key.partition(":")
    if not sep or not target:
        return None
    try:
        return ExplicitRule(head), target
    except ValueError:
        return None


def _explicit_value(rule: ExplicitRule, target: str, value: Any) -> Any:
    """The stored value of a rule, validated: ``True`` for never, the strength for like and
    dislike, the bound for min and max."""
    if rule.on_attribute:
        check_name(target, f"attribute of the {rule.value} preference")
        if value is None:
            raise ValidationError(f"a {rule.value} preference on {target!r} needs a value")
        return check_finite(value, f"value of the {rule.value} preference on {target!r}")
    check_name(target, f"feature of the {rule.value} preference")
    if rule is ExplicitRule.NEVER:
        if value not in (None, True):
            raise ValidationError(f"a never preference takes no value, got {value!r}")
        return True
    if value is None:
        return EXPLICIT_STRENGTH
    strength = check_finite(value, f"strength of the {rule.value} preference on {target!r}")
    if not 0 < strength <= MAX_EXPLICIT_STRENGTH:
        raise ValidationError(f"the strength of a {rule.value} preference must lie in (0, 1e6], got {strength}")
    return strength


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
        _check_text(self.name, "preference name", MAX_PREFERENCE_NAME_BYTES)
        self.confidence = check_unit_interval(self.confidence, f"confidence of preference {self.name!r}")
        self.source = PreferenceSource(self.source)
        self.category = PreferenceCategory(self.category)
        self.last_updated = to_datetime(self.last_updated, "last_updated")


def _channel_keys(half_life: float) -> tuple[str, str]:
    """``(negative key, positive key)`` of a half-life, cached: a few half-lives exist."""
    keys = _KEYS_OF_HALF_LIFE.get(half_life)
    if keys is None:
        keys = (channel_key(False, half_life), channel_key(True, half_life))
        if len(_KEYS_OF_HALF_LIFE) < _MAX_CACHED_CHANNELS:
            _KEYS_OF_HALF_LIFE[half_life] = keys
    return keys


def _preference(
    name: str, value: Any, sure: float, source: PreferenceSource, category: PreferenceCategory, stamp: datetime
) -> Preference:
    """A :class:`Preference` from the extractor, whose fields are valid by construction; an
    extraction makes dozens, and ``__post_init__``'s checks cost more than the arithmetic."""
    preference = object.__new__(Preference)
    preference.__dict__.update(
        name=name,
        value=value,
        confidence=min(1.0, max(0.0, sure)),
        source=source,
        category=category,
        last_updated=stamp,
    )
    return preference


def channel_key(positive: bool, half_life: float) -> str:
    """The key of one evidence channel of an interest: its sign and half-life in seconds, such
    as ``"+604800"`` or ``"-2592000"``. Stores use it as part of a hash field name. The half-life
    is written exactly (whole seconds as an integer, else the shortest round-trip form), so
    that parsing the key gives back the same half-life."""
    h = float(half_life)
    text = str(int(h)) if h.is_integer() and abs(h) < 1e15 else repr(h)
    return ("+" if positive else "-") + text


_PARSED_CHANNELS: dict[str, tuple[bool, float]] = {}
_KEYS_OF_HALF_LIFE: dict[float, tuple[str, str]] = {}
_MAX_CACHED_CHANNELS = 4096
_NUMBER_CHARACTERS = frozenset("0123456789.eE+-")


def parse_channel_key(key: str) -> tuple[bool, float]:
    """``(positive, half_life)`` of a channel key made by :func:`channel_key`."""
    parsed = _PARSED_CHANNELS.get(key)
    if parsed is not None:
        return parsed
    # Digits, a point and an exponent only: the Rust reader parses the same set of keys.
    if not isinstance(key, str) or len(key) < 2 or key[0] not in "+-" or not set(key[1:]) <= _NUMBER_CHARACTERS:
        raise ValidationError(f"invalid interest channel key {key!r}")
    half_life = check_finite(key[1:], f"half-life of channel {key!r}")
    if half_life <= 0:
        raise ValidationError(f"invalid interest channel key {key!r}")
    parsed = (key[0] == "+", half_life)
    # A handful of keys exist in practice (one per sign and feedback type), so a small cache
    # saves parsing on every read; the bound keeps hostile input from growing it.
    if len(_PARSED_CHANNELS) < _MAX_CACHED_CHANNELS:
        _PARSED_CHANNELS[key] = parsed
    return parsed


class _ChannelFactors:
    """``2^(−(now − L)/h)`` per channel key, computed once per key for one (now, landmark)."""

    def __init__(self, now: float, landmark: float) -> None:
        self.age = now - landmark
        self.factors: dict[str, tuple[bool, float]] = {}

    def __call__(self, key: str) -> tuple[bool, float]:
        found = self.factors.get(key)
        if found is None:
            positive, half_life = parse_channel_key(key)
            try:
                factor = math.exp2(-self.age / half_life)
            except OverflowError:
                raise ValidationError(
                    "now lies too many half-lives before the profile's landmark to weigh its interests"
                ) from None
            found = self.factors[key] = (positive, factor)
        return found

    def evidence(self, sums: Mapping[str, float]) -> tuple[float, float]:
        positive = negative = 0.0
        for key, total in sums.items():
            is_positive, factor = self(key)
            if is_positive:
                positive += total * factor
            else:
                negative += total * factor
        return positive, negative


def confidence(positive: float, negative: float, explicit: float = 0.0, prior: float = CONFIDENCE_PRIOR) -> float:
    """``|explicit + positive − negative| / (|explicit| + positive + negative + prior)``, where
    ``explicit`` is the signed strength of an explicit like (+) or dislike (−)."""
    weight = explicit + positive - negative
    return abs(weight) / (abs(explicit) + positive + negative + prior)


def profile_confidence_of(evidence: float, prior: float = PROFILE_CONFIDENCE_PRIOR) -> float:
    """``evidence / (evidence + prior)``: the confidence of a profile holding ``evidence``
    (see :meth:`UserProfile.profile_confidence`)."""
    if not (math.isfinite(prior) and prior > 0):
        raise ValidationError(f"the confidence prior must be a positive number, got {prior}")
    if not evidence > 0:
        return 0.0
    if math.isinf(evidence):
        return 1.0
    return evidence / (evidence + prior)


@dataclass
class Interest:
    """Interest in one feature (``"genre:sci-fi"``), as forward-decayed evidence.

    ``sums`` maps an evidence channel (:func:`channel_key`: a sign and a half-life, since each
    feedback type may decay at its own rate) to ``Σ |wᵢ|·2^((tᵢ − L)/h)`` against the owning
    profile's ``landmark`` ``L``. Positive and negative evidence stay apart, so "dislikes sci-fi"
    (much negative evidence) differs from "no opinion on sci-fi" (none of either). Every update
    is an addition to one sum, so updates commute and a store can apply them atomically.
    ``count`` is the number of events that added to it; ``last_updated`` the latest of them.
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
        return _ChannelFactors(now, landmark).evidence(self.sums)

    def weight(self, now: float, landmark: float) -> float:
        """Positive minus negative decayed evidence at ``now``."""
        positive, negative = self.evidence(now, landmark)
        return positive - negative

    def confidence(
        self, now: float, landmark: float, *, explicit: float = 0.0, prior: float = CONFIDENCE_PRIOR
    ) -> float:
        """How sure penchant is of this interest's direction at ``now``, in [0, 1):
        ``|P − N| / (P + N + k)`` (with an explicit like or dislike of signed strength ``E``:
        ``|E + P − N| / (|E| + P + N + k)``). See the module documentation."""
        positive, negative = self.evidence(now, landmark)
        return confidence(positive, negative, explicit, prior)


@dataclass
class Interaction:
    """One remembered event of the user's history: what the profile learned from it.

    ``weight`` is the signed weight the feedback processor gave the event, spread over
    ``features`` (which sum to 1); ``half_life`` is how fast its evidence fades (seconds)."""

    item_id: str
    feedback_type: str
    value: float
    weight: float
    features: dict[str, float] = field(default_factory=dict)
    attributes: dict[str, float] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)
    event_id: str = ""
    half_life: float = DEFAULT_HALF_LIFE

    def __post_init__(self) -> None:
        check_id(self.item_id, "item_id")
        self.value = check_finite(self.value, "value")
        self.weight = check_finite(self.weight, "weight")
        self.half_life = check_finite(self.half_life, "half_life")
        if self.half_life <= 0:
            raise ValidationError(f"half_life must be positive, got {self.half_life}")
        self.timestamp = to_datetime(self.timestamp, "timestamp")

    def to_signal(self, user_id: str) -> Signal:
        """The processed event again, for ``user_id``: replaying it adds exactly what it added."""
        from penchant.feedback_collector import FeedbackType, Signal

        # Histories written without event ids still need distinct, stable ones to replay.
        event_id = (
            self.event_id
            or "h-"
            + hashlib.sha256(
                f"{self.item_id}|{self.feedback_type}|{self.timestamp.isoformat()}|{self.value}".encode()
            ).hexdigest()[:32]
        )
        return Signal(
            event_id=event_id,
            user_id=user_id,
            item_id=self.item_id,
            feedback_type=FeedbackType.parse(self.feedback_type),
            value=self.value,
            weight=self.weight,
            half_life=self.half_life,
            timestamp=self.timestamp.timestamp(),
            features=dict(self.features),
            attributes=dict(self.attributes),
        )


def _utc(seconds: float, what: str = "timestamp") -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        raise ValidationError(f"{what} {seconds} is out of the range of dates") from None


class _Datetimes(dict[float, datetime]):
    """Datetimes of epoch seconds, each made once per batch: an event's time becomes its
    history entry's timestamp and the ``last_updated`` of each feature it touches."""

    def __missing__(self, seconds: float) -> datetime:
        made = self[seconds] = _utc(seconds)
        return made


ENCODED_FIELDS = "_encoded_fields"
"""The key, in a :class:`UserProfile`'s instance dict, of the fields a store left encoded (a map
of field name to a callable that decodes it; see ``UserProfile.__getattr__``). The decoder of
the history may also have a ``raw`` attribute: while it has not decoded, the history's
MessagePack bytes (an array of :class:`Interaction` maps), which preference extraction then
reads in Rust, making no object per entry; ``None`` once it has."""


if TYPE_CHECKING:
    from penchant._core import _HistorySummary  # what penchant._core.summarize_history returns
else:
    _HistorySummary = tuple  # the extension module holds no type aliases at run time


def _packed_history(profile: UserProfile) -> Any:
    """``profile``'s history as stored (see :data:`ENCODED_FIELDS`) while nobody has read it,
    else ``None``."""
    state = profile.__dict__
    if "interaction_history" in state:
        return None
    encoded = state.get(ENCODED_FIELDS)
    decode = None if encoded is None else encoded.get("interaction_history")
    return getattr(decode, "raw", None)


def _history_summary(
    profile: UserProfile, now: float, quantiles: list[float], utc_offset: float
) -> _HistorySummary | None:
    """:func:`penchant._core.summarize_history` of ``profile``'s history at ``now`` (``None``
    when it is empty), read from its stored bytes while it is still encoded."""
    packed = _packed_history(profile)
    if packed is not None:
        try:
            summary = _core.summarize_packed_history(packed, now, DEFAULT_HALF_LIFE, quantiles, utc_offset)
        except ValidationError:
            pass  # not in the form this reader knows: decoding reads it, or says what is wrong
        else:
            return summary if summary[5] else None
    history = profile.interaction_history
    return _core.summarize_history(history, now, quantiles, utc_offset) if history else None


def _history_key(interaction: Interaction) -> tuple[datetime, str]:
    return interaction.timestamp, interaction.event_id


@dataclass
class UserProfile:
    """Everything penchant knows about one user.

    The seven seed fields come first; the rest are penchant's own: ``version`` rises with every
    change, ``landmark`` (epoch seconds) is the reference time of the forward-decayed sums in
    ``interests``, ``taste_vector`` (optional) is compared with item embeddings by the taste
    factor, ``event_count`` counts the events ever applied, and ``merged_from`` lists the
    anonymous profiles merged into this one (so that a retried merge adds nothing twice).

    ``interaction_history`` is kept in time order (ties by event id) and holds the most recent
    events, so replaying the same events in any order gives the same history.
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
    event_count: int = 0
    merged_from: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_id(self.user_id, "user_id")
        self.created_at = to_datetime(self.created_at, "created_at")
        self.updated_at = to_datetime(self.updated_at, "updated_at")
        self.landmark = check_finite(self.landmark, "landmark")
        for name in ("version", "event_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"{name} must be a non-negative int")
        if self.taste_vector is not None:
            self.taste_vector = [check_finite(v, "taste_vector value") for v in self.taste_vector]
        for key, value in self.explicit_preferences.items():
            if not isinstance(key, str):
                raise ValidationError("explicit preference keys must be str")
            parsed = parse_explicit_key(key)
            if parsed is not None:
                self.explicit_preferences[key] = _explicit_value(parsed[0], parsed[1], value)
        self.merged_from = [check_id(m, "merged_from entry") for m in self.merged_from]

    if not TYPE_CHECKING:  # mypy would take any attribute of a class with __getattr__ as valid

        def __getattr__(self, name: str) -> Any:
            # Only called for a name missing from the instance dict. A store may leave fields
            # encoded until they are first read (ranking never reads the preferences; a profile
            # read to be cached reads none): ENCODED_FIELDS in the instance dict maps each such
            # field to a callable that decodes it. A value in the instance dict (decoded or
            # assigned since) always wins over it. The map is never changed once made, so a
            # shallow copy may share it; the decoders remember what they made, so a shallow copy
            # and its original get the same object, as for any field. Two threads reading a
            # shared profile at once may both call the decoder; both get the one value stored
            # first.
            state = self.__dict__
            encoded = state.get(ENCODED_FIELDS)
            decode = None if encoded is None else encoded.get(name)
            if decode is not None:
                value = state.setdefault(name, decode())
                if encoded.keys() <= state.keys():  # every field decoded or assigned: drop the map
                    state.pop(ENCODED_FIELDS, None)
                return value
            try:  # another thread may have stored it since this lookup began
                return state[name]
            except KeyError:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}") from None

    def __deepcopy__(self, memo: dict[int, Any]) -> UserProfile:
        """A deep copy, written out for speed: stores copy a profile on every read and write,
        and the generic ``copy.deepcopy`` walks every object of a long history (tens of
        milliseconds for 500 events). Fields it does not know are deep-copied generically.
        Fields still encoded stay encoded in the copy (which decodes them for itself)."""
        fast: dict[str, Callable[[Any], Any]] = {
            "preferences": lambda d: {k: _copy_preference(p, memo) for k, p in d.items()},
            "interests": lambda d: {k: _copy_interest(i) for k, i in d.items()},
            "interaction_history": lambda h: [_copy_interaction(i) for i in h],
            "taste_vector": lambda v: None if v is None else list(v),
            "merged_from": list,
        }
        new = object.__new__(type(self))
        memo[id(self)] = new
        # A copy of the dict first: another thread may decode a field (adding it) meanwhile.
        state = dict(self.__dict__)
        encoded = state.pop(ENCODED_FIELDS, None)
        for key, value in state.items():
            copier = fast.get(key)
            new.__dict__[key] = copier(value) if copier is not None else copy.deepcopy(value, memo)
        if encoded is not None:
            # Decoders of their own (a deep copy of one forgets what it made); the fields
            # decoded or assigned since are left out.
            left = {name: copy.deepcopy(decode, memo) for name, decode in encoded.items() if name not in state}
            if left:
                new.__dict__[ENCODED_FIELDS] = left
        return new

    # -- interests ----------------------------------------------------------------------------

    def interest_evidence(self, now: TimeLike | None = None) -> dict[str, tuple[float, float]]:
        """``(positive, negative)`` decayed evidence of every interest at ``now``."""
        names, positive, negative = _core.interest_evidence(self.interests, to_epoch(now, "now"), self.landmark)
        return dict(zip(names, zip(positive, negative, strict=True), strict=True))

    def explicit_priors(self) -> dict[str, float]:
        """The signed strength of every explicit like (+) and dislike (−), by feature."""
        priors: dict[str, float] = {}
        for key, value in self.explicit_preferences.items():
            parsed = parse_explicit_key(key)
            if parsed is None:
                continue
            rule, target = parsed
            if rule is ExplicitRule.LIKE:
                priors[target] = float(value)
            elif rule is ExplicitRule.DISLIKE:
                priors[target] = -float(value)
        return priors

    def interest_weights(self, now: TimeLike | None = None, *, explicit: bool = True) -> dict[str, float]:
        """The current weight of every interest: positive minus negative decayed evidence, plus
        (with ``explicit``) the signed strength of an explicit like or dislike. This is what
        ranking uses."""
        names, positive, negative = _core.interest_evidence(self.interests, to_epoch(now, "now"), self.landmark)
        weights = dict(zip(names, map(operator.sub, positive, negative), strict=True))
        if explicit:
            for name, strength in self.explicit_priors().items():
                weights[name] = weights.get(name, 0.0) + strength
        return weights

    def interest_confidences(self, now: TimeLike | None = None) -> dict[str, float]:
        """The confidence of every interest (explicit likes and dislikes included) at ``now``."""
        priors = self.explicit_priors()
        evidence = self.interest_evidence(now)
        names = set(evidence) | set(priors)
        return {
            name: confidence(*evidence.get(name, (0.0, 0.0)), explicit=priors.get(name, 0.0)) for name in sorted(names)
        }

    def evidence_total(self, now: TimeLike | None = None) -> float:
        """``M``: all decayed evidence at ``now``, positive and negative, plus the strength of
        every explicit like and dislike, in units of one click of default weight (an event's
        weight is spread over its item's features, so each event adds its own weight once)."""
        _, positive, negative = _core.interest_evidence(self.interests, to_epoch(now, "now"), self.landmark)
        return math.fsum(positive) + math.fsum(negative) + sum(abs(v) for v in self.explicit_priors().values())

    def profile_confidence(self, now: TimeLike | None = None, *, prior: float = PROFILE_CONFIDENCE_PRIOR) -> float:
        """How much penchant knows about this user at ``now``, in [0, 1): ``M / (M + prior)``
        with ``M`` the :meth:`evidence_total` (``prior`` = 5: five clicks' worth gives one
        half, twenty give 0.8). Ranking scales personalization by it, so that a new user gets
        mostly the caller's order."""
        return profile_confidence_of(self.evidence_total(now), prior)

    def last_event_time(self) -> float | None:
        """Epoch seconds of the latest event applied to this profile, if any."""
        packed = _packed_history(self)
        if packed is not None:
            try:
                last = _core.packed_history_last_time(packed)
            except ValidationError:
                last = None  # decoding reads it, or says what is wrong
            if last is not None:
                return last
        if self.interaction_history:
            # The history keeps the most recent events in time order: its last is the latest.
            return self.interaction_history[-1].timestamp.timestamp()
        times = [i.last_updated.timestamp() for i in self.interests.values() if i.count]
        return max(times) if times else None

    # -- explicit preferences -----------------------------------------------------------------

    def set_explicit_preference(self, rule: ExplicitRule | str, target: str, value: Any = None) -> str:
        """States a preference in place (the manager stores it): ``("never", "genre:horror")``,
        ``("max", "price", 20)``, ``("like", "genre:jazz")`` (strength ``EXPLICIT_STRENGTH``
        unless ``value`` gives one). A rule replaces its contradictions on the same target
        (like ↔ dislike, like ↔ never). Returns the key."""
        rule = ExplicitRule.parse(rule)
        stored = _explicit_value(rule, target, value)
        if rule.on_attribute:
            other = ExplicitRule.MAX if rule is ExplicitRule.MIN else ExplicitRule.MIN
            bound = self.explicit_preferences.get(explicit_key(other, target))
            if bound is not None:
                low, high = (stored, bound) if rule is ExplicitRule.MIN else (bound, stored)
                if low > high:
                    raise ValidationError(f"min {low} of {target!r} would exceed its max {high}")
        for contradiction in _CONTRADICTS[rule]:
            self.explicit_preferences.pop(explicit_key(contradiction, target), None)
        key = explicit_key(rule, target)
        self.explicit_preferences[key] = stored
        return key

    def remove_explicit_preference(self, rule: ExplicitRule | str, target: str) -> bool:
        """Removes one explicit preference in place; returns whether there was one."""
        key = explicit_key(rule, target)
        self.preferences.pop(key, None)
        return self.explicit_preferences.pop(key, None) is not None

    def hard_filters(self) -> Filters:
        """The explicit preferences that are hard filters, as ranking :class:`~penchant.Filters`."""
        blocked: set[str] = set()
        ranges: dict[str, list[float | None]] = {}
        for key, value in self.explicit_preferences.items():
            parsed = parse_explicit_key(key)
            if parsed is None:
                continue
            rule, target = parsed
            if rule is ExplicitRule.NEVER:
                blocked.add(target)
            elif rule is ExplicitRule.MIN:
                ranges.setdefault(target, [None, None])[0] = float(value)
            elif rule is ExplicitRule.MAX:
                ranges.setdefault(target, [None, None])[1] = float(value)
        return Filters(
            blocked_features=frozenset(blocked),
            attribute_ranges={name: (low, high) for name, (low, high) in ranges.items()},
        )

    # -- plain form ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the whole profile: datetimes as ISO 8601 strings, enums as their
        values, plus ``schema_version``. :meth:`from_dict` reads it back."""
        return {
            "schema_version": SCHEMA_VERSION,
            "user_id": self.user_id,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "landmark": self.landmark,
            "event_count": self.event_count,
            "preferences": {
                key: {
                    "name": p.name,
                    "value": copy.deepcopy(p.value),
                    "confidence": p.confidence,
                    "source": p.source.value,
                    "category": p.category.value,
                    "last_updated": p.last_updated.isoformat(),
                }
                for key, p in self.preferences.items()
            },
            "interests": {
                name: {"sums": dict(i.sums), "count": i.count, "last_updated": i.last_updated.isoformat()}
                for name, i in self.interests.items()
            },
            "interaction_history": [
                {
                    "event_id": i.event_id,
                    "item_id": i.item_id,
                    "feedback_type": i.feedback_type,
                    "value": i.value,
                    "weight": i.weight,
                    "half_life": i.half_life,
                    "features": dict(i.features),
                    "attributes": dict(i.attributes),
                    "timestamp": i.timestamp.isoformat(),
                }
                for i in self.interaction_history
            ],
            "explicit_preferences": copy.deepcopy(self.explicit_preferences),
            "taste_vector": None if self.taste_vector is None else list(self.taste_vector),
            "merged_from": list(self.merged_from),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserProfile:
        """A profile from :meth:`to_dict`'s form. Unknown fields are ignored, so that a newer
        minor release can add some; a newer ``schema_version`` is refused."""
        if not isinstance(data, Mapping):
            raise ValidationError(f"a profile document must be a mapping, got {type(data).__name__}")
        schema = data.get("schema_version", SCHEMA_VERSION)
        if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
            raise ValidationError(f"invalid schema_version {schema!r}")
        if schema > SCHEMA_VERSION:
            raise ValidationError(
                f"the profile was written with schema version {schema}; this penchant reads up to {SCHEMA_VERSION}"
            )
        try:
            return cls(
                user_id=data["user_id"],
                version=data.get("version", 0),
                created_at=_read_time(data.get("created_at")),
                updated_at=_read_time(data.get("updated_at")),
                landmark=data.get("landmark", 0.0),
                event_count=data.get("event_count", 0),
                preferences={
                    key: Preference(
                        name=p["name"],
                        value=p.get("value"),
                        confidence=p["confidence"],
                        source=p["source"],
                        category=p["category"],
                        last_updated=_read_time(p.get("last_updated")),
                    )
                    for key, p in dict(data.get("preferences") or {}).items()
                },
                interests={
                    name: Interest(
                        name=name,
                        sums=dict(i.get("sums") or {}),
                        count=i.get("count", 0),
                        last_updated=_read_time(i.get("last_updated")),
                    )
                    for name, i in dict(data.get("interests") or {}).items()
                },
                interaction_history=[
                    Interaction(
                        item_id=i["item_id"],
                        feedback_type=i["feedback_type"],
                        value=i["value"],
                        weight=i["weight"],
                        features=dict(i.get("features") or {}),
                        attributes=dict(i.get("attributes") or {}),
                        timestamp=_read_time(i.get("timestamp")),
                        event_id=i.get("event_id", ""),
                        half_life=i.get("half_life", DEFAULT_HALF_LIFE),
                    )
                    for i in data.get("interaction_history") or []
                ],
                explicit_preferences=dict(data.get("explicit_preferences") or {}),
                taste_vector=data.get("taste_vector"),
                merged_from=list(data.get("merged_from") or []),
            )
        except ValidationError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValidationError(f"invalid profile document: {type(e).__name__}: {e}") from None


_IMMUTABLE = (str, int, float, bool, type(None))


def _copy_preference(preference: Preference, memo: dict[int, Any]) -> Preference:
    new = object.__new__(type(preference))
    new.__dict__.update(preference.__dict__)
    if not isinstance(preference.value, _IMMUTABLE):
        new.value = copy.deepcopy(preference.value, memo)
    return new


def _copy_interest(interest: Interest) -> Interest:
    new = object.__new__(type(interest))
    new.__dict__.update(interest.__dict__)
    new.sums = dict(interest.sums)
    return new


def _copy_interaction(interaction: Interaction) -> Interaction:
    # Every other field is immutable (str, float, datetime).
    new = object.__new__(type(interaction))
    new.__dict__.update(interaction.__dict__)
    new.features = dict(interaction.features)
    new.attributes = dict(interaction.attributes)
    return new


def _read_time(value: Any) -> datetime:
    if value is None:
        return utcnow()
    if isinstance(value, str):
        try:
            return to_datetime(datetime.fromisoformat(value))
        except ValueError:
            raise ValidationError(f"invalid ISO 8601 time {value!r}") from None
    return to_datetime(value)


REBASE_EXPONENT = _core.MAX_EXPONENT / 2
"""Move a profile's landmark forward once an event lies this many half-lives past it."""


# -- preference extraction --------------------------------------------------------------------

DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class PreferenceExtractor:
    """Derives :class:`Preference` s from a profile's interests and history.

    - **Categorical** (``like:<feature>`` / ``dislike:<feature>``, value: the current weight):
      the ``max_features`` strongest liked and disliked features whose confidence (module
      documentation) is at least ``min_confidence``.
    - **Numeric** (``range:<attribute>``, value ``{"low", "median", "high"}``): weighted
      quantiles (``quantiles`` low and high, and the median) of each numeric item attribute over
      the liked events (positive weight) of the history, each weighted by its decayed weight.
      Confidence ``n / (n + numeric_prior)`` with ``n = (Σw)²/Σw²`` the effective number of
      liked events; needs ``min_numeric_samples`` of them.
    - **Temporal** (``active_hours``: hours of day; ``active_days``: day names), when the data
      supports it: at least ``min_temporal_events`` events and activity concentrated enough
      (``1 − H/ln B`` ≥ ``min_concentration``, with ``H`` the entropy of the decayed activity
      over the ``B`` bins). The value is the fewest bins holding half the activity; confidence
      is the concentration times ``n / (n + temporal_prior)``. Hours are UTC plus
      ``utc_offset`` seconds.
    - **Explicit** preferences are reported too (source ``EXPLICIT``): hard rules with
      confidence 1, likes and dislikes with the confidence of their statement,
      ``max(0, s·weight) / (E + P + N + k)``.
    """

    def __init__(
        self,
        *,
        max_features: int = 10,
        min_confidence: float = 0.3,
        quantiles: tuple[float, float] = (0.1, 0.9),
        min_numeric_samples: int = 5,
        numeric_prior: float = 5.0,
        min_temporal_events: int = 20,
        min_concentration: float = 0.15,
        temporal_prior: float = 10.0,
        utc_offset: float = 0.0,
        exclude_attributes: Iterable[str] = ("expected_dwell",),
    ) -> None:
        for name, count in (
            ("max_features", max_features),
            ("min_numeric_samples", min_numeric_samples),
            ("min_temporal_events", min_temporal_events),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValidationError(f"{name} must be a non-negative int, got {count!r}")
        self.max_features = max_features
        self.min_numeric_samples = max(1, min_numeric_samples)
        self.min_temporal_events = min_temporal_events
        self.min_confidence = check_unit_interval(min_confidence, "min_confidence")
        self.min_concentration = check_unit_interval(min_concentration, "min_concentration")
        low, high = (check_unit_interval(q, "quantile") for q in quantiles)
        if low > high:
            raise ValidationError(f"quantiles must be (low, high) with low <= high, got {quantiles!r}")
        self.quantiles = (low, high)
        self.numeric_prior = check_finite(numeric_prior, "numeric_prior")
        self.temporal_prior = check_finite(temporal_prior, "temporal_prior")
        if self.numeric_prior <= 0 or self.temporal_prior <= 0:
            raise ValidationError("numeric_prior and temporal_prior must be positive")
        self.utc_offset = check_finite(utc_offset, "utc_offset")
        self.exclude_attributes = frozenset(exclude_attributes)

    def extract(self, profile: UserProfile, now: TimeLike | None = None) -> dict[str, Preference]:
        """Every preference of ``profile`` at ``now`` (default: the current time), by name."""
        moment = to_epoch(now, "now")
        stamp = to_datetime(moment)
        found: dict[str, Preference] = {}
        for preference in self.explicit(profile, moment, stamp):
            found[preference.name] = preference
        for preference in self.categorical(profile, moment, stamp):
            found.setdefault(preference.name, preference)
        # One call reads the history's columns, decays each event's weight (and its activity,
        # a unit weight) to now with one exponential per event, and sums what the numeric and
        # temporal preferences need.
        summary = _history_summary(profile, moment, [self.quantiles[0], 0.5, self.quantiles[1]], self.utc_offset)
        if summary is not None:
            for preference in (*self.numeric(summary, stamp), *self.temporal(summary, stamp)):
                found[preference.name] = preference
        return found

    def update(self, profile: UserProfile, now: TimeLike | None = None) -> None:
        """Replaces ``profile.preferences`` with :meth:`extract`'s result, in place."""
        profile.preferences = self.extract(profile, now)

    def explicit(self, profile: UserProfile, now: float, stamp: datetime) -> list[Preference]:
        priors = profile.explicit_priors()
        factors = _ChannelFactors(now, profile.landmark)
        out = []
        for key, value in profile.explicit_preferences.items():
            parsed = parse_explicit_key(key)
            if parsed is None:
                continue
            rule, target = parsed
            if rule.is_hard_filter:
                sure = 1.0
            else:
                interest = profile.interests.get(target)
                positive, negative = factors.evidence(interest.sums) if interest else (0.0, 0.0)
                strength = priors[target]
                weight = strength + positive - negative
                # How much the evidence still supports the statement: none once overtaken.
                sure = max(0.0, math.copysign(1.0, strength) * weight) / (
                    abs(strength) + positive + negative + CONFIDENCE_PRIOR
                )
            category = PreferenceCategory.NUMERIC if rule.on_attribute else PreferenceCategory.CATEGORICAL
            out.append(_preference(key, value, sure, PreferenceSource.EXPLICIT, category, stamp))
        return out

    def categorical(self, profile: UserProfile, now: float, stamp: datetime) -> list[Preference]:
        if not self.max_features or not profile.interests:
            return []
        names, positive, negative = _core.interest_evidence(profile.interests, now, profile.landmark)
        priors = profile.explicit_priors()
        blocked = profile.hard_filters().blocked_features if profile.explicit_preferences else None
        strength = [priors.get(name, 0.0) for name in names] if priors else None
        unwanted = [name in blocked for name in names] if blocked else None
        # The strongest liked and disliked features, ties by name; a stated like or dislike that
        # the evidence still agrees with is reported as the explicit preference, so only an
        # overtaken one gets an implicit entry (the other way).
        likes, dislikes = _core.categorical_choice(
            names, positive, negative, strength, unwanted, self.min_confidence, self.max_features, CONFIDENCE_PRIOR
        )
        out = []
        for rule, chosen in ((ExplicitRule.LIKE, likes), (ExplicitRule.DISLIKE, dislikes)):
            for i, weight, sure in chosen:
                out.append(
                    _preference(
                        f"{rule.value}:{names[i]}",
                        weight,
                        sure,
                        PreferenceSource.IMPLICIT,
                        PreferenceCategory.CATEGORICAL,
                        stamp,
                    )
                )
        return out

    def numeric(self, summary: _HistorySummary, stamp: datetime) -> list[Preference]:
        """Numeric preferences from a history's summary (see :func:`penchant._core.summarize_history`)."""
        names, counts, totals, squares, quantiles, _, _ = summary
        out = []
        for a, name in enumerate(names):
            # No squared weight left: every liked event decayed beyond a float's range of the
            # strongest (a half-life of an hour, a month ago), so none counts.
            if counts[a] < self.min_numeric_samples or name in self.exclude_attributes or not squares[a] > 0:
                continue
            effective = totals[a] ** 2 / squares[a]
            q_low, median, q_high = quantiles[3 * a : 3 * a + 3]
            out.append(
                _preference(
                    f"range:{name}",
                    {"low": q_low, "median": median, "high": q_high},
                    effective / (effective + self.numeric_prior),
                    PreferenceSource.IMPLICIT,
                    PreferenceCategory.NUMERIC,
                    stamp,
                )
            )
        return out

    def temporal(self, summary: _HistorySummary, stamp: datetime) -> list[Preference]:
        """Temporal preferences from a history's summary (see :func:`penchant._core.summarize_history`)."""
        events, activity = summary[5], summary[6]
        if activity is None or events < max(1, self.min_temporal_events):
            return []
        effective, hours, peak_hours, days, peak_days = activity
        support = effective / (effective + self.temporal_prior)
        out = []
        for name, concentration, value in (
            ("active_hours", hours, peak_hours),
            ("active_days", days, [DAY_NAMES[b] for b in peak_days]),
        ):
            if concentration < self.min_concentration:
                continue
            out.append(
                _preference(
                    name, value, concentration * support, PreferenceSource.IMPLICIT, PreferenceCategory.TEMPORAL, stamp
                )
            )
        return out


# -- the interest model -----------------------------------------------------------------------


class InterestModel:
    """Applies processed feedback (:class:`~penchant.feedback_collector.Signal`) to a profile:
    its interests by forward decay, the bounded interaction history (the ``max_history`` most
    recent events) and its preferences.

    The arithmetic is shared with the stores: :meth:`increments` gives the additions that
    :meth:`apply` makes in memory (in one batch kernel) and that a Redis store makes with
    ``HINCRBYFLOAT``.

    Preferences: explicit likes and dislikes touched by an event are re-scored at once; the
    implicit ones are re-extracted by ``extractor`` every ``refresh_every`` events (0: never
    automatically), as of the profile's latest event, because extraction reads the whole
    history and costs more than an event. They can lag by up to ``refresh_every − 1`` events;
    :meth:`ProfileManager.refresh_preferences` brings them up to date.
    """

    def __init__(
        self,
        *,
        max_history: int = 500,
        extractor: PreferenceExtractor | None = None,
        refresh_every: int = 50,
    ) -> None:
        if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 0:
            raise ValidationError(f"max_history must be a non-negative int, got {max_history!r}")
        if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 0:
            raise ValidationError(f"refresh_every must be a non-negative int, got {refresh_every!r}")
        self.max_history = max_history
        self.extractor = extractor if extractor is not None else PreferenceExtractor()
        self.refresh_every = refresh_every

    @staticmethod
    def needs_rebase(landmark: float, signal: Signal) -> bool:
        """Whether ``signal`` lies so far past ``landmark`` that the landmark must move first."""
        return (signal.timestamp - landmark) / signal.half_life > REBASE_EXPONENT

    @staticmethod
    def increments(landmark: float, signal: Signal) -> list[tuple[str, str, float]]:
        """``(feature, channel key, amount)`` additions for one signal: each feature's share
        ``|weight·feature weight|·2^((t − L)/h)`` goes to the positive or the negative channel of
        the signal's half-life. Raises ``ValidationError`` when the landmark must move first."""
        return InterestModel.increments_of(landmark, [signal])[0]

    @staticmethod
    def increments_of(landmark: float, signals: Sequence[Signal]) -> list[list[tuple[str, str, float]]]:
        """:meth:`increments` of each of ``signals``, in one kernel call."""
        return _core.signal_increments(landmark, signals if type(signals) is list else list(signals), _channel_keys)

    @staticmethod
    def rebase(profile: UserProfile, landmark: float) -> None:
        """Moves ``profile``'s landmark to ``landmark``, rescaling every sum so that no current
        value changes."""
        factors: dict[str, float] = {}
        for interest in profile.interests.values():
            for key, total in interest.sums.items():
                factor = factors.get(key)
                if factor is None:
                    _, half_life = parse_channel_key(key)
                    factor = factors[key] = _core.rebase_factor(profile.landmark, landmark, half_life)
                interest.sums[key] = total * factor
        profile.landmark = landmark

    def apply(self, profile: UserProfile, signals: Iterable[Signal], *, refresh: bool = True) -> None:
        """Adds ``signals`` to ``profile`` in place: interests, history, preferences, event
        count, version and ``updated_at``. A signal whose event id repeats one earlier in the
        same call is skipped (the stores skip ids applied before). Everything is validated
        before anything changes, so a ``ValidationError`` leaves the profile as it was.

        ``refresh=False`` leaves the re-extraction that a count crossing a multiple of
        ``refresh_every`` calls for to the caller, who makes it with
        :meth:`refresh_preferences` (``crossed=True``) once the profile holds its whole history:
        a store that hands ``apply`` the newest history entry alone (see :meth:`places_before`)
        does so."""
        batch = signals if isinstance(signals, list) else list(signals)
        with _gc.paused(len(batch)):
            self._apply(profile, batch, refresh)

    def _apply(self, profile: UserProfile, signals: list[Signal], refresh: bool = True) -> None:
        if len(signals) == 1 and self._apply_one(profile, signals[0], refresh):
            return
        seen: set[str] = set()
        fresh: list[Signal] = []
        for signal in signals:
            if signal.event_id in seen:
                continue
            if signal.user_id != profile.user_id:
                raise ValidationError(
                    f"signal {signal.event_id!r} is for user {signal.user_id!r}, not {profile.user_id!r}"
                )
            seen.add(signal.event_id)
            fresh.append(signal)
        if not fresh:
            return
        # Compute everything first; change the profile only once nothing can fail.
        datetimes = _Datetimes()
        update = self._interest_update(profile, fresh, datetimes)
        interactions = self._new_interactions(fresh, datetimes)
        update.commit(profile, datetimes)
        self._add_history(profile, interactions)
        profile.event_count += len(fresh)
        self._update_preferences(profile, fresh, update.touched, refresh)
        profile.version += 1
        profile.updated_at = utcnow()

    def _apply_one(self, profile: UserProfile, signal: Signal, refresh: bool = True) -> bool:
        """:meth:`_apply` of one signal in its common form (float fields, a dict of features with
        float weights, no rebase): the same additions, bit for bit, with none of the batch
        machinery, which cost more than the arithmetic of one event. Returns ``False``, having
        changed nothing, for anything else; the batch path then applies it (or explains what
        is wrong with it)."""
        t, w, h, features = signal.timestamp, signal.weight, signal.half_life, signal.features
        if not (
            type(t) is float
            and type(w) is float
            and type(h) is float
            and type(features) is dict
            and math.isfinite(t)
            and math.isfinite(w)
            and 0.0 < h < math.inf
        ):
            return False
        if signal.user_id != profile.user_id:
            raise ValidationError(f"signal {signal.event_id!r} is for user {signal.user_id!r}, not {profile.user_id!r}")
        # The arithmetic of accumulate_signals, in its order: exponent, 2^exponent, (w·v)·scale.
        exponent = (t - profile.landmark) / h
        if not (math.isfinite(exponent) and exponent <= REBASE_EXPONENT):
            return False
        scale = math.exp2(exponent)
        negative_key, positive_key = _channel_keys(h)
        additions: list[tuple[str, str, float]] = []
        for name, share in features.items():
            if type(name) is not str or type(share) is not float:
                return False
            amount = (w * share) * scale
            if amount == 0.0:
                continue
            if not math.isfinite(amount):
                return False
            additions.append((name, positive_key, amount) if amount > 0 else (name, negative_key, -amount))
        # Everything that can fail first (new interests check their names), then the changes.
        stamp = _utc(t)
        interests = profile.interests
        new = {name: Interest(name=name, last_updated=stamp) for name, _, _ in additions if name not in interests}
        entry: Interaction | None = None
        if self.max_history:
            entry = object.__new__(Interaction)  # as _new_interactions fills it
            entry.__dict__.update(
                item_id=check_id(signal.item_id, "item_id"),
                feedback_type=str(signal.feedback_type),
                value=check_finite(signal.value, "value"),
                weight=w,
                features=dict(features),
                attributes=dict(signal.attributes),
                timestamp=stamp,
                event_id=signal.event_id,
                half_life=h,
            )
        interests.update(new)
        for name, key, amount in additions:
            interest = interests[name]
            sums = interest.sums
            sums[key] = sums.get(key, 0.0) + amount
            interest.count += 1
            if stamp > interest.last_updated:
                interest.last_updated = stamp
        if entry is not None:
            history = profile.interaction_history
            if not history or _history_key(history[-1]) <= _history_key(entry):
                history.append(entry)
                if len(history) > self.max_history:
                    del history[: len(history) - self.max_history]
            else:
                self._add_history(profile, [entry])
        profile.event_count += 1
        self._update_preferences(profile, [signal], {name for name, _, _ in additions}, refresh)
        profile.version += 1
        profile.updated_at = utcnow()
        return True

    def _interest_update(
        self, profile: UserProfile, signals: Sequence[Signal], datetimes: _Datetimes
    ) -> _InterestUpdate:
        # One call reads the signals' fields and feature dicts in Rust and sums their evidence
        # against the landmark that applying them one by one would end with (each signal past
        # REBASE_EXPONENT half-lives of the landmark so far moves it to its own time), so that
        # every store places it alike however signals are batched. Values do not depend on it.
        batch = signals if isinstance(signals, list) else list(signals)
        names, half_lives, rebase_to, result = _core.accumulate_signal_objects(batch, profile.landmark, REBASE_EXPONENT)
        keys = [_channel_keys(h) for h in half_lives]
        name_list = names
        new: dict[str, Interest] = {}
        feature_idx, channel_idx, positive, amounts, counts, latest = result
        for f, count in enumerate(counts):
            if count and name_list[f] not in profile.interests:
                name = name_list[f]
                new[name] = Interest(name=name, last_updated=datetimes[latest[f]])
        return _InterestUpdate(
            rebase_to=rebase_to,
            new=new,
            additions=[
                (name_list[f], keys[c][p], a)
                for f, c, p, a in zip(feature_idx, channel_idx, positive, amounts, strict=True)
            ],
            counts=[(name_list[f], count, latest[f]) for f, count in enumerate(counts) if count],
        )

    def _new_interactions(self, signals: Sequence[Signal], datetimes: _Datetimes) -> list[Interaction]:
        """The history entries of the signals that can survive the bound, oldest first."""
        keep = self.max_history
        if not keep:
            return []
        candidates = signals
        if len(signals) > keep:
            # A replay brings far more events than the history keeps: pick the newest by time
            # in O(n) first (with every event tied at the cut), then sort only those.
            times = np.fromiter((s.timestamp for s in signals), dtype=np.float64, count=len(signals))
            cut = np.partition(times, len(times) - keep)[len(times) - keep]
            # Entries are ordered by their time in whole microseconds, then event id: an event
            # less than a microsecond before the cut may tie with it, so it stays a candidate.
            candidates = [signals[i] for i in np.flatnonzero(times >= cut - 2e-6).tolist()]
        # The history's own order (_history_key), not the float times: two events within one
        # microsecond share a time there, and their event ids decide.
        newest = candidates
        if len(candidates) > 1:
            newest = sorted(candidates, key=lambda s: (datetimes[s.timestamp], s.event_id))
        out = []
        for signal in newest[-keep:]:
            # The Rust reader has checked time, weight and half-life; the rest is checked here,
            # and the entry filled directly (its __post_init__ would repeat the checks).
            interaction = object.__new__(Interaction)
            interaction.__dict__.update(
                item_id=check_id(signal.item_id, "item_id"),
                feedback_type=str(signal.feedback_type),
                value=check_finite(signal.value, "value"),
                weight=float(signal.weight),
                features=dict(signal.features),
                attributes=dict(signal.attributes),
                timestamp=datetimes[signal.timestamp],
                event_id=signal.event_id,
                half_life=float(signal.half_life),
            )
            out.append(interaction)
        return out

    def _add_history(self, profile: UserProfile, interactions: Sequence[Interaction]) -> None:
        history = profile.interaction_history
        for interaction in interactions:
            # Events mostly arrive in time order: append, and insert in order otherwise.
            if not history or _history_key(history[-1]) <= _history_key(interaction):
                history.append(interaction)
            else:
                insort(history, interaction, key=_history_key)
        excess = len(history) - self.max_history
        if excess > 0:
            del history[:excess]

    def _update_preferences(
        self, profile: UserProfile, signals: Sequence[Signal], touched: set[str], refresh: bool = True
    ) -> None:
        self.refresh_preferences(profile, len(signals), touched, crossed=None if refresh else False)

    def places_before(self, last: Interaction | None, signals: Sequence[Signal]) -> bool:
        """Whether :meth:`apply` of ``signals`` to a profile whose newest history entry is
        ``last`` places any of them before that entry (and so reads the history). Otherwise a
        store that keeps the history apart may apply ``signals`` to the profile with ``last``
        alone in its history (and ``refresh=False``: extraction reads the whole history), then
        append what is added after it to the rest, and re-extract the preferences if the count
        crossed a multiple of ``refresh_every``."""
        if last is None or not self.max_history:
            return False
        newest = _history_key(last)
        # A float time more than a microsecond past the newest entry's rounds to a later
        # microsecond (datetime rounds to the nearest one; the entry's float time is within half
        # an ulp of it, and a float past it is an ulp past it): the common case, an event newer
        # than the history, needs no datetime.
        after = last.timestamp.timestamp() + 1e-6
        return any(
            not (type(t := s.timestamp) is float and after < t < math.inf) and (_utc(t), s.event_id) < newest
            for s in signals
        )

    def refresh_crosses(self, event_count: int, new_events: int) -> bool:
        """Whether adding ``new_events`` events that brought the count to ``event_count``
        crossed a multiple of ``refresh_every`` (then the implicit preferences are re-extracted)."""
        k = self.refresh_every
        return bool(k) and event_count // k != (event_count - new_events) // k

    def refresh_preferences(
        self,
        profile: UserProfile,
        new_events: int,
        touched: Collection[str],
        *,
        crossed: bool | None = None,
        latest: float | None = None,
    ) -> bool:
        """What :meth:`apply` does to the preferences once ``new_events`` events touching the
        features ``touched`` are in ``profile`` (its ``event_count`` included): re-extracts them
        all when the count crossed a multiple of ``refresh_every`` (``crossed`` overrides that
        test), else re-scores the stated likes and dislikes of touched features. Returns whether
        it changed anything. A store that adds events outside Python (Redis) calls it on the
        profile it reads back. ``latest``, when the caller knows it, is what
        ``profile.last_event_time()`` answers (which reads a stored history through)."""
        if self.refresh_crosses(profile.event_count, new_events) if crossed is None else crossed:
            self.extractor.update(profile, profile.last_event_time() if latest is None else latest)
            return True
        if not profile.explicit_preferences:
            return False
        touched_priors = [name for name in profile.explicit_priors() if name in touched]
        if not touched_priors:
            return False
        now = profile.last_event_time() if latest is None else latest
        stamp = to_datetime(now)
        for preference in self.extractor.explicit(profile, to_epoch(now), stamp):
            target = preference.name.partition(":")[2]
            if target in touched_priors:
                profile.preferences[preference.name] = preference
        return True


@dataclass
class _InterestUpdate:
    """What a batch of signals adds to a profile's interests, computed before any change."""

    rebase_to: float | None
    new: dict[str, Interest]
    additions: list[tuple[str, str, float]]
    counts: list[tuple[str, int, float]]

    @property
    def touched(self) -> set[str]:
        return {name for name, _, _ in self.counts}

    def commit(self, profile: UserProfile, datetimes: _Datetimes) -> None:
        if self.rebase_to is not None:
            InterestModel.rebase(profile, self.rebase_to)
        interests = profile.interests
        interests.update(self.new)
        for name, key, amount in self.additions:
            sums = interests[name].sums
            sums[key] = sums.get(key, 0.0) + amount
        for name, count, latest in self.counts:
            interest = interests[name]
            interest.count += count
            stamp = datetimes[latest]
            if stamp > interest.last_updated:
                interest.last_updated = stamp


# -- the profile manager ----------------------------------------------------------------------


class ProfileManager:
    """The lifecycle of profiles in a :class:`~penchant.profile_store.ProfileStore` (in memory
    by default): create, get, update, delete, reset, export, merge, and explicit preferences.

    Every stored change raises the profile's version by one. Methods that take
    ``expected_version`` raise :class:`~penchant.ConflictError` when the stored version differs;
    without one they retry a read-modify-write that lost a race, a few times.
    """

    RETRIES = 5

    def __init__(self, store: ProfileStore | None = None, *, model: InterestModel | None = None) -> None:
        if store is None:
            from penchant.profile_store import InMemoryProfileStore

            store = InMemoryProfileStore(model=model)
        self.store = store
        self.model = model or getattr(store, "model", None) or InterestModel()

    def create(self, user_id: str, *, explicit_preferences: Mapping[str, Any] | None = None) -> UserProfile:
        """Stores a new, empty profile (with these explicit preferences, keyed
        ``"<rule>:<target>"``); a ``ConflictError`` if the user already has one."""
        profile = UserProfile(user_id=user_id, explicit_preferences=dict(explicit_preferences or {}))
        self._refresh(profile)
        return self.store.put(profile, expected_version=0)

    def get(self, user_id: str) -> UserProfile | None:
        return self.store.get(user_id)

    def get_or_create(self, user_id: str) -> UserProfile:
        for _ in range(self.RETRIES):
            profile = self.store.get(user_id)
            if profile is not None:
                return profile
            try:
                return self.create(user_id)
            except ConflictError:
                continue
        raise ConflictError(f"profile {user_id!r} kept changing while it was being created")

    def update(self, profile: UserProfile, *, expected_version: int | None = None) -> UserProfile:
        """Validates and stores ``profile`` as the next version. With ``expected_version``
        (typically ``profile.version`` as read), fails with ``ConflictError`` if the stored
        version differs."""
        checked = UserProfile.from_dict(profile.to_dict())
        return self.store.put(checked, expected_version=expected_version)

    def delete(self, user_id: str) -> bool:
        """Removes every trace of the user from the store (profile, history, applied event ids);
        returns whether there was a profile."""
        return self.store.delete(user_id)

    def reset(self, user_id: str, *, keep_explicit: bool = True, expected_version: int | None = None) -> UserProfile:
        """Forgets everything learned (interests, history, preferences, taste vector), keeping
        the user and, with ``keep_explicit``, what they stated. Events recorded before the reset
        stay recorded, so resending one changes nothing."""

        def change(profile: UserProfile) -> UserProfile:
            fresh = UserProfile(
                user_id=user_id,
                created_at=profile.created_at,
                explicit_preferences=dict(profile.explicit_preferences) if keep_explicit else {},
                version=profile.version,
            )
            self._refresh(fresh)
            return fresh

        return self._modify(user_id, change, expected_version)

    def export(self, user_id: str, now: TimeLike | None = None) -> dict[str, Any]:
        """Everything stored about the user as a JSON-able document (``json.dumps`` takes it),
        for a data-access request: the profile in full, plus each interest's current weight and
        confidence. ``profile`` is ``None`` when nothing is stored."""
        check_id(user_id)
        moment = to_epoch(now, "now")
        profile = self.store.get(user_id)
        document: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "user_id": user_id,
            "exported_at": to_datetime(moment).isoformat(),
            "profile": None,
            "interest_summary": [],
        }
        if profile is None:
            return document
        document["profile"] = profile.to_dict()
        evidence = profile.interest_evidence(moment)
        priors = profile.explicit_priors()
        document["interest_summary"] = [
            {
                "feature": name,
                "weight": priors.get(name, 0.0) + positive - negative,
                "confidence": confidence(positive, negative, priors.get(name, 0.0)),
                "positive_evidence": positive,
                "negative_evidence": negative,
                "explicit_strength": priors.get(name, 0.0),
            }
            for name, (positive, negative) in sorted(evidence.items())
        ]
        return document

    def set_preference(
        self,
        user_id: str,
        rule: ExplicitRule | str,
        target: str,
        value: Any = None,
        *,
        expected_version: int | None = None,
    ) -> UserProfile:
        """Sets or updates an explicit preference (creating the profile if needed):
        ``set_preference(u, "never", "genre:horror")``, ``set_preference(u, "max", "price", 20)``,
        ``set_preference(u, "like", "genre:jazz")``. See :class:`ExplicitRule`."""
        rule = ExplicitRule.parse(rule)
        _explicit_value(rule, target, value)  # fail before touching the store

        def change(profile: UserProfile) -> UserProfile:
            profile.set_explicit_preference(rule, target, value)
            self._refresh(profile)
            return profile

        return self._modify(user_id, change, expected_version, create=True)

    def remove_preference(
        self, user_id: str, rule: ExplicitRule | str, target: str, *, expected_version: int | None = None
    ) -> UserProfile:
        """Removes an explicit preference; a profile without it is returned unchanged."""
        key = explicit_key(rule, target)

        def change(profile: UserProfile) -> UserProfile | None:
            if key not in profile.explicit_preferences:
                return None
            profile.remove_explicit_preference(rule, target)
            self._refresh(profile)
            return profile

        return self._modify(user_id, change, expected_version)

    def refresh_preferences(self, user_id: str, now: TimeLike | None = None) -> UserProfile:
        """Re-extracts the user's preferences now (default: as of their latest event)."""

        def change(profile: UserProfile) -> UserProfile:
            self._refresh(profile, now)
            return profile

        return self._modify(user_id, change, None)

    def merge(self, anonymous_id: str, user_id: str) -> UserProfile:
        """Merges an anonymous profile into a known user's and deletes the anonymous one.

        Events are combined through the store's own idempotency: the anonymous history is
        replayed into the user's profile, so an event recorded under both ids counts once.
        Evidence from anonymous events that had already left the bounded history is added
        as it stands (those events' ids are no longer known, so only the history window is
        checked for duplicates: an event recorded under both ids that has left the anonymous
        history is counted twice, as nothing records what it added). Explicit preferences are
        combined, the user's own winning a contradiction; a taste vector is kept from the
        anonymous profile only when the user has none. Merging an id twice adds nothing the
        second time, nor does merging a profile that was merged into the anonymous one."""
        check_id(anonymous_id, "anonymous_id")
        check_id(user_id)
        if anonymous_id == user_id:
            raise ValidationError("cannot merge a profile into itself")
        anonymous = self.store.get(anonymous_id)
        if anonymous is None:
            return self.get_or_create(user_id)
        signals = [interaction.to_signal(user_id) for interaction in anonymous.interaction_history]
        residual = _residual_interests(anonymous, signals)
        if signals:
            self.store.apply_feedback(user_id, signals)

        def change(profile: UserProfile) -> UserProfile | None:
            if anonymous_id in profile.merged_from:
                return None
            _add_interests(profile, residual, anonymous.landmark)
            profile.event_count += max(0, anonymous.event_count - len(anonymous.interaction_history))
            for key, value in anonymous.explicit_preferences.items():
                parsed = parse_explicit_key(key)
                if key in profile.explicit_preferences:
                    continue
                if parsed is None:
                    profile.explicit_preferences[key] = value
                    continue
                rule, target = parsed
                if any(explicit_key(c, target) in profile.explicit_preferences for c in _CONTRADICTS[rule]):
                    continue
                try:
                    profile.set_explicit_preference(rule, target, value)
                except ValidationError:
                    continue  # e.g. a min above the user's own max: the user's statement wins
            # Profiles merged into the anonymous one are merged into this one now: merging one
            # of them again (a retry that still finds it) must add nothing.
            for earlier in (*anonymous.merged_from, anonymous_id):
                if earlier not in profile.merged_from and earlier != user_id:
                    profile.merged_from.append(earlier)
            if profile.taste_vector is None and anonymous.taste_vector is not None:
                profile.taste_vector = list(anonymous.taste_vector)
            self._refresh(profile)
            return profile

        merged = self._modify(user_id, change, None, create=True)
        self.store.delete(anonymous_id)
        return merged

    # -- helpers --

    def _refresh(self, profile: UserProfile, now: TimeLike | None = None) -> None:
        if now is None:
            latest = profile.last_event_time()
            now = time.time() if latest is None else latest
        self.model.extractor.update(profile, now)

    def _modify(
        self,
        user_id: str,
        change: Callable[[UserProfile], UserProfile | None],
        expected_version: int | None,
        *,
        create: bool = False,
    ) -> UserProfile:
        """Read, change, write with the version read; retry on a lost race unless the caller
        named the version."""
        check_id(user_id)
        for _ in range(self.RETRIES):
            current = self.store.get(user_id)
            if current is None:
                if not create:
                    raise ValidationError(f"no profile for user {user_id!r}")
                current = UserProfile(user_id=user_id)
            read_version = current.version
            if expected_version is not None and expected_version != read_version:
                raise ConflictError(f"profile {user_id!r} is at version {read_version}, not {expected_version}")
            changed = change(current)
            if changed is None:
                return current
            try:
                return self.store.put(changed, expected_version=read_version)
            except ConflictError:
                if expected_version is not None:
                    raise
        raise ConflictError(f"profile {user_id!r} kept changing; gave up after {self.RETRIES} attempts")


def _residual_interests(profile: UserProfile, signals: Sequence[Signal]) -> dict[str, Interest]:
    """``profile``'s interests minus what ``signals`` (its history, replayed) contributed: the
    evidence of events that have left the bounded history."""
    residual = {
        name: Interest(name=name, sums=dict(i.sums), count=i.count, last_updated=i.last_updated)
        for name, i in profile.interests.items()
    }
    if signals:
        update = InterestModel(max_history=0, refresh_every=0)._interest_update(profile, signals, _Datetimes())
        if update.rebase_to is not None:
            raise ValidationError("the anonymous profile's history lies past its landmark; it cannot be merged")
        for name, key, amount in update.additions:
            interest = residual[name]
            left = interest.sums.get(key, 0.0) - amount
            # What remains after removing every history event is rounding error unless older
            # events contributed; drop it below a relative tolerance.
            if left <= 1e-9 * max(amount, interest.sums.get(key, 0.0)):
                interest.sums.pop(key, None)
            else:
                interest.sums[key] = left
        for name, count, _ in update.counts:
            residual[name].count = max(0, residual[name].count - count)
    return {name: i for name, i in residual.items() if i.sums}


def _add_interests(profile: UserProfile, extra: Mapping[str, Interest], landmark: float) -> None:
    """Adds interests kept against ``landmark`` to ``profile``'s, moving them to its landmark."""
    if not extra:
        return
    for interest in extra.values():
        for key in interest.sums:
            _, half_life = parse_channel_key(key)
            if (landmark - profile.landmark) / half_life > REBASE_EXPONENT:
                InterestModel.rebase(profile, landmark)
    for name, interest in extra.items():
        target = profile.interests.get(name)
        if target is None:
            target = profile.interests[name] = Interest(name=name, last_updated=interest.last_updated)
        for key, total in interest.sums.items():
            _, half_life = parse_channel_key(key)
            moved = total * _core.rebase_factor(landmark, profile.landmark, half_life)
            target.sums[key] = target.sums.get(key, 0.0) + moved
        target.count += interest.count
        target.last_updated = max(target.last_updated, interest.last_updated)
