"""The bulkhead: a cap on concurrent calls to one upstream, with a short, bounded queue.

A slow upstream must not tie up every connection and task of the hub. :class:`Bulkhead`
lets ``max_concurrent`` calls run; up to ``max_queued`` more wait (first come, first
served) for at most ``max_wait`` seconds; anything beyond is refused at once with
:class:`~medianest.errors.BulkheadFull`, as is a waiter whose wait times out.

A freed slot is handed directly to the first waiter, so a newcomer can never overtake the
queue. A waiter that is cancelled (or times out) leaves the queue; if the slot had already
been handed to it, the slot goes on to the next waiter, so cancellation never leaks a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from medianest.errors import BulkheadFull
from medianest.resilience.clock import SYSTEM_CLOCK, Clock
from medianest.resilience.timeout import schedule

__all__ = ["Bulkhead", "BulkheadSnapshot"]

T = TypeVar("T")


class _WaitExpired(Exception):
    """Set on a waiter's future when its ``max_wait`` passed."""


@dataclass(frozen=True, slots=True)
class BulkheadSnapshot:
    """A bulkhead at one instant."""

    name: str
    active: int
    queued: int
    max_concurrent: int
    max_queued: int


class Bulkhead:
    """At most ``max_concurrent`` calls at once, ``max_queued`` waiting ``max_wait`` s each.

    ``max_wait=None`` lets waiters wait as long as the caller does (an outer deadline still
    applies). Use :meth:`call`, ``async with bulkhead:``, or :meth:`try_acquire` /
    :meth:`acquire` with :meth:`release` in a ``finally``.
    """

    __slots__ = ("_active", "_waiters", "clock", "max_concurrent", "max_queued", "max_wait", "name")

    def __init__(
        self,
        max_concurrent: int = 64,
        *,
        max_queued: int = 256,
        max_wait: float | None = 1.0,
        name: str = "",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if max_concurrent < 1 or max_queued < 0 or (max_wait is not None and max_wait < 0):
            raise ValueError("max_concurrent >= 1, max_queued >= 0 and max_wait >= 0")
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.max_wait = max_wait
        self.name = name
        self.clock = clock
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def active(self) -> int:
        """Calls holding a slot now."""
        return self._active

    @property
    def queued(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._waiters)

    def snapshot(self) -> BulkheadSnapshot:
        """Occupancy and limits, for status pages."""
        return BulkheadSnapshot(
            self.name, self._active, len(self._waiters), self.max_concurrent, self.max_queued
        )

    def try_acquire(self) -> bool:
        """Take a free slot without waiting; ``False`` when none is free."""
        if self._active < self.max_concurrent:
            self._active += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if needed; raises :class:`BulkheadFull`."""
        if self._active < self.max_concurrent:
            self._active += 1
            return
        if len(self._waiters) >= self.max_queued or self.max_wait == 0:
            raise self._full()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        timer = None
        if self.max_wait is not None:
            timer = schedule(self.clock, self.max_wait, lambda: _expire(future))
        try:
            await future
        except BaseException as exc:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release()
            else:
                self._forget(future)
            if isinstance(exc, _WaitExpired):
                raise self._full() from None
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def release(self) -> None:
        """Free a slot: hand it to the first live waiter, or return it to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1

    def _forget(self, future: asyncio.Future[None]) -> None:
        future.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(future)

    def _full(self) -> BulkheadFull:
        return BulkheadFull(
            self.name, max_concurrent=self.max_concurrent, max_queued=self.max_queued
        )

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` while holding a slot."""
        await self.acquire()
        try:
            return await fn()
        finally:
            self.release()

    async def __aenter__(self) -> Bulkhead:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self.name!r}, active={self._active}/{self.max_concurrent}, "
            f"queued={len(self._waiters)}/{self.max_queued})"
        )


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(_WaitExpired())
