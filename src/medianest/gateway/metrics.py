"""The gateway's Prometheus metrics, with their labelled children kept at hand.

``Counter.labels(...)`` takes a lock and builds a key on every call; the gateway records
three observations per request, so the children are looked up once per label set and kept
in plain dicts (bounded: routes, methods and statuses are few).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

GATEWAY_REQUESTS = Counter(
    "gateway_requests_total", "Requests proxied by the gateway.", ("route", "method", "status")
)
GATEWAY_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Gateway time from request to the end of the response, by route.",
    ("route",),
    buckets=_BUCKETS,
)
UPSTREAM_DURATION = Histogram(
    "gateway_upstream_duration_seconds",
    "Time from sending upstream to its response headers, by route.",
    ("route",),
    buckets=_BUCKETS,
)
_MAX_CHILDREN = 10_000


class GatewayMetrics:
    """Record requests, their duration and the upstream's share, per route."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._durations: dict[str, Any] = {}
        self._upstream: dict[str, Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = _bounded(self._requests, key, GATEWAY_REQUESTS.labels(route, method, status))
        counter.inc()
        histogram = self._durations.get(route)
        if histogram is None:
            histogram = _bounded(self._durations, route, GATEWAY_DURATION.labels(route))
        histogram.observe(seconds)

    def observe_upstream(self, route: str, seconds: float) -> None:
        histogram = self._upstream.get(route)
        if histogram is None:
            histogram = _bounded(self._upstream, route, UPSTREAM_DURATION.labels(route))
        histogram.observe(seconds)


def _bounded(children: dict[Any, Any], key: Any, child: Any) -> Any:
    if len(children) >= _MAX_CHILDREN:
        children.clear()
    children[key] = child
    return child
