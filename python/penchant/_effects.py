"""One body of logic for the sync and the async API (DESIGN.md, mechanism 9).

A store operation is written once, as a generator that yields :class:`Effect` objects (a batch
of Redis commands, an SQL transaction) and receives their results::

    def _get_op(self, user_id):
        rows = yield self.database.transaction(read_profile(user_id))
        return decode(rows)

It does no I/O itself. :func:`run_sync` drives such a generator by executing each effect with
blocking I/O; :func:`run_async` drives the very same generator with ``await``. An effect that
fails is thrown back into the generator at its ``yield``, so ``try``/``except`` around a
``yield`` handles I/O errors in both modes, and operations compose with ``yield from``. Only
the effects themselves (a handful of small classes) know both ways of doing I/O.

This is the "sans-I/O" design: the alternative of an async core behind a sync facade would need
an event loop in every sync call, and two hand-written copies (as redis-py has) drift apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from typing import Any, Generic, TypeAlias, TypeVar

__all__ = ["Effect", "Op", "immediate", "run_async", "run_sync"]

T = TypeVar("T")
R = TypeVar("R")


class Effect(ABC, Generic[R]):
    """A unit of I/O that an operation asks its driver to perform."""

    __slots__ = ()

    @abstractmethod
    def run_sync(self) -> R:
        """Performs the I/O with blocking calls."""

    @abstractmethod
    async def run_async(self) -> R:
        """Performs the I/O without blocking the event loop."""


Op: TypeAlias = Generator[Effect[Any], Any, T]
"""A store operation: yields effects, receives their results, returns its value."""


def run_sync(op: Op[T]) -> T:
    """Runs ``op`` to completion with blocking I/O and returns its value."""
    try:
        effect = next(op)
        while True:
            try:
                result = effect.run_sync()
            except Exception as exc:  # thrown into the operation, which decides
                effect = op.throw(exc)
            else:
                effect = op.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def run_async(op: Op[T]) -> T:
    """Runs ``op`` to completion on the running event loop and returns its value."""
    try:
        effect = next(op)
        while True:
            try:
                result = await effect.run_async()
            except Exception as exc:  # thrown into the operation, which decides
                effect = op.throw(exc)
            else:
                effect = op.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


def immediate(value: T) -> Op[T]:
    """An operation that needs no I/O and returns ``value``."""
    return value
    yield  # pragma: no cover - makes this function a generator
