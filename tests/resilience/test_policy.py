"""Policy: the fixed order of the strategies, results, and building from configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from medianest.errors import (
    BulkheadFull,
    CircuitOpenError,
    RetryBudgetExhausted,
    TimeoutExceeded,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from medianest.resilience import (
    BreakerState,
    Bulkhead,
    CircuitBreaker,
    FakeClock,
    Fallback,
    LastGood,
    Policy,
    Retry,
    RetryBudget,
    Static,
    Timeout,
)


def flaky(failures: int, clock: FakeClock | None = None) -> Callable[[], Awaitable[str]]:
    """Fails ``failures`` times with UpstreamUnavailable, then answers; counts attempts."""
    attempts = 0

    async def fn() -> str:
        nonlocal attempts
        attempts += 1
        if clock is not None:
            await clock.sleep(0)
        if attempts <= failures:
            raise UpstreamUnavailable("down", service="plex")
        return f"answer #{attempts}"

    return fn


def retry(clock: FakeClock, attempts: int = 3, **options: Any) -> Retry:
    return Retry(attempts, base_delay=1, max_delay=4, random=lambda: 0.5, clock=clock, **options)


def breaker(clock: FakeClock, registry: CollectorRegistry, **options: Any) -> CircuitBreaker:
    settings: dict[str, Any] = {"minimum_calls": 100, "window_size": 100}
    settings.update(options)
    return CircuitBreaker("plex", clock=clock, metrics=registry, **settings)


async def test_retries_keep_their_one_bulkhead_slot(clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, max_queued=0, clock=clock)
    policy = Policy("plex", retry=retry(clock), bulkhead=bulkhead)
    task = asyncio.create_task(policy.execute(flaky(2)))
    await clock.tick(0.1)  # first backoff under way: the slot is still held
    assert bulkhead.active == 1
    with pytest.raises(BulkheadFull):
        await policy.call(flaky(0))
    await clock.tick(10)
    result = await task
    assert (result.value, result.attempts, result.served_by) == ("answer #3", 3, "primary")
    assert bulkhead.active == 0


async def test_the_breaker_sees_every_attempt(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    cb = breaker(clock, registry)
    policy = Policy("plex", retry=retry(clock), breaker=cb)
    task = asyncio.create_task(policy.call(flaky(5)))
    await clock.tick(10)
    with pytest.raises(UpstreamUnavailable):
        await task
    snapshot = cb.snapshot()
    assert (snapshot.calls, snapshot.failures) == (3, 3)


async def test_an_open_breaker_stops_the_retries(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    cb = breaker(clock, registry, minimum_calls=2, window_size=2)
    policy = Policy("plex", retry=retry(clock, attempts=5), breaker=cb)
    task = asyncio.create_task(policy.execute(flaky(10)))
    await clock.tick(10)
    with pytest.raises(CircuitOpenError) as caught:
        await task
    assert caught.value.retry_after is not None
    assert cb.state is BreakerState.OPEN


async def test_attempt_timeouts_are_breaker_failures_and_retried(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    cb = breaker(clock, registry, slow_call_duration=100)
    policy = Policy(
        "plex",
        timeout=Timeout(10, name="plex", clock=clock),
        retry=retry(clock),
        breaker=cb,
    )
    hangs = 2

    async def sometimes_hangs() -> str:
        nonlocal hangs
        if hangs:
            hangs -= 1
            await clock.sleep(3600)
        return "finally"

    task = asyncio.create_task(policy.execute(sometimes_hangs))
    await clock.tick(30)
    result = await task
    assert (result.value, result.attempts) == ("finally", 3)
    snapshot = cb.snapshot()
    assert (snapshot.calls, snapshot.failures) == (3, 2)


async def test_the_total_deadline_bounds_every_attempt_and_backoff(clock: FakeClock) -> None:
    policy = Policy(
        "plex",
        timeout=Timeout(10, name="plex", clock=clock),
        total_timeout=Timeout(25, kind="total", name="plex", clock=clock),
        retry=retry(clock, attempts=10),
    )
    attempts_started: list[float] = []

    async def hang() -> None:
        attempts_started.append(clock.monotonic() - 1000)
        await clock.sleep(3600)

    task = asyncio.create_task(policy.call(hang))
    await clock.tick(24.9)
    assert not task.done()
    await clock.tick(0.1)
    with pytest.raises(TimeoutExceeded, match="plex: total deadline of 25s exceeded"):
        await task
    assert attempts_started == [0.0, 10.5, 21.5]  # backoffs of 0.5 and 1.0


async def test_the_fallback_answers_for_refusals_outside_it(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    bulkhead = Bulkhead(1, max_queued=0, clock=clock)
    cb = breaker(clock, registry)
    policy = Policy(
        "plex",
        breaker=cb,
        bulkhead=bulkhead,
        fallback=Fallback(LastGood(clock=clock), Static("placeholder")),
    )
    fresh = await policy.execute(flaky(0), key="sections")
    assert (fresh.value, fresh.served_by, fresh.stale, fresh.error) == (
        "answer #1",
        "primary",
        False,
        None,
    )
    assert bulkhead.try_acquire()  # someone else holds the only slot
    full = await policy.execute(flaky(0), key="sections")
    assert (full.value, full.served_by, full.stale, full.attempts) == (
        "answer #1",
        "last_good",
        True,
        0,
    )
    assert isinstance(full.error, BulkheadFull)
    bulkhead.release()
    cb.force_open()
    assert await policy.call(flaky(0), key="unknown") == "placeholder"
    assert await policy.call(flaky(0), key="sections") == "answer #1"


async def test_call_remembers_last_good_values_and_raises_unhandled_errors(
    clock: FakeClock,
) -> None:
    policy = Policy("plex", fallback=Fallback(LastGood(clock=clock)))
    assert await policy.call(flaky(0), key="k") == "answer #1"
    assert await policy.call(flaky(1), key="k") == "answer #1"
    missing = UpstreamNotFound("gone", service="plex", status=404)

    async def not_found() -> None:
        raise missing

    with pytest.raises(UpstreamNotFound) as caught:
        await policy.execute(not_found, key="k")
    assert caught.value is missing


async def test_non_idempotent_calls_are_attempted_once(clock: FakeClock) -> None:
    policy = Policy("overseerr", retry=retry(clock, attempts=5))
    fn = flaky(1)
    with pytest.raises(UpstreamUnavailable):
        await policy.execute(fn, idempotent=False)
    assert await policy.call(fn) == "answer #2"


async def test_an_exhausted_budget_is_served_by_the_fallback(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.0, window=10, min_per_second=0, clock=clock)
    policy = Policy(
        "plex",
        retry=retry(clock, budget=budget),
        fallback=Fallback(Static("default")),
    )
    result = await policy.execute(flaky(1))
    assert (result.value, result.served_by, result.attempts) == ("default", "default", 1)
    assert isinstance(result.error, RetryBudgetExhausted)
    assert isinstance(result.error.__cause__, UpstreamUnavailable)


async def test_cancellation_releases_the_slot_and_the_probe(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    cb = breaker(clock, registry, minimum_calls=1, window_size=1, half_open_probes=1)
    cb.on_error(cb.acquire(), 0.1, ConnectionError())
    clock.advance(30)
    assert cb.state is BreakerState.HALF_OPEN
    bulkhead = Bulkhead(1, clock=clock)
    policy = Policy("plex", breaker=cb, bulkhead=bulkhead, retry=retry(clock))
    task = asyncio.create_task(policy.call(asyncio.Event().wait))
    await clock.settle()
    assert bulkhead.active == 1
    with pytest.raises(CircuitOpenError):
        cb.acquire()  # the only probe is taken
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bulkhead.active == 0
    assert await policy.call(flaky(0)) == "answer #1"  # the probe was given back
    assert cb.snapshot().state is BreakerState.CLOSED


async def test_with_fallback_extends_the_chain_and_shares_the_state(clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, clock=clock)
    base = Policy("plex", bulkhead=bulkhead)
    first = base.with_fallback(Static(1, name="one"))
    second = first.with_fallback(Static(2, name="two"))
    assert second.fallback is not None
    assert [s.name for s in second.fallback.strategies] == ["one", "two"]
    assert second.bulkhead is bulkhead
    assert base.fallback is None


async def test_an_empty_policy_just_calls(clock: FakeClock) -> None:
    policy = Policy("plain")
    assert await policy.call(flaky(0)) == "answer #1"
    result = await policy.execute(flaky(0))
    assert (result.served_by, result.attempts) == ("primary", 1)
    with pytest.raises(UpstreamUnavailable):
        await policy.execute(flaky(1))


async def test_timeouts_alone_without_breaker(clock: FakeClock) -> None:
    policy = Policy("plex", timeout=Timeout(1, clock=clock))
    task = asyncio.create_task(policy.call(lambda: clock.sleep(5)))
    await clock.tick(1)
    with pytest.raises(TimeoutExceeded, match="per-attempt"):
        await task
    assert await policy.call(flaky(0)) == "answer #1"


async def test_real_clock_policy_end_to_end(registry: CollectorRegistry) -> None:
    policy = Policy(
        "plex",
        timeout=Timeout(0.01),
        total_timeout=Timeout(5, kind="total"),
        retry=Retry(2, base_delay=0),
        breaker=CircuitBreaker("plex", metrics=registry),
        bulkhead=Bulkhead(4),
        fallback=Fallback(Static("stale-free default")),
    )

    async def hang() -> object:
        return await asyncio.Event().wait()

    result = await policy.execute(hang)
    assert (result.value, result.attempts) == ("stale-free default", 2)
    assert isinstance(result.error, TimeoutExceeded)
