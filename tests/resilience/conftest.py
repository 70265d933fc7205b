"""Fixtures and helpers of the resilience tests: a fake clock, a private registry, breakers."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from medianest.resilience import BreakerState, CircuitBreaker, FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def make(clock: FakeClock, registry: CollectorRegistry, **options: Any) -> CircuitBreaker:
    settings: dict[str, Any] = {
        "window_size": 10,
        "minimum_calls": 5,
        "failure_rate_threshold": 50,
        "slow_call_rate_threshold": 50,
        "slow_call_duration": 1.0,
        "open_duration": 30,
        "half_open_probes": 3,
        "max_half_open_wait": 60,
    }
    settings.update(options)
    return CircuitBreaker("plex", clock=clock, metrics=registry, **settings)


def succeed(breaker: CircuitBreaker, duration: float = 0.1) -> None:
    breaker.on_success(breaker.acquire(), duration)


def fail(breaker: CircuitBreaker, exc: BaseException | None = None, duration: float = 0.1) -> None:
    breaker.on_error(breaker.acquire(), duration, exc or ConnectionRefusedError())


def trip(breaker: CircuitBreaker) -> None:
    while breaker.state is not OPEN:
        fail(breaker)


def calls(registry: CollectorRegistry, outcome: str, breaker: str = "plex") -> float:
    value = registry.get_sample_value(
        "medianest_circuit_breaker_calls_total", {"breaker": breaker, "outcome": outcome}
    )
    return value or 0.0


def gauge(registry: CollectorRegistry, breaker: str = "plex") -> float | None:
    return registry.get_sample_value("medianest_circuit_breaker_state", {"breaker": breaker})
