"""Feedback (seed module 4): what users tell penchant, explicitly or by their behaviour.

:class:`FeedbackCollector` validates an event, :class:`FeedbackProcessor` turns it into a
:class:`Signal` (a signed weight, a half-life and the item's features), and the profile store
applies the signal with an :class:`~penchant.user_profile.InterestModel`.

Weights. One table, :data:`DEFAULT_FEEDBACK_RULES`, gives each feedback type a weight and a
half-life; every entry can be changed per processor. The signed weight of an event is the
type's weight times a factor read from its value:

==================  =====================================  =======  ==========
type                factor from ``value``                  weight   half-life
==================  =====================================  =======  ==========
rating              ``(value − mid)/(half range)`` of the     2.0   90 days
                    scale, in [−1, 1] (neutral: 0)
thumbs_up / _down   1 (``value`` ignored but must be 1)    ±2.0     90 days
like / dislike      1                                      ±2.0     90 days
bookmark            1                                       1.5     90 days
click               ``value`` (a count, default 1)          1.0     14 days
dwell               dwell score in [−1, 1], below           1.0     14 days
scroll_depth        ``value`` in [0, 1]                     0.5     14 days
purchase            ``value`` (a quantity, default 1)       3.0     60 days
conversion          ``value`` (default 1)                   3.0     60 days
skip                ``value`` (default 1)                  −0.5      7 days
dismiss             ``value`` (default 1)                  −1.0     30 days
impression          ``value`` (default 1)                  −0.1      3 days
==================  =====================================  =======  ==========

An impression means "shown and not clicked": send it only for items the user did not open.

Dwell. With ``d`` the dwell in seconds, ``x`` the expected dwell (the item's ``expected_dwell``
attribute when it has one, else the processor's ``expected_dwell``, 30 s) and
``b = min(bounce_dwell, x/2)`` (``bounce_dwell`` 5 s): a bounce (``d < b``) scores
``−(1 − d/b)``, from −1 at 0 s to 0 at ``b``; a longer stay scores ``1 − e^(−(d − b)/x)``, which
saturates towards 1, so an hour on a page counts little more than a few minutes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from numbers import Real
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from penchant import _core, _gc
from penchant._io import ApplyFeedback, ApplyFeedbackMany, LoadProfiles, Op, run_async, run_sync
from penchant._time import TimeLike, to_datetime, utcnow
from penchant._validate import MAX_NAME_BYTES, check_finite, check_id, check_name
from penchant.errors import ValidationError
from penchant.user_profile import InterestModel, UserProfile

if TYPE_CHECKING:
    from penchant.covisitation import CoVisitation
    from penchant.profile_store import ProfileStore

__all__ = [
    "DEFAULT_FEEDBACK_RULES",
    "ExplicitFeedback",
    "Feedback",
    "FeedbackCollector",
    "FeedbackProcessor",
    "FeedbackRule",
    "FeedbackType",
    "ImplicitFeedback",
    "Signal",
]

DAY = 86_400.0


class FeedbackType(StrEnum):
    """Every kind of feedback penchant understands. Its value is the name accepted wherever a
    feedback type is expected (``"click"``, ``"rating"``, ...)."""

    RATING = "rating"
    THUMBS_UP = "thumbs_up"
    THUMBS_DOWN = "thumbs_down"
    LIKE = "like"
    DISLIKE = "dislike"
    BOOKMARK = "bookmark"
    CLICK = "click"
    DWELL = "dwell"
    SCROLL_DEPTH = "scroll_depth"
    PURCHASE = "purchase"
    CONVERSION = "conversion"
    SKIP = "skip"
    DISMISS = "dismiss"
    IMPRESSION = "impression"

    @property
    def is_explicit(self) -> bool:
        """Whether the user stated it (a rating, a thumb, a like), as opposed to behaviour."""
        return self in _EXPLICIT

    @classmethod
    def parse(cls, value: FeedbackType | str) -> FeedbackType:
        """A ``FeedbackType`` from itself or its name; unknown names are a ``ValidationError``."""
        if isinstance(value, FeedbackType):
            return value
        if isinstance(value, str):
            found = _BY_NAME.get(value)
            if found is not None:
                return found
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        names = ", ".join(t.value for t in cls)
        raise ValidationError(f"unknown feedback type {value!r}; expected one of: {names}")


_BY_NAME = {t.value: t for t in FeedbackType}

_EXPLICIT = frozenset(
    {
        FeedbackType.RATING,
        FeedbackType.THUMBS_UP,
        FeedbackType.THUMBS_DOWN,
        FeedbackType.LIKE,
        FeedbackType.DISLIKE,
        FeedbackType.BOOKMARK,
    }
)

# Reading a member from an Enum class goes through its metaclass and costs more than the rest of
# the per-event arithmetic; the hot paths compare against these module constants instead.
_RATING, _DWELL, _SCROLL_DEPTH = FeedbackType.RATING, FeedbackType.DWELL, FeedbackType.SCROLL_DEPTH

# Types whose value is a flag: the event happened. A value other than 1 is a caller's mistake.
_FLAGS = _EXPLICIT - {FeedbackType.RATING}
# Types whose value must be given, and is checked against its own range.
_MEASURED = frozenset({FeedbackType.RATING, FeedbackType.DWELL, FeedbackType.SCROLL_DEPTH})


@dataclass(frozen=True)
class FeedbackRule:
    """How one feedback type teaches a profile: its ``weight`` (negative for negative feedback)
    and the ``half_life`` (seconds) of the evidence."""

    weight: float
    half_life: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", check_finite(self.weight, "feedback weight"))
        half_life = check_finite(self.half_life, "feedback half_life")
        if half_life <= 0:
            raise ValidationError(f"a feedback half_life must be positive seconds, got {half_life}")
        object.__setattr__(self, "half_life", half_life)


DEFAULT_FEEDBACK_RULES: Mapping[FeedbackType, FeedbackRule] = MappingProxyType(
    {
        FeedbackType.RATING: FeedbackRule(2.0, 90 * DAY),
        FeedbackType.THUMBS_UP: FeedbackRule(2.0, 90 * DAY),
        FeedbackType.THUMBS_DOWN: FeedbackRule(-2.0, 90 * DAY),
        FeedbackType.LIKE: FeedbackRule(2.0, 90 * DAY),
        FeedbackType.DISLIKE: FeedbackRule(-2.0, 90 * DAY),
        FeedbackType.BOOKMARK: FeedbackRule(1.5, 90 * DAY),
        FeedbackType.CLICK: FeedbackRule(1.0, 14 * DAY),
        FeedbackType.DWELL: FeedbackRule(1.0, 14 * DAY),
        FeedbackType.SCROLL_DEPTH: FeedbackRule(0.5, 14 * DAY),
        FeedbackType.PURCHASE: FeedbackRule(3.0, 60 * DAY),
        FeedbackType.CONVERSION: FeedbackRule(3.0, 60 * DAY),
        FeedbackType.SKIP: FeedbackRule(-0.5, 7 * DAY),
        FeedbackType.DISMISS: FeedbackRule(-1.0, 30 * DAY),
        FeedbackType.IMPRESSION: FeedbackRule(-0.1, 3 * DAY),
    }
)
"""The default weight and half-life of every feedback type (see the module documentation)."""


def _check_features(features: Any, item_id: str) -> dict[str, float]:
    """Item features as a dict name → weight: names valid, weights finite and non-negative, at
    least one positive (a profile learns nothing from an item without features)."""
    if isinstance(features, str):
        raise ValidationError(
            f"item {item_id!r}: features must be a list of names or a mapping name -> weight, got a str"
        )
    checked: dict[str, float] = {}
    pairs: Iterable[tuple[Any, Any]]
    if type(features) is list:  # the common cases first: the ABC checks cost more than the rest
        pairs = ((name, 1.0) for name in features)
    elif type(features) is dict or isinstance(features, Mapping):
        pairs = features.items()
    else:
        try:
            pairs = ((name, 1.0) for name in features)
        except TypeError:
            raise ValidationError(
                f"item {item_id!r}: features must be a list of names or a mapping name -> weight, "
                f"got {type(features).__name__}"
            ) from None
    total = 0.0
    for name, weight in pairs:
        # The common case inline (printable ASCII, a finite float): no call, no message.
        if not (type(name) is str and 0 < len(name) <= MAX_NAME_BYTES and name.isascii() and name.isprintable()):
            check_name(name, f"item {item_id!r}: feature name")
        if not (type(weight) is float and math.isfinite(weight)):
            weight = check_finite(weight, f"item {item_id!r}: weight of {name!r}")
        if weight < 0:
            raise ValidationError(f"item {item_id!r}: feature {name!r} has a negative weight ({weight})")
        checked[name] = weight
        total += weight
    if len(checked) > _core.MAX_FEATURES_PER_ITEM:
        raise ValidationError(f"item {item_id!r}: more than {_core.MAX_FEATURES_PER_ITEM} features")
    if total <= 0:
        raise ValidationError(
            f"item {item_id!r}: the item has no features (or only zero weights), so a profile cannot learn from it"
        )
    return checked


def _check_attributes(attributes: Any, item_id: str) -> dict[str, float]:
    """The numeric attributes of an item (others are ignored, as ranking ignores them)."""
    if not attributes:
        return {}
    if type(attributes) is not dict and not isinstance(attributes, Mapping):
        raise ValidationError(f"item {item_id!r}: attributes must be a mapping, got {type(attributes).__name__}")
    numeric: dict[str, float] = {}
    for name, value in attributes.items():
        kind = type(value)
        if kind is float or kind is int or (kind is not bool and isinstance(value, Real)):
            if not (type(name) is str and name.isascii() and name.isprintable() and 0 < len(name) <= MAX_NAME_BYTES):
                check_name(name, f"item {item_id!r}: attribute name")
            numeric[name] = check_finite(value, f"item {item_id!r}: attribute {name!r}")
    return numeric


def _new_event_id() -> str:
    """A random 128-bit id in hex (as ``uuid4().hex``, without building a UUID object)."""
    return os.urandom(16).hex()


@dataclass
class Feedback:
    """One feedback event, as the seed defines it, plus penchant's own fields: an
    ``event_id`` that makes recording it idempotent (generated when not given), and the
    ``features`` and numeric ``attributes`` of the item, which are what a profile learns from
    (an event carries them so that it can be replayed from a log)."""

    user_id: str
    item_id: str
    feedback_type: FeedbackType
    value: float = 1.0
    context: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)
    event_id: str = ""
    features: dict[str, float] = field(default_factory=dict)
    attributes: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_id(self.user_id, "user_id")
        if isinstance(self.item_id, int) and not isinstance(self.item_id, bool):
            self.item_id = str(self.item_id)
        check_id(self.item_id, "item_id")
        self.feedback_type = FeedbackType.parse(self.feedback_type)
        self.value = check_finite(self.value, "feedback value")
        if not isinstance(self.context, dict):
            raise ValidationError(f"context must be a dict, got {type(self.context).__name__}")
        self.timestamp = to_datetime(self.timestamp, "timestamp")
        self.event_id = check_id(self.event_id, "event_id") if self.event_id else _new_event_id()
        if self.features:
            self.features = _check_features(self.features, self.item_id)
        self.attributes = _check_attributes(self.attributes, self.item_id)


@dataclass
class ExplicitFeedback(Feedback):
    """Feedback the user states: a rating, thumbs up or down, like or dislike, bookmark."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.feedback_type.is_explicit:
            raise ValidationError(f"{self.feedback_type.value!r} is implicit feedback; use ImplicitFeedback")


