"""FakeClock and SystemClock: time that moves only when told to, timers in order."""

from __future__ import annotations

import asyncio

import pytest

from medianest.resilience import SYSTEM_CLOCK, Clock, FakeClock, SystemClock, TimerClock


async def test_sleep_waits_for_advance_and_wakes_in_deadline_order(clock: FakeClock) -> None:
    woken: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woken.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in [("c", 3), ("a", 1), ("b", 2)]]
    await clock.settle()
    assert clock.pending == 3
    clock.advance(1.5)
    await clock.settle()
    assert woken == [("a", 1001.5)]
    clock.advance(10)
    await asyncio.gather(*tasks)
    assert [name for name, _ in woken] == ["a", "b", "c"]
    assert clock.monotonic() == 1011.5
    assert clock.pending == 0


def test_timers_fire_in_order_reading_their_deadline(clock: FakeClock) -> None:
    seen: list[tuple[int, float]] = []
    clock.call_later(2, lambda: seen.append((2, clock.monotonic())))
    clock.call_later(1, lambda: seen.append((1, clock.monotonic())))
    clock.call_later(1, lambda: seen.append((11, clock.monotonic())))
    cancelled = clock.call_later(1.5, lambda: seen.append((99, clock.monotonic())))
    cancelled.cancel()
    assert clock.next_deadline() == 1001.0
    clock.advance(5)
    assert seen == [(1, 1001.0), (11, 1001.0), (2, 1002.0)]
    assert clock.next_deadline() is None
    assert clock.monotonic() == 1005.0


def test_advance_refuses_to_go_backwards(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


async def test_tick_runs_chains_of_sleeps(clock: FakeClock) -> None:
    stamps: list[float] = []

    async def chain() -> None:
        for delay in (1, 2, 4):
            await clock.sleep(delay)
            stamps.append(clock.monotonic())

    task = asyncio.create_task(chain())
    await clock.tick(10)
    assert task.done()
    assert stamps == [1001.0, 1003.0, 1007.0]
    assert clock.monotonic() == 1010.0


async def test_non_positive_sleep_only_yields(clock: FakeClock) -> None:
    await clock.sleep(0)
    await clock.sleep(-1)
    assert clock.pending == 0
    assert clock.monotonic() == 1000.0


async def test_cancelled_sleeper_leaves_no_timer(clock: FakeClock) -> None:
    task = asyncio.create_task(clock.sleep(5))
    await clock.settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending == 0
    assert "FakeClock(now=1000" in repr(clock)


async def test_system_clock_is_a_timer_clock() -> None:
    assert isinstance(SYSTEM_CLOCK, SystemClock)
    assert isinstance(SYSTEM_CLOCK, TimerClock)
    assert isinstance(FakeClock(), TimerClock)
    assert isinstance(FakeClock(), Clock)
    before = SYSTEM_CLOCK.monotonic()
    await SYSTEM_CLOCK.sleep(0)
    fired = asyncio.Event()
    SYSTEM_CLOCK.call_later(0, fired.set)
    await fired.wait()
    assert SYSTEM_CLOCK.monotonic() >= before
    assert repr(SYSTEM_CLOCK) == "SystemClock()"
