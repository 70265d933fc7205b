"""Prometheus metrics of the HTTP front and the text exposition for ``/metrics``.

Metric families are created once per process on the default registry (the exposition at
``/metrics`` reads it); parts that want isolation in tests pass their own registry.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.registry import CollectorRegistry

HTTP_REQUESTS = Counter(
    "medianest_http_requests_total",
    "HTTP requests answered by the hub, by method, route template and status.",
    ("method", "route", "status"),
)
HTTP_DURATION = Histogram(
    "medianest_http_request_duration_seconds",
    "Time from request start to the last byte of the response, by route template.",
    ("route",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def exposition(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The Prometheus text format of ``registry`` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
