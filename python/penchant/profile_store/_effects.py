"""The stores' effect runner; it lives in :mod:`penchant._effects`, since the feedback collector,
the retriever and the engine share it (and the stores import the collector's ``Signal``)."""

from __future__ import annotations

from penchant._effects import Effect, Op, immediate, run_async, run_sync

__all__ = ["Effect", "Op", "immediate", "run_async", "run_sync"]
