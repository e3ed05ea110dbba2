"""asyncio clients and pools belong to the event loop that created them. A store used from
several loops (each ``asyncio.run`` makes a new one) keeps one resource per loop and must close
it before that loop closes, or its sockets leak."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

R = TypeVar("R")


class PerLoop(Generic[R]):
    """One resource per running event loop, closed when its loop shuts down.

    The closing rides on the loop's async-generator hooks: each resource is guarded by a
    started async generator, and ``asyncio.run`` (like any orderly shutdown) finalizes every
    async generator with ``loop.shutdown_asyncgens()`` while the loop still runs, which runs
    the guard's ``finally`` and closes the resource in its own loop.
    """

    def __init__(self, create: Callable[[], R], close: Callable[[R], Awaitable[None]]) -> None:
        self._create = create
        self._close = close
        self._items: dict[asyncio.AbstractEventLoop, tuple[R, AsyncGenerator[None, None]]] = {}
        self._lock = threading.Lock()

    async def get(self) -> R:
        loop = asyncio.get_running_loop()
        with self._lock:
            item = self._items.get(loop)
        if item is not None:
            return item[0]
        resource = self._create()
        guard = self._guard(loop, resource)
        await guard.__anext__()  # registers the guard with the loop's shutdown
        with self._lock:
            existing = self._items.get(loop)
            if existing is None:
                self._items[loop] = (resource, guard)
        if existing is not None:  # another task of this loop got there first
            await guard.aclose()
            return existing[0]
        return resource

    async def _guard(self, loop: asyncio.AbstractEventLoop, resource: R) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                if self._items.get(loop, (None,))[0] is resource:
                    del self._items[loop]
            await self._close(resource)

    async def close_current(self) -> None:
        """Closes the resource of the running loop."""
        with self._lock:
            item = self._items.get(asyncio.get_running_loop())
        if item is not None:
            await item[1].aclose()

    def close_idle(self) -> None:
        """Closes the resources of loops that are not running (from sync code)."""
        with self._lock:
            items = list(self._items.items())
        for loop, (_, guard) in items:
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(guard.aclose())