@dataclass
class ImplicitFeedback(Feedback):
    """Feedback read from behaviour: click, dwell time, scroll depth, purchase or conversion,
    skip, dismiss, impression without a click."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.feedback_type.is_explicit:
            raise ValidationError(f"{self.feedback_type.value!r} is explicit feedback; use ExplicitFeedback")


@dataclass(frozen=True)
class Signal:
    """One feedback event after processing: what a profile learns from it. The
    ``FeedbackProcessor`` makes these; :class:`~penchant.user_profile.InterestModel` and the
    profile stores apply them.

    ``weight`` is signed (negative for a dislike or a skip) and is spread over ``features`` in
    proportion to their weights (the processor scales them to sum to 1); ``half_life``
    (seconds) is how fast this event's evidence fades; ``timestamp`` is epoch seconds.
    """

    event_id: str
    user_id: str
    item_id: str
    feedback_type: FeedbackType
    value: float
    weight: float
    half_life: float
    timestamp: float
    features: Mapping[str, float] = field(default_factory=dict)
    attributes: Mapping[str, float] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


def _item_field(item: Any, name: str) -> Any:
    if type(item) is dict or isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


class FeedbackProcessor:
    """Turns validated feedback into :class:`Signal` s, by one table of rules.

    ``weights`` and ``half_lives`` override :data:`DEFAULT_FEEDBACK_RULES` per type (keys are
    types or their names). ``rating_scale`` is the inclusive (low, high) of ratings.
    ``expected_dwell`` and ``bounce_dwell`` (seconds) shape the dwell score (module
    documentation). ``max_count`` bounds the value of count-like types (click, purchase, ...).
    ``max_clock_skew`` (seconds) is how far in the future a timestamp may lie. ``model``
    applies signals to in-memory profiles in :meth:`apply`.
    """

    def __init__(
        self,
        *,
        weights: Mapping[FeedbackType | str, float] | None = None,
        half_lives: Mapping[FeedbackType | str, float] | None = None,
        rating_scale: tuple[float, float] = (1.0, 5.0),
        expected_dwell: float = 30.0,
        bounce_dwell: float = 5.0,
        max_count: float = 1000.0,
        max_clock_skew: float = 300.0,
        model: InterestModel | None = None,
    ) -> None:
        rules = dict(DEFAULT_FEEDBACK_RULES)
        for key, weight in (weights or {}).items():
            kind = FeedbackType.parse(key)
            rules[kind] = FeedbackRule(weight, rules[kind].half_life)
        for key, half_life in (half_lives or {}).items():
            kind = FeedbackType.parse(key)
            rules[kind] = FeedbackRule(rules[kind].weight, half_life)
        self.rules: Mapping[FeedbackType, FeedbackRule] = MappingProxyType(rules)
        try:
            low, high = (check_finite(v, "rating_scale") for v in rating_scale)
        except (TypeError, ValueError):
            raise ValidationError(f"rating_scale must be a pair (low, high), got {rating_scale!r}") from None
        if not low < high:
            raise ValidationError(f"rating_scale must have low < high, got {rating_scale!r}")
        self.rating_scale = (low, high)
        self.expected_dwell = self._positive(expected_dwell, "expected_dwell")
        self.bounce_dwell = self._positive(bounce_dwell, "bounce_dwell")
        self.max_count = self._positive(max_count, "max_count")
        self.max_clock_skew = check_finite(max_clock_skew, "max_clock_skew")
        if self.max_clock_skew < 0:
            raise ValidationError("max_clock_skew must not be negative")
        self.model = model or InterestModel()

    @staticmethod
    def _positive(value: float, what: str) -> float:
        number = check_finite(value, what)
        if number <= 0:
            raise ValidationError(f"{what} must be positive, got {number}")
        return number

    # -- events --

    def feedback(
        self,
        user_id: str,
        item: Any,
        feedback_type: FeedbackType | str,
        value: float | None = None,
        *,
        timestamp: TimeLike | None = None,
        event_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Feedback:
        """A validated :class:`ExplicitFeedback` or :class:`ImplicitFeedback` for ``item``, in
        any form :func:`penchant.rank_items` accepts: a dict or an object with ``id``,
        ``features`` (a list of names or a mapping name → weight) and optional ``attributes``."""
        kind = FeedbackType.parse(feedback_type)
        if item is None or isinstance(item, str | int | float | bool):
            raise ValidationError(
                f"item must be a dict or an object with id and features, got {type(item).__name__}; "
                "a profile learns from the item's features"
            )
        item_id = _item_field(item, "id")
        if item_id is None:
            raise ValidationError("item has no id")
        if type(item_id) is int:
            item_id = str(item_id)
        item_id = check_id(item_id, "item_id")
        features = _item_field(item, "features")
        if not features:
            raise ValidationError(f"item {item_id!r} has no features, so a profile cannot learn from it")
        if value is None:
            if kind in _MEASURED:
                raise ValidationError(f"{kind.value} feedback needs a value")
            value = 1.0
        if context is None:
            context = {}
        elif type(context) is dict or isinstance(context, Mapping):
            context = dict(context)
        else:
            raise ValidationError(f"context must be a mapping, got {type(context).__name__}")
        # Everything Feedback.__post_init__ would check is checked here, once, and the object is
        # filled directly: recording one event is on a budget of tens of microseconds.
        fields: dict[str, Any] = {
            "user_id": check_id(user_id, "user_id"),
            "item_id": item_id,
            "feedback_type": kind,
            "value": check_finite(value, "feedback value"),
            "context": context,
            "timestamp": utcnow() if timestamp is None else to_datetime(timestamp, "timestamp"),
            "event_id": check_id(event_id, "event_id") if event_id else _new_event_id(),
            "features": _check_features(features, item_id),
            "attributes": _check_attributes(_item_field(item, "attributes"), item_id),
        }
        self._weight(kind, fields["value"], fields["attributes"])
        made: Feedback = object.__new__(ExplicitFeedback if kind in _EXPLICIT else ImplicitFeedback)
        made.__dict__.update(fields)
        return made

    def event_weight(
        self, feedback_type: FeedbackType | str, value: float, attributes: Mapping[str, float] | None = None
    ) -> float:
        """The signed weight of one event: the type's weight times the factor read from
        ``value`` (module documentation). Raises ``ValidationError`` for a value outside the
        type's range."""
        return self._weight(FeedbackType.parse(feedback_type), value, attributes)

    def _weight(self, kind: FeedbackType, value: float, attributes: Mapping[str, float] | None) -> float:
        rule = self.rules[kind]
        v = value if type(value) is float else check_finite(value, "feedback value")
        if not math.isfinite(v):
            raise ValidationError(f"{kind.value} value must be finite, got {v}")
        if kind is _RATING:
            low, high = self.rating_scale
            if not low <= v <= high:
                raise ValidationError(f"rating {v} lies outside the scale [{low:g}, {high:g}]")
            middle, half = (low + high) / 2, (high - low) / 2
            return rule.weight * (v - middle) / half
        if kind is _DWELL:
            if v < 0:
                raise ValidationError(f"dwell time must not be negative, got {v} s")
            expected = (attributes or {}).get("expected_dwell", self.expected_dwell)
            if not expected > 0:
                raise ValidationError(f"expected_dwell must be positive, got {expected}")
            bounce = min(self.bounce_dwell, expected / 2)
            score = -(1.0 - v / bounce) if v < bounce else 1.0 - math.exp(-(v - bounce) / expected)
            return rule.weight * score
        if kind is _SCROLL_DEPTH:
            if not 0.0 <= v <= 1.0:
                raise ValidationError(f"scroll depth must lie in [0, 1], got {v}")
            return rule.weight * v
        if kind in _FLAGS:
            if v != 1.0:
                raise ValidationError(f"{kind.value} feedback takes no value (or 1), got {v}")
            return rule.weight
        if not 0.0 <= v <= self.max_count:
            raise ValidationError(f"{kind.value} value must lie in [0, {self.max_count:g}], got {v}")
        return rule.weight * v

    def signal(self, feedback: Feedback, *, now: float | None = None) -> Signal:
        """The :class:`Signal` of one validated event. ``now`` (epoch seconds, default the
        current time) bounds its timestamp: at most ``max_clock_skew`` seconds later."""
        return self.signals([feedback], now=now)[0]

    def signals(self, feedbacks: Iterable[Feedback], *, now: float | None = None) -> list[Signal]:
        """The signals of many events, all validated before any is returned; an error names the
        position of the bad event."""
        batch = feedbacks if isinstance(feedbacks, list) else list(feedbacks)
        with _gc.paused(len(batch)):
            return self._signals(batch, now)

    def _signals(self, batch: list[Feedback], now: float | None) -> list[Signal]:
        latest = (time.time() if now is None else now) + self.max_clock_skew
        rules = self.rules
        weights: list[float] = []
        half_lives: list[float] = []
        times: list[float] = []
        for position, feedback in enumerate(batch):
            try:
                if not isinstance(feedback, Feedback):
                    raise ValidationError(f"expected a Feedback, got {type(feedback).__name__}")
                if not feedback.features:
                    raise ValidationError(
                        f"feedback on item {feedback.item_id!r} carries no features, so a profile cannot "
                        "learn from it; record it with the item (its id and features)"
                    )
                t = feedback.timestamp.timestamp()
                if t > latest:
                    raise ValidationError(
                        f"timestamp {feedback.timestamp.isoformat()} lies in the future "
                        f"(more than {self.max_clock_skew:g} s ahead)"
                    )
                kind = feedback.feedback_type
                weights.append(self._weight(kind, feedback.value, feedback.attributes))
                half_lives.append(rules[kind].half_life)
                times.append(t)
            except ValidationError as e:
                raise ValidationError(f"event {position}: {e}") from None
        # The objects themselves are made in Rust: see build_signals for why.
        signals: list[Signal] = _core.build_signals(batch, weights, half_lives, times, Signal)
        return signals

    def apply(self, profile: UserProfile, feedbacks: Iterable[Feedback]) -> None:
        """Processes ``feedbacks`` and applies them to ``profile`` in memory (no store)."""
        batch = feedbacks if isinstance(feedbacks, list) else list(feedbacks)
        if len(batch) == 1:
            # One event, on a budget of microseconds: no collector pause to arrange.
            signals = self._signals(batch, None)
            if signals[0].user_id != profile.user_id:
                raise ValidationError(
                    f"feedback for user {signals[0].user_id!r} applied to profile {profile.user_id!r}"
                )
            self.model._apply(profile, signals)
            return
        with _gc.paused(len(batch)):
            signals = self.signals(batch)
            for signal in signals:
                if signal.user_id != profile.user_id:
                    raise ValidationError(
                        f"feedback for user {signal.user_id!r} applied to profile {profile.user_id!r}"
                    )
            self.model.apply(profile, signals)


