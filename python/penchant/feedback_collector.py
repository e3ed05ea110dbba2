"""Feedback (seed module 4): what users tell penchant, explicitly or by their behaviour."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from penchant._time import to_datetime, utcnow
from penchant._validate import check_finite, check_id
from penchant.errors import ValidationError

__all__ = ["Feedback", "FeedbackType", "Signal"]


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
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        names = ", ".join(t.value for t in cls)
        raise ValidationError(f"unknown feedback type {value!r}; expected one of: {names}")


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


@dataclass
class Feedback:
    """One feedback event, as the seed defines it, plus an ``event_id`` that makes recording it
    idempotent (generated when not given)."""

    user_id: str
    item_id: str
    feedback_type: FeedbackType
    value: float = 1.0
    context: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)
    event_id: str = ""

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
        self.event_id = check_id(self.event_id, "event_id") if self.event_id else uuid.uuid4().hex


@dataclass(frozen=True)
class Signal:
    """One feedback event after processing: what a profile learns from it. The
    ``FeedbackProcessor`` makes these; :class:`~penchant.user_profile.InterestModel` and the
    profile stores apply them.

    ``weight`` is signed (negative for a dislike or a skip) and is spread over ``features`` in
    proportion to their weights; ``half_life`` (seconds) is how fast this event's evidence fades;
    ``timestamp`` is epoch seconds.
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
