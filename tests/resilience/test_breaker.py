"""CircuitBreaker while closed: what trips it, what counts, windows, metrics."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from medianest.errors import (
    CircuitOpenError,
    TimeoutExceeded,
    UpstreamNotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from medianest.resilience import BreakerState, CircuitBreaker, FakeClock
from medianest.resilience.window import CountWindow, TimeWindow
from tests.resilience.conftest import (
    CLOSED,
    OPEN,
    calls,
    fail,
    gauge,
    make,
    succeed,
    trip,
)


def test_trips_on_failure_rate_once_minimum_calls_are_in(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry)
    succeed(breaker)
    succeed(breaker)
    fail(breaker)
    fail(breaker)
    assert breaker.state is CLOSED  # 50% but only 4 calls < minimum 5
    fail(breaker)
    assert breaker.state is OPEN  # 3 of 5 failed
    with pytest.raises(CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == 30
    assert gauge(registry) == 1
    assert calls(registry, "failure") == 3
    assert calls(registry, "not_permitted") == 1


def test_stays_closed_below_the_failure_threshold(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry)
    for _ in range(20):
        succeed(breaker)
        succeed(breaker)
        fail(breaker)
    snapshot = breaker.snapshot()
    assert snapshot.state is CLOSED
    assert snapshot.calls == 10
    assert snapshot.failure_rate == pytest.approx(40.0)  # the last 10 of s, s, f, s, s, f...


def test_trips_on_slow_call_rate(clock: FakeClock, registry: CollectorRegistry) -> None:
    breaker = make(clock, registry)
    succeed(breaker, duration=0.5)
    succeed(breaker, duration=0.5)
    succeed(breaker, duration=2.0)
    fail(breaker, UpstreamNotFound("404", service="plex"), duration=2.0)  # not a failure
    assert breaker.snapshot().slow_rate == 50.0
    assert breaker.state is CLOSED  # 4 calls < minimum 5
    succeed(breaker, duration=1.5)
    assert breaker.state is OPEN  # 3 of 5 slow
    assert calls(registry, "slow_success") == 3
    assert calls(registry, "success") == 2
    assert calls(registry, "failure") == 0


def test_slow_failures_count_both_ways(clock: FakeClock, registry: CollectorRegistry) -> None:
    breaker = make(clock, registry, minimum_calls=10)
    fail(breaker, duration=5.0)
    snapshot = breaker.snapshot()
    assert (snapshot.calls, snapshot.failures, snapshot.slow_calls) == (1, 1, 1)
    assert calls(registry, "slow_failure") == 1


def test_minimum_calls_is_capped_by_a_count_window(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry, window_size=4, minimum_calls=100)
    for _ in range(3):
        fail(breaker)
    assert breaker.state is CLOSED
    fail(breaker)
    assert breaker.state is OPEN


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("refused"),
        OSError("no route to host"),
        TimeoutExceeded("per-attempt timeout of 1s exceeded", timeout=1),
        TimeoutError(),
        UpstreamTimeout("slow", service="plex"),
        UpstreamUnavailable("503", service="plex", status=503),
    ],
)
async def test_a_dead_service_trips_the_breaker(
    clock: FakeClock, registry: CollectorRegistry, error: Exception
) -> None:
    breaker = make(clock, registry)

    async def dead() -> None:
        raise error

    for _ in range(5):
        with pytest.raises(type(error)):
            await breaker.call(dead)
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call(dead)


async def test_answers_proving_the_service_is_up_are_successes(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry)

    async def missing() -> None:
        raise UpstreamNotFound("no such item", service="plex", status=404)

    for _ in range(10):
        with pytest.raises(UpstreamNotFound):
            await breaker.call(missing)
    assert breaker.state is CLOSED
    assert calls(registry, "success") == 10


def test_ignored_exceptions_count_as_neither(clock: FakeClock, registry: CollectorRegistry) -> None:
    breaker = make(clock, registry, ignore=lambda exc: isinstance(exc, KeyError))
    for _ in range(20):
        fail(breaker, KeyError("ignored"))
    snapshot = breaker.snapshot()
    assert snapshot.state is CLOSED
    assert snapshot.calls == 0
    assert calls(registry, "ignored") == 20


def test_record_failure_predicate_decides_what_fails(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    breaker = make(clock, registry, record_failure=lambda exc: isinstance(exc, ValueError))
    for _ in range(10):
        fail(breaker, ConnectionError())
    assert breaker.state is CLOSED
    for _ in range(4):
        fail(breaker, ValueError())
    assert breaker.state is CLOSED
    fail(breaker, ValueError())  # 5 of the last 10 failed
    assert breaker.state is OPEN


def test_time_window_forgets_old_calls(clock: FakeClock, registry: CollectorRegistry) -> None:
    breaker = make(clock, registry, window_type="time", window_size=10, minimum_calls=5)
    for _ in range(4):
        fail(breaker)
    clock.advance(10)
    assert breaker.snapshot().calls == 0
    fail(breaker)
    assert breaker.state is CLOSED
    for _ in range(20):
        succeed(breaker)
        clock.advance(0.25)  # 5 seconds of successes
    for _ in range(18):
        fail(breaker)
    assert breaker.state is CLOSED  # 19 of 39 within the window
    clock.advance(5)  # the second holding 1 failure and 4 successes falls out
    assert breaker.snapshot().calls == 34
    fail(breaker)
    assert breaker.state is OPEN  # 19 of 35


def test_a_failing_listener_does_not_break_the_breaker(
    clock: FakeClock, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = make(clock, registry)
    seen: list[BreakerState] = []

    def broken(name: str, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(broken)
    breaker.add_listener(lambda name, old, new: seen.append(new))
    with caplog.at_level(logging.ERROR):
        trip(breaker)
    assert seen == [OPEN]
    assert "state listener" in caplog.text


def test_snapshot_of_a_fresh_breaker(clock: FakeClock, registry: CollectorRegistry) -> None:
    snapshot = make(clock, registry).snapshot()
    assert snapshot.name == "plex"
    assert snapshot.state is CLOSED
    assert (snapshot.calls, snapshot.failure_rate, snapshot.slow_rate) == (0, 0.0, 0.0)
    assert snapshot.retry_after is None
    assert repr(make(clock, registry)) == "CircuitBreaker('plex', state=closed)"


@pytest.mark.parametrize(
    "options",
    [
        {"failure_rate_threshold": 0},
        {"slow_call_rate_threshold": 101},
        {"minimum_calls": 0},
        {"half_open_probes": 0},
        {"open_duration": 0},
        {"open_duration_multiplier": 0.5},
        {"open_duration_jitter": 1.0},
    ],
)
def test_invalid_settings_are_refused(
    clock: FakeClock, registry: CollectorRegistry, options: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        make(clock, registry, **options)


def test_breakers_sharing_a_registry_and_a_name(registry: CollectorRegistry) -> None:
    clock = FakeClock()
    first = make(clock, registry)
    second = make(clock, registry)  # e.g. rebuilt on a configuration reload
    other = CircuitBreaker("kuma", clock=clock, metrics=registry)
    succeed(first)
    succeed(second)
    succeed(other)
    assert calls(registry, "success") == 2
    assert calls(registry, "success", breaker="kuma") == 1


def test_windows_refuse_to_be_empty_and_count_slow_calls() -> None:
    with pytest.raises(ValueError, match="at least one call"):
        CountWindow(0)
    with pytest.raises(ValueError, match="at least one second"):
        TimeWindow(0)
    window = TimeWindow(3)
    window.record(10.2, failed=True, slow=True)
    window.record(11.5, failed=False, slow=True)
    assert (window.calls, window.failures, window.slow) == (2, 1, 2)
    window.refresh(13.0)  # second 10 left the window
    assert (window.calls, window.failures, window.slow) == (1, 0, 1)
    window.refresh(100.0)
    assert (window.calls, window.failures, window.slow) == (0, 0, 0)