_RECORD_FIELDS = frozenset({"user_id", "item", "feedback_type", "value", "timestamp", "event_id", "context"})


class FeedbackCollector:
    """Records feedback into profiles kept by a :class:`~penchant.profile_store.ProfileStore`
    (in memory by default). Every event is validated first; a ``ValidationError`` leaves every
    stored profile as it was. Recording an event id a second time has no effect.

    The store applies signals with its own :class:`~penchant.user_profile.InterestModel`
    (history length, preference refresh); the default in-memory store is given
    ``processor.model``, and the default processor uses the given store's model.

    ``covisitation`` (a :class:`~penchant.CoVisitation`, shared by the whole tenant) learns from
    every recorded event too, in the user's sequence as the stored profile's history holds it.
    """

    def __init__(
        self,
        store: ProfileStore | None = None,
        processor: FeedbackProcessor | None = None,
        *,
        covisitation: CoVisitation | None = None,
    ) -> None:
        # One model for both sides by default: the store applies signals with its own.
        self.processor = processor or FeedbackProcessor(model=getattr(store, "model", None))
        if store is None:
            from penchant.profile_store import InMemoryProfileStore

            store = InMemoryProfileStore(model=self.processor.model)
        self.store = store
        self.covisitation = covisitation

    def record(
        self,
        user_id: str,
        item: Any,
        feedback_type: FeedbackType | str,
        value: float | None = None,
        *,
        timestamp: TimeLike | None = None,
        event_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Feedback:
        """Records one event and returns it (with its event id). ``item`` is a dict or object
        with ``id`` and ``features`` (and optional ``attributes``), as ``rank_items`` takes;
        ``feedback_type`` a :class:`FeedbackType` or its name; ``value`` the rating, the dwell in
        seconds, the scroll depth in [0, 1] or a count (see :class:`FeedbackProcessor`)."""
        op = self.record_op(
            user_id, item, feedback_type, value, timestamp=timestamp, event_id=event_id, context=context
        )
        return run_sync(op)[0]

    async def arecord(
        self,
        user_id: str,
        item: Any,
        feedback_type: FeedbackType | str,
        value: float | None = None,
        *,
        timestamp: TimeLike | None = None,
        event_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Feedback:
        """:meth:`record`, awaiting the store (its ``aapply_feedback``)."""
        op = self.record_op(
            user_id, item, feedback_type, value, timestamp=timestamp, event_id=event_id, context=context
        )
        return (await run_async(op))[0]

    def record_op(
        self,
        user_id: str,
        item: Any,
        feedback_type: FeedbackType | str,
        value: float | None = None,
        *,
        timestamp: TimeLike | None = None,
        event_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Op[tuple[Feedback, Signal]]:
        """The body of :meth:`record` and :meth:`arecord`, as an operation (see ``penchant._io``):
        validates, then yields the store call; returns the event and its signal."""
        feedback = self.processor.feedback(
            user_id, item, feedback_type, value, timestamp=timestamp, event_id=event_id, context=context
        )
        signal = self.processor.signal(feedback)
        profile = yield ApplyFeedback(self.store, feedback.user_id, [signal])
        if self.covisitation is not None:
            self.covisitation.observe_profile(profile, [signal])
        return feedback, signal

    def record_many(self, events: Iterable[Feedback | Mapping[str, Any]]) -> list[str]:
        """Records many events, each a :class:`Feedback` (with features) or a mapping with the
        arguments of :meth:`record` (``user_id``, ``item``, ``feedback_type``, and optionally
        ``value``, ``timestamp``, ``event_id``, ``context``). All are validated before any is
        stored; then every user's events are applied in one batch (atomic per user). Returns the
        event ids, in order."""
        batch = events if isinstance(events, list) else list(events)
        with _gc.paused(len(batch)):
            feedbacks, _ = run_sync(self.record_many_op(batch))
        return [f.event_id for f in feedbacks]

    async def arecord_many(self, events: Iterable[Feedback | Mapping[str, Any]]) -> list[str]:
        """:meth:`record_many`, awaiting the store (its ``aapply_feedback_many``)."""
        batch = events if isinstance(events, list) else list(events)
        with _gc.paused(len(batch)):
            feedbacks, _ = await run_async(self.record_many_op(batch))
        return [f.event_id for f in feedbacks]

    def record_many_op(self, events: list[Feedback | Mapping[str, Any]]) -> Op[tuple[list[Feedback], list[Signal]]]:
        """The body of :meth:`record_many` and :meth:`arecord_many`, as an operation."""
        feedbacks: list[Feedback] = []
        for position, event in enumerate(events):
            if isinstance(event, Feedback):
                feedbacks.append(event)
                continue
            if not isinstance(event, Mapping):
                raise ValidationError(f"event {position}: expected a Feedback or a mapping, got {type(event).__name__}")
            unknown = set(event) - _RECORD_FIELDS
            missing = {"user_id", "item", "feedback_type"} - set(event)
            if unknown or missing:
                raise ValidationError(
                    f"event {position}: unknown field(s) {sorted(unknown)}, missing field(s) {sorted(missing)}"
                )
            fields = dict(event)
            try:
                feedbacks.append(
                    self.processor.feedback(
                        fields.pop("user_id"), fields.pop("item"), fields.pop("feedback_type"), **fields
                    )
                )
            except ValidationError as e:
                raise ValidationError(f"event {position}: {e}") from None
        signals = self.processor.signals(feedbacks)
        if signals:
            yield ApplyFeedbackMany(self.store, signals)
            if self.covisitation is not None:
                yield from self._observe_covisitation(signals)
        return feedbacks, signals

    def _observe_covisitation(self, signals: list[Signal]) -> Op[None]:
        """Teaches the co-visitation model a batch just applied: each engaged user's stored
        history gives the items that precede their new events. Learned in time order across the
        users, so batching does not change what it learns."""
        assert self.covisitation is not None
        from penchant.covisitation import ENGAGEMENT_TYPES

        by_user: dict[str, list[Signal]] = {}
        for signal in signals:
            if signal.feedback_type in ENGAGEMENT_TYPES:
                by_user.setdefault(signal.user_id, []).append(signal)
        if not by_user:
            return
        profiles = yield LoadProfiles(self.store, list(by_user))
        self.covisitation.observe_profiles(
            (profiles[user_id], user_signals) for user_id, user_signals in by_user.items() if user_id in profiles
        )
