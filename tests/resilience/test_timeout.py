"""Timeout: per-attempt and total limits driven by the clock, cancellation-correct."""

from __future__ import annotations

import asyncio

import pytest

from medianest.errors import TimeoutExceeded
from medianest.resilience import FakeClock, Timeout


async def test_fake_clock_drives_the_timeout(clock: FakeClock) -> None:
    timeout = Timeout(10, name="plex", clock=clock)

    async def hang() -> None:
        await clock.sleep(60)

    task = asyncio.create_task(timeout.call(hang))
    await clock.tick(9.9)
    assert not task.done()
    await clock.tick(0.1)
    with pytest.raises(TimeoutExceeded) as caught:
        await task
    assert str(caught.value) == "plex: per-attempt timeout of 10s exceeded"
    assert caught.value.timeout == 10.0
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)


async def test_total_deadline_names_itself(clock: FakeClock) -> None:
    timeout = Timeout(30, kind="total", clock=clock)
    task = asyncio.create_task(timeout.call(lambda: clock.sleep(31)))
    await clock.tick(30)
    with pytest.raises(TimeoutExceeded, match=r"^total deadline of 30s exceeded$"):
        await task


async def test_a_fast_call_returns_and_disarms(clock: FakeClock) -> None:
    timeout = Timeout(1, clock=clock)

    async def quick() -> int:
        await clock.sleep(0.5)
        return 7

    task = asyncio.create_task(timeout.call(quick))
    await clock.tick(0.5)
    assert await task == 7
    await clock.tick(5)
    assert asyncio.current_task() is not None
    assert clock.pending == 0


async def test_each_scope_keeps_its_own_deadline(clock: FakeClock) -> None:
    """The shared watchdog re-arms for the next scope when the oldest leaves early."""
    timeout = Timeout(10, clock=clock)
    first_done = asyncio.Event()

    async def first() -> None:
        await first_done.wait()

    async def second() -> None:
        await clock.sleep(100)

    one = asyncio.create_task(timeout.call(first))
    await clock.tick(4)
    two = asyncio.create_task(timeout.call(second))
    await clock.tick(1)
    first_done.set()
    await one
    await clock.tick(8.9)  # now 13.9 s after the first began, 8.9 s after the second
    assert not two.done()
    await clock.tick(0.1)
    with pytest.raises(TimeoutExceeded):
        await two


async def test_an_error_raised_inside_is_not_mistaken_for_the_timeout(clock: FakeClock) -> None:
    async def own_timeout() -> None:
        raise TimeoutError("the driver's own")

    with pytest.raises(TimeoutError, match="the driver's own") as caught:
        await Timeout(5, clock=clock).call(own_timeout)
    assert not isinstance(caught.value, TimeoutExceeded)


async def test_outer_cancellation_propagates_as_cancellation(clock: FakeClock) -> None:
    timeout = Timeout(10, clock=clock)
    task = asyncio.create_task(timeout.call(lambda: clock.sleep(100)))
    await clock.tick(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelled_at_the_same_time_as_expiry_stays_cancelled(clock: FakeClock) -> None:
    timeout = Timeout(10, clock=clock)
    task = asyncio.create_task(timeout.call(lambda: clock.sleep(100)))
    await clock.tick(1)
    clock.advance(9)  # fires the timeout: task.cancel() #1
    task.cancel()  # someone else cancels too: #2
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_scope_reports_expiry_and_remaining(clock: FakeClock) -> None:
    timeout = Timeout(2, clock=clock)
    scope = timeout.scope()

    async def body() -> None:
        with scope:
            assert scope.remaining == 2
            await clock.sleep(5)

    task = asyncio.create_task(body())
    await clock.tick(2)
    with pytest.raises(TimeoutExceeded):
        await task
    assert scope.expired
    assert scope.remaining == 0


async def test_real_clock_timeout_fires() -> None:
    never = asyncio.Event()
    with pytest.raises(TimeoutExceeded, match=r"per-attempt timeout of 0\.01s"):
        await Timeout(0.01).call(never.wait)
    assert await Timeout(5).call(lambda: asyncio.sleep(0, result=3)) == 3


class SleepOnlyClock:
    """A clock without call_later: timeouts fall back to a watcher task."""

    def __init__(self, inner: FakeClock) -> None:
        self.inner = inner

    def monotonic(self) -> float:
        return self.inner.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def test_clock_without_timers_uses_a_watcher(clock: FakeClock) -> None:
    timeout = Timeout(3, clock=SleepOnlyClock(clock))
    task = asyncio.create_task(timeout.call(lambda: clock.sleep(10)))
    await clock.tick(3)
    with pytest.raises(TimeoutExceeded):
        await task
    assert await timeout.call(lambda: asyncio.sleep(0, result=5)) == 5
    await clock.tick(5)
    assert clock.pending == 0


def test_scope_needs_a_task_and_a_positive_limit() -> None:
    with pytest.raises(ValueError, match="positive"):
        Timeout(0)
    with (
        pytest.raises(RuntimeError, match=r"inside a task|no running event loop"),
        Timeout(1).scope(),
    ):
        pass
    assert repr(Timeout(1.5, kind="total")) == "Timeout(1.5, kind='total')"


async def test_one_timeout_serves_several_event_loops() -> None:
    timeout = Timeout(0.01)
    never = asyncio.Event()
    with pytest.raises(TimeoutExceeded):
        await timeout.call(never.wait)

    def in_another_loop() -> None:
        async def main() -> None:
            with pytest.raises(TimeoutExceeded):
                await timeout.call(asyncio.Event().wait)

        asyncio.run(main())

    await asyncio.to_thread(in_another_loop)
    with pytest.raises(TimeoutExceeded):
        await timeout.call(never.wait)
