"""Time as penchant keeps it: float seconds since the epoch, UTC. Naive datetimes are taken as
UTC, the same rule the Rust item reader applies."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

from penchant.errors import ValidationError

__all__ = ["TimeLike", "to_datetime", "to_epoch", "utcnow"]

TimeLike = datetime | float | int


def to_epoch(value: TimeLike | None, what: str = "time") -> float:
    """Seconds since the epoch of a datetime or a number; ``None`` means now."""
    if value is None:
        return time.time()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{what} must be a datetime or epoch seconds, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValidationError(f"{what} must be finite, got {seconds}")
    return seconds


def to_datetime(value: TimeLike | None, what: str = "time") -> datetime:
    """An aware UTC datetime for a datetime or epoch seconds; ``None`` means now."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(to_epoch(value, what), tz=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
