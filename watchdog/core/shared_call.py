"""One call in flight, shared by everyone who wants its answer, each waiting only as long as they can.

Request paths (``/readyz``, ``/metrics``, the status page) read the state store. A hung store (a stopped
PostgreSQL, a lost network) must not hang them, and must not pile up calls either: a caller's deadline
therefore never cancels the call itself (cancelling a driver call on a hung server can hang as well), the
next caller joins the call still in flight, and a new call starts only once the last one has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedCall(Generic[T]):
    def __init__(self, call: Callable[[], Awaitable[T]]) -> None:
        self._call = call
        self._task: asyncio.Task[T] | None = None

    @property
    def in_flight(self) -> bool:
        return self._task is not None and not self._task.done()

    async def __call__(self, timeout_s: float) -> T:
        """The call's result, or ``TimeoutError`` after ``timeout_s`` (the call goes on for the next caller);
        the call's own exception propagates."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._call())
            # A result nobody waits for any more must not log "exception was never retrieved".
            self._task.add_done_callback(_consume)
        return await asyncio.wait_for(asyncio.shield(self._task), timeout_s)

    async def aclose(self) -> None:
        """Cancel a call still in flight (at shutdown)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


def _consume(task: asyncio.Task[T]) -> None:
    if not task.cancelled():
        task.exception()
