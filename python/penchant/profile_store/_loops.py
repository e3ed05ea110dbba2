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

    ``asyncio.run`` cancels the loop's remaining tasks before that, and waits for them. A
    resource with background tasks that survive a cancellation would hold it up forever:
    psycopg_pool's workers catch the ``CancelledError`` of a task they are running (adding a
    connection, say) and wait for the next one, until the pool closes. So a watcher task,
    cancelled with the others, closes the resource then.
    """

    def __init__(self, create: Callable[[], R], close: Callable[[R], Awaitable[None]]) -> None:
        self._create = create
        self._close = close
        self._items: dict[asyncio.AbstractEventLoop, tuple[R, AsyncGenerator[None, None], asyncio.Task[None]]] = {}
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
                watcher = loop.create_task(self._close_when_cancelled(loop, guard), name="penchant-close-on-cancel")
                self._items[loop] = (resource, guard, watcher)
        if existing is not None:  # another task of this loop got there first
            await guard.aclose()
            return existing[0]
        return resource

    async def _guard(self, loop: asyncio.AbstractEventLoop, resource: R) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                item = self._items.get(loop)
                if item is not None and item[0] is resource:
                    del self._items[loop]
                else:
                    item = None
            if item is not None and item[2] is not asyncio.current_task():
                item[2].cancel()  # the watcher has nothing left to close
            await self._close(resource)

    async def _close_when_cancelled(self, loop: asyncio.AbstractEventLoop, guard: AsyncGenerator[None, None]) -> None:
        try:
            await loop.create_future()  # never set: waits for the loop to cancel its tasks
        except asyncio.CancelledError:
            with self._lock:
                item = self._items.get(loop)
            if item is not None and item[1] is guard:  # not closed by other means already
                await guard.aclose()
            raise

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
        for loop, (_, guard, _) in items:
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(guard.aclose())  # the watcher, cancelled by the guard, ends in it too
