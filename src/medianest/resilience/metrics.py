"""Prometheus metrics of the resilience strategies, defined once per registry.

``prometheus_client`` refuses to register the same metric name twice in one registry, and
every breaker of every upstream reports into the same families. So the families are
defined here by one collector, :class:`ResilienceMetrics`, registered once per
:class:`~prometheus_client.CollectorRegistry`: :meth:`ResilienceMetrics.for_registry` hands
out the same collector for the same registry (cached weakly, so a registry dropped by a
test takes its collector with it). Breakers count into plain integers that the collector
reads at scrape time; a ``Counter.inc()`` takes a lock and costs more than the rest of a
breaker's bookkeeping together.

Families:

``medianest_circuit_breaker_state{breaker}`` (gauge)
    The breaker's state as a number: 0 closed, 1 open, 2 half-open, 3 forced open,
    4 disabled (:data:`STATE_VALUES`). Alert on ``> 0 and < 4``.

``medianest_circuit_breaker_calls_total{breaker,outcome}`` (counter)
    Calls seen by the breaker by outcome: ``success``, ``failure``, ``slow_success``,
    ``slow_failure`` (slower than the slow-call duration), ``ignored`` (an exception the
    breaker ignores) and ``not_permitted`` (refused while open or out of probes).
"""

from __future__ import annotations

import threading
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from medianest.observability.collectors import SharedCollector

__all__ = ["OUTCOMES", "STATE_VALUES", "BreakerCounters", "ResilienceMetrics"]

STATE_VALUES: Final[dict[str, int]] = {
    "closed": 0,
    "open": 1,
    "half_open": 2,
    "forced_open": 3,
    "disabled": 4,
}
"""Gauge value of each breaker state (keys are ``BreakerState`` values)."""

OUTCOMES: Final = (
    "success",
    "failure",
    "slow_success",
    "slow_failure",
    "ignored",
    "not_permitted",
)
"""Every ``outcome`` label of ``medianest_circuit_breaker_calls_total``, in index order."""

SUCCESS, FAILURE, SLOW_SUCCESS, SLOW_FAILURE, IGNORED, NOT_PERMITTED = range(len(OUTCOMES))

_STATE_HELP = "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled."
_CALLS_HELP = "Calls seen by a circuit breaker, by outcome."

_lock = threading.Lock()


class BreakerCounters:
    """The numbers one breaker name reports: a call count per outcome and the state value.

    Breakers increment ``calls[OUTCOME]`` directly (a list item, no lock, no label
    lookup), which is what keeps metrics off the hot path; the collector reads them when
    Prometheus scrapes. Breakers that share a name in one registry share this object, so
    the counter stays monotonic when a configuration reload replaces a breaker.
    """

    __slots__ = ("calls", "state")

    def __init__(self) -> None:
        self.calls = [0] * len(OUTCOMES)
        self.state = 0

    def set_state(self, state: str) -> None:
        """Record the breaker's state (a ``BreakerState`` value) for the gauge."""
        self.state = STATE_VALUES[state]


class ResilienceMetrics(SharedCollector):
    """The metric families of :mod:`medianest.resilience` in one registry (a collector)."""

    def __init__(self) -> None:
        self._breakers: dict[str, BreakerCounters] = {}

    def breaker(self, name: str) -> BreakerCounters:
        """The counters of breaker ``name``, created on first use."""
        with _lock:
            counters = self._breakers.get(name)
            if counters is None:
                counters = self._breakers[name] = BreakerCounters()
            return counters

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> list[Metric]:
        state, calls = self._families()
        with _lock:
            breakers = sorted(self._breakers.items())
        for name, counters in breakers:
            state.add_metric([name], counters.state)
            for outcome, count in zip(OUTCOMES, list(counters.calls), strict=True):
                calls.add_metric([name, outcome], count)
        return [state, calls]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily("medianest_circuit_breaker_state", _STATE_HELP, labels=["breaker"]),
            CounterMetricFamily(
                "medianest_circuit_breaker_calls", _CALLS_HELP, labels=["breaker", "outcome"]
            ),
        )
