"""Bulkhead: concurrency limit, bounded queue, wait timeout, no leaked slots."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from medianest.errors import BulkheadFull
from medianest.resilience import Bulkhead, FakeClock


class Gate:
    """Calls that hold their slot until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.running = 0
        self.peak = 0
        self.order: list[int] = []

    async def hold(self, ident: int = 0) -> int:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.order.append(ident)
        try:
            await self.opened.wait()
        finally:
            self.running -= 1
        return ident


async def test_limits_concurrency_and_serves_the_queue_in_order(clock: FakeClock) -> None:
    bulkhead = Bulkhead(2, max_queued=5, max_wait=None, name="plex", clock=clock)
    gate = Gate()
    tasks = [asyncio.create_task(bulkhead.call(partial(gate.hold, i))) for i in range(6)]
    await clock.settle()
    assert (bulkhead.active, bulkhead.queued) == (2, 4)
    assert gate.order == [0, 1]
    gate.opened.set()
    assert await asyncio.gather(*tasks) == list(range(6))
    assert gate.peak == 2
    assert gate.order == list(range(6))
    assert (bulkhead.active, bulkhead.queued) == (0, 0)


async def test_rejects_at_once_when_the_queue_is_full(clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, max_queued=1, max_wait=None, name="plex", clock=clock)
    gate = Gate()
    first = asyncio.create_task(bulkhead.call(gate.hold))
    second = asyncio.create_task(bulkhead.call(gate.hold))
    await clock.settle()
    with pytest.raises(BulkheadFull) as caught:
        await bulkhead.call(gate.hold)
    assert caught.value.name == "plex"
    assert "1 running, 1 queued" in str(caught.value)
    gate.opened.set()
    await asyncio.gather(first, second)


async def test_a_waiter_gives_up_after_max_wait(clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, max_queued=3, max_wait=1.0, clock=clock)
    gate = Gate()
    holder = asyncio.create_task(bulkhead.call(gate.hold))
    waiter = asyncio.create_task(bulkhead.call(gate.hold))
    await clock.tick(0.9)
    assert not waiter.done()
    await clock.tick(0.1)
    with pytest.raises(BulkheadFull):
        await waiter
    assert bulkhead.queued == 0
    gate.opened.set()
    await holder
    assert bulkhead.active == 0
    assert clock.pending == 0


async def test_max_wait_zero_never_queues(clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, max_queued=10, max_wait=0, clock=clock)
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()
    with pytest.raises(BulkheadFull):
        await bulkhead.acquire()
    bulkhead.release()
    assert bulkhead.active == 0


async def test_a_cancelled_waiter_leaves_the_queue(clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, max_queued=2, max_wait=None, clock=clock)
    gate = Gate()
    holder = asyncio.create_task(bulkhead.call(gate.hold))
    waiter = asyncio.create_task(bulkhead.call(gate.hold))
    await clock.settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bulkhead.queued == 0
    gate.opened.set()
    await holder
    assert bulkhead.active == 0


async def test_a_waiter_cancelled_after_being_handed_a_slot_passes_it_on(
    clock: FakeClock,
) -> None:
    bulkhead = Bulkhead(1, max_queued=2, max_wait=5, clock=clock)
    await bulkhead.acquire()
    first = asyncio.create_task(bulkhead.acquire())
    second = asyncio.create_task(bulkhead.acquire())
    await clock.settle()
    bulkhead.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # the slot went on to the next waiter
    assert (bulkhead.active, bulkhead.queued) == (1, 0)
    bulkhead.release()
    assert bulkhead.active == 0
    await clock.tick(10)
    assert bulkhead.active == 0


async def test_no_slot_leaks_under_a_storm_of_cancellations(clock: FakeClock) -> None:
    bulkhead = Bulkhead(3, max_queued=100, max_wait=None, clock=clock)
    gate = Gate()
    tasks = [asyncio.create_task(bulkhead.call(gate.hold)) for _ in range(40)]
    await clock.settle()
    for task in tasks[::3]:
        task.cancel()
    await clock.settle()
    gate.opened.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 14
    assert gate.peak == 3
    assert (bulkhead.active, bulkhead.queued) == (0, 0)
    async with bulkhead:
        assert bulkhead.active == 1
    assert bulkhead.active == 0


async def test_errors_release_the_slot(clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, clock=clock)

    async def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await bulkhead.call(boom)
    assert bulkhead.active == 0
    assert bulkhead.snapshot().max_concurrent == 1
    assert "active=0/1" in repr(bulkhead)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        Bulkhead(0)
    with pytest.raises(ValueError, match="max_concurrent"):
        Bulkhead(1, max_wait=-1)


async def test_system_clock_wait_timeout() -> None:
    bulkhead = Bulkhead(1, max_wait=0.01)
    await bulkhead.acquire()
    with pytest.raises(BulkheadFull):
        await bulkhead.acquire()
    bulkhead.release()


class SleepOnlyClock:
    """A clock without timers: the bulkhead's wait timeout falls back to a watcher task."""

    def __init__(self, inner: FakeClock) -> None:
        self.inner = inner

    def monotonic(self) -> float:
        return self.inner.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def test_wait_timeout_on_a_clock_without_timers(clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, max_queued=2, max_wait=2.0, clock=SleepOnlyClock(clock))
    await bulkhead.acquire()
    timed_out = asyncio.create_task(bulkhead.acquire())
    await clock.tick(2)
    with pytest.raises(BulkheadFull):
        await timed_out
    served = asyncio.create_task(bulkhead.acquire())
    await clock.tick(1)
    bulkhead.release()
    await served
    await clock.tick(5)
    assert (bulkhead.active, bulkhead.queued, clock.pending) == (1, 0, 0)
