"""Metrics: one collector per registry, cheap counters, the documented exposition."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from medianest.resilience import STATE_VALUES, BreakerState, CircuitBreaker, ResilienceMetrics


def test_one_collector_per_registry(registry: CollectorRegistry) -> None:
    assert ResilienceMetrics.for_registry(registry) is ResilienceMetrics.for_registry(registry)
    assert ResilienceMetrics.for_registry(CollectorRegistry()) is not (
        ResilienceMetrics.for_registry(registry)
    )
    assert ResilienceMetrics.for_registry() is ResilienceMetrics.for_registry(REGISTRY)


def test_breakers_on_the_default_registry_do_not_clash() -> None:
    CircuitBreaker("default-registry-test")
    CircuitBreaker("default-registry-test")
    value = REGISTRY.get_sample_value(
        "medianest_circuit_breaker_state", {"breaker": "default-registry-test"}
    )
    assert value == 0


def test_exposition(registry: CollectorRegistry) -> None:
    breaker = CircuitBreaker("plex", metrics=ResilienceMetrics.for_registry(registry))
    breaker.on_success(breaker.acquire(), 0.01)
    breaker.disable()
    text = generate_latest(registry).decode()
    assert "# TYPE medianest_circuit_breaker_state gauge" in text
    assert "# TYPE medianest_circuit_breaker_calls_total counter" in text
    assert 'medianest_circuit_breaker_state{breaker="plex"} 4.0' in text
    assert 'medianest_circuit_breaker_calls_total{breaker="plex",outcome="success"} 1.0' in text
    assert 'outcome="not_permitted"} 0.0' in text


def test_state_values_cover_every_state() -> None:
    assert set(STATE_VALUES) == {state.value for state in BreakerState}
    assert sorted(STATE_VALUES.values()) == list(range(len(BreakerState)))
