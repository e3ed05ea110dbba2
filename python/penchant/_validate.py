"""Checks shared by every module: ids and names are validated before they become keys, SQL
parameters or feature names."""

from __future__ import annotations

import math
import re
from typing import Any

from penchant.errors import ValidationError

__all__ = ["MAX_NAME_BYTES", "MAX_USER_ID_BYTES", "check_finite", "check_id", "check_name", "check_unit_interval"]

MAX_USER_ID_BYTES = 256
"""User ids and tenant names: at most this many bytes of UTF-8."""

MAX_NAME_BYTES = 1024
"""Feature and preference names: at most this many bytes of UTF-8 (the Rust limit too)."""

_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def _check_text(value: Any, what: str, limit: int) -> str:
    # Fast path for the common case, since ids and feature names are checked once per event:
    # printable ASCII has no control characters and one byte per character.
    if type(value) is str and 0 < len(value) <= limit and value.isascii() and value.isprintable():
        return value
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{what} must not be empty")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ValidationError(f"{what} is {size} bytes long; the limit is {limit}")
    if _CONTROL_CHARACTER.search(value):
        raise ValidationError(f"{what} must not contain control characters: {value[:40]!r}")
    return value


def check_id(value: Any, what: str = "user_id") -> str:
    """A user id, tenant or event id: a non-empty str of at most 256 bytes, no control characters."""
    return _check_text(value, what, MAX_USER_ID_BYTES)


def check_name(value: Any, what: str = "name") -> str:
    """A feature or preference name: a non-empty str of at most 1024 bytes, no control characters."""
    return _check_text(value, what, MAX_NAME_BYTES)


def check_finite(value: Any, what: str) -> float:
    if type(value) is float and math.isfinite(value):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValidationError(f"{what} must be a number, got {type(value).__name__}") from None
    number = float(value)
    if not math.isfinite(number):
        raise ValidationError(f"{what} must be finite, got {number}")
    return number


def check_unit_interval(value: Any, what: str) -> float:
    number = check_finite(value, what)
    if not 0.0 <= number <= 1.0:
        raise ValidationError(f"{what} must lie in [0, 1], got {number}")
    return number
