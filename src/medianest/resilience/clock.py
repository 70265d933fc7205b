"""Clocks: where every resilience strategy reads the time and sleeps.

Strategies never call :func:`time.monotonic` or :func:`asyncio.sleep` directly; they take a
:class:`Clock`. Production code uses :class:`SystemClock` (the default everywhere); tests use
:class:`FakeClock`, whose time only moves when the test says so, which makes breakers,
backoffs and timeouts deterministic without sleeping.

A clock may also offer ``call_later(delay, callback)`` (the :class:`TimerClock` protocol).
Timeouts and bulkhead waits use it to arm a timer without a helper task; a clock without it
still works, through a watcher task that sleeps on the clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Cancellable", "Clock", "FakeClock", "SystemClock", "TimerClock"]


@runtime_checkable
class Clock(Protocol):
    """A monotonic time source in seconds and a way to sleep on it."""

    def monotonic(self) -> float:
        """Seconds since an arbitrary origin; never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time."""
        ...


class Cancellable(Protocol):
    """A scheduled callback that can be withdrawn before it runs."""

    def cancel(self) -> None:
        """Withdraw the callback; harmless if it already ran."""
        ...


@runtime_checkable
class TimerClock(Clock, Protocol):
    """A clock that can also run a callback after a delay of its own time."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable:
        """Run ``callback`` once ``delay`` seconds of this clock's time have passed."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`asyncio.sleep` and the loop's timers.

    It holds no state, so one instance (:data:`SYSTEM_CLOCK`) is shared by default.
    """

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
"""The stateless default clock."""


class _Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class FakeClock:
    """A clock for tests whose time moves only through :meth:`advance` or :meth:`tick`.

    ``sleep`` never really sleeps: the sleeping task waits until the test moves time past
    its deadline. Timers and sleepers fire in deadline order (ties in the order they were
    scheduled), and while each fires, :meth:`monotonic` reads exactly its deadline.

    ``advance`` is synchronous and wakes every sleeper due by the new time, but the woken
    tasks run only when the test next yields to the event loop, and any sleep they start then
    counts from the new time. ``await tick(seconds)`` is the convenient form for chains of
    sleeps (retries with backoff): it stops at each deadline, lets the woken tasks run, and
    goes on until ``seconds`` have passed.
    """

    __slots__ = ("_heap", "_now", "_seq")

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable:
        timer = _Timer(self._now + max(delay, 0.0), callback)
        heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock passes ``now + seconds``; ``seconds <= 0`` only yields."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, lambda: _resolve(future))
        try:
            await future
        finally:
            timer.cancel()

    @property
    def pending(self) -> int:
        """How many timers and sleepers are still waiting for their deadline.

        A :class:`~.timeout.Timeout` keeps one watchdog timer armed until the deadline of the
        oldest scope it saw, even when that scope ended early; it counts here until then.
        """
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, or ``None`` when nothing waits."""
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing every timer due by then, in order."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        self._advance_to(self._now + seconds)

    def _advance_to(self, target: float) -> None:
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            _, _, timer = heapq.heappop(self._heap)
            self._now = max(self._now, deadline)
            timer.cancelled = True
            timer.callback()
        self._now = target

    async def tick(self, seconds: float = 0.0, *, rounds: int = 20) -> None:
        """Advance to each deadline within ``seconds`` in turn, letting woken tasks run.

        After every step the event loop gets ``rounds`` turns, enough for the woken tasks to
        reach their next sleep, so a retry loop's successive backoffs all complete inside one
        ``tick``. ``tick()`` with no argument only lets pending work run.
        """
        target = self._now + seconds
        await self.settle(rounds)
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            self._advance_to(deadline)
            await self.settle(rounds)
        self._advance_to(target)
        await self.settle(rounds)

    @staticmethod
    async def settle(rounds: int = 20) -> None:
        """Give the event loop ``rounds`` turns so that ready tasks run up to their next wait."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:g}, pending={self.pending})"
