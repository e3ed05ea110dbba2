"""penchant's exceptions: one tree under :class:`PenchantError`."""

from __future__ import annotations

__all__ = ["ConflictError", "PenchantError", "StoreUnavailableError", "ValidationError"]


class PenchantError(Exception):
    """The base of every exception penchant raises on purpose."""


class ValidationError(PenchantError, ValueError):
    """Input that penchant refuses: wrong shape, type or value. Nothing was changed."""


class ConflictError(PenchantError):
    """An update named an expected profile version that is no longer current."""


class StoreUnavailableError(PenchantError):
    """A storage tier could not be reached and no other tier could serve the request."""
