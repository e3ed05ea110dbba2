"""Pausing Python's cyclic garbage collector around large batches.

A replay makes hundreds of thousands of short-lived, acyclic objects (signals, history
entries). Each allocation counts towards the collector's thresholds, and every so often a full
collection walks the whole heap, including the caller's event log: measured at 35-50 % of a
100,000-event replay. None of those objects can form a cycle, so the walks find nothing.
Batches of at least ``MIN_BATCH`` events therefore run with the collector paused.

The switch is process-global, so the pause is shared and bounded:

* Nested and concurrent batches (any threads) share one pause: the first to start turns the
  collector off, the last to finish turns it back on, on every path (a batch that raises
  included). A pause never turns on a collector that was off when it began: the application's
  own ``gc.disable()`` is left alone.
* Overlapping batches in several threads could otherwise keep the collector off for as long as
  one of them runs, and cycles made meanwhile by any code of the process would pile up. So
  while a pause lasts longer than :data:`MAX_PAUSE` seconds, a batch that finishes runs one
  full collection (``gc.collect()``) and the clock restarts: the process never goes longer than
  about ``MAX_PAUSE`` plus one batch without a full collection.
"""

from __future__ import annotations

import gc
import threading
import time
from contextlib import AbstractContextManager, nullcontext

__all__ = ["MAX_PAUSE", "MIN_BATCH", "paused"]

MIN_BATCH = 1_000
"""Smaller batches run with the collector as it is: they gain nothing measurable."""

MAX_PAUSE = 1.0
"""Seconds a shared pause may last before a finishing batch runs a full collection."""

_lock = threading.Lock()
_depth = 0
_owned = False  # whether the current pause turned the collector off (and must turn it on)
_since = 0.0  # when the collector was last turned off or collected during the current pause


class _Pause:
    __slots__ = ()

    def __enter__(self) -> None:
        global _depth, _owned, _since
        with _lock:
            if _depth == 0 and gc.isenabled():
                gc.disable()
                _owned = True
                _since = time.monotonic()
            _depth += 1

    def __exit__(self, *exc: object) -> None:
        global _depth, _owned, _since
        collect = False
        with _lock:
            _depth -= 1
            if _owned:
                if _depth == 0:
                    _owned = False
                    gc.enable()
                elif time.monotonic() - _since >= MAX_PAUSE:
                    _since = time.monotonic()
                    collect = True
        if collect:  # outside the lock: other batches may start and finish meanwhile
            gc.collect()


# Small batches (one event, on a budget of tens of microseconds) get a shared do-nothing
# context: building a generator-based one per call cost a few microseconds.
_UNCHANGED: AbstractContextManager[None] = nullcontext()
_PAUSE = _Pause()


def paused(size: int) -> AbstractContextManager[None]:
    """A context in which the collector is paused if ``size`` is at least :data:`MIN_BATCH` and
    it was enabled (see the module documentation for how concurrent pauses share it)."""
    return _UNCHANGED if size < MIN_BATCH else _PAUSE
