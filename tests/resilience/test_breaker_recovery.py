"""CircuitBreaker recovery: open, half-open probes, manual states, concurrent callers."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from medianest.errors import CircuitOpenError
from medianest.resilience import BreakerState, FakeClock
from tests.resilience.conftest import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    calls,
    fail,
    gauge,
    make,
    succeed,
    trip,
)


def test_open_goes_half_open_after_the_open_duration(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry)
    trip(breaker)
    clock.advance(29.5)
    assert breaker.state is OPEN
    assert breaker.snapshot().retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    assert breaker.state is HALF_OPEN
    assert gauge(registry) == 2
    assert breaker.snapshot().retry_after is None


def test_half_open_closes_when_the_probes_succeed(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry)
    trip(breaker)
    clock.advance(30)
    permits = [breaker.acquire() for _ in range(3)]
    with pytest.raises(CircuitOpenError) as caught:
        breaker.acquire()  # out of probes
    assert caught.value.retry_after is None
    breaker.on_success(permits[0], 0.1)
    breaker.on_error(permits[1], 0.1, ConnectionError())
    assert breaker.state is HALF_OPEN
    assert breaker.snapshot().calls == 2
    breaker.on_success(permits[2], 0.1)
    assert breaker.state is CLOSED  # 1 of 3 failed: 33% < 50%
    assert breaker.snapshot().calls == 0
    assert gauge(registry) == 0


def test_half_open_reopens_when_the_probes_fail(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry)
    trip(breaker)
    clock.advance(30)
    succeed(breaker)
    fail(breaker)
    assert breaker.state is HALF_OPEN
    fail(breaker)
    assert breaker.state is OPEN
    assert breaker.snapshot().retry_after == 30  # no growth by default


def test_half_open_reopens_on_slow_probes(clock: FakeClock, registry: CollectorRegistry) -> None:
    breaker = make(clock, registry)
    trip(breaker)
    clock.advance(30)
    for _ in range(3):
        succeed(breaker, duration=3.0)
    assert breaker.state is OPEN


def test_half_open_never_waits_forever_for_a_hung_probe(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry)
    trip(breaker)
    clock.advance(30)
    hung = [breaker.acquire() for _ in range(3)]
    clock.advance(59)
    assert breaker.state is HALF_OPEN
    clock.advance(1)
    assert breaker.state is OPEN  # max half-open wait
    for permit in hung:  # the late probes do not decide anything now
        breaker.on_success(permit, 90)
    assert breaker.state is OPEN
    clock.advance(30)
    assert breaker.state is HALF_OPEN
    assert breaker.acquire() > hung[0]


def test_without_a_max_wait_half_open_waits_for_its_probes(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry, max_half_open_wait=None)
    trip(breaker)
    clock.advance(30)
    permit = breaker.acquire()
    clock.advance(10_000)
    assert breaker.state is HALF_OPEN
    breaker.on_success(permit, 0.1)
    assert breaker.snapshot().calls == 1


def test_a_cancelled_or_ignored_probe_frees_its_slot(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry, ignore=lambda exc: isinstance(exc, KeyError))
    trip(breaker)
    clock.advance(30)
    permits = [breaker.acquire() for _ in range(3)]
    breaker.release(permits[0])
    breaker.on_error(permits[1], 0.1, KeyError())
    extra = [breaker.acquire(), breaker.acquire()]
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    for permit in [permits[2], *extra]:
        breaker.on_success(permit, 0.1)
    assert breaker.state is CLOSED


def test_open_duration_grows_on_trips_in_a_row_up_to_a_cap(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry, open_duration_multiplier=2, max_open_duration=100)
    trip(breaker)
    durations = []
    for _ in range(4):
        durations.append(breaker.snapshot().retry_after)
        clock.advance(durations[-1] or 0)
        for _ in range(3):
            fail(breaker)
    assert durations == [30, 60, 100, 100]
    clock.advance(100)
    for _ in range(3):
        succeed(breaker)
    assert breaker.state is CLOSED
    trip(breaker)
    assert breaker.snapshot().retry_after == 30  # closing reset the growth


def test_open_duration_jitter_only_shortens(clock: FakeClock, registry: CollectorRegistry) -> None:
    breaker = make(clock, registry, open_duration_jitter=0.2, random=random.Random(3).random)
    seen = set()
    for _ in range(20):
        trip(breaker)
        retry_after = breaker.snapshot().retry_after
        assert retry_after is not None
        assert 24 <= retry_after <= 30
        seen.add(round(retry_after, 6))
        breaker.reset()
    assert len(seen) > 10


def test_forced_open_refuses_everything_until_closed(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    changes: list[tuple[str, BreakerState, BreakerState]] = []
    breaker = make(clock, registry, listeners=[lambda *change: changes.append(change)])
    breaker.force_open()
    breaker.force_open()
    clock.advance(10_000)
    with pytest.raises(CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after is None
    assert breaker.state is BreakerState.FORCED_OPEN
    assert gauge(registry) == 3
    breaker.close()
    breaker.close()
    assert breaker.state is CLOSED
    assert changes == [
        ("plex", CLOSED, BreakerState.FORCED_OPEN),
        ("plex", BreakerState.FORCED_OPEN, CLOSED),
    ]


def test_disabled_admits_everything_and_never_trips(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry)
    breaker.disable()
    breaker.disable()
    for _ in range(50):
        fail(breaker)
    assert breaker.state is BreakerState.DISABLED
    assert breaker.snapshot().calls == 0
    assert calls(registry, "failure") == 50
    assert gauge(registry) == 4
    breaker.reset()
    assert breaker.state is CLOSED


def test_calls_running_across_a_transition_do_not_count(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry)
    old = breaker.acquire()
    breaker.force_open()
    breaker.close()
    breaker.on_error(old, 0.1, ConnectionError())
    assert breaker.snapshot().calls == 0
    breaker.release(old)


def test_reset_forgets_the_window(clock: FakeClock, registry: CollectorRegistry) -> None:
    breaker = make(clock, registry)
    for _ in range(4):
        fail(breaker)
    breaker.reset()
    assert breaker.snapshot().calls == 0
    fail(breaker)
    assert breaker.state is CLOSED


async def test_concurrent_callers_while_half_open_only_probes_get_through(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry)
    trip(breaker)
    clock.advance(30)
    release = asyncio.Event()
    admitted = 0

    async def probe() -> str:
        nonlocal admitted
        admitted += 1
        await release.wait()
        return "up"

    tasks = [asyncio.create_task(breaker.call(probe)) for _ in range(50)]
    await clock.settle()
    assert admitted == 3
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("up") == 3
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 47
    assert breaker.state is CLOSED
    assert calls(registry, "not_permitted") == 47


async def test_a_cancelled_call_gives_its_probe_back(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry, half_open_probes=1)
    trip(breaker)
    clock.advance(30)
    task = asyncio.create_task(breaker.call(asyncio.Event().wait))
    await clock.settle()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await breaker.call(lambda: asyncio.sleep(0, result=1)) == 1
    assert breaker.state is CLOSED
