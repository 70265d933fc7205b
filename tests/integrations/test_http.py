"""The one HTTP client layer: status mapping, encoding, metrics and a span per call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from medianest import errors
from medianest.integrations.http import (
    encode_query,
    error_for_status,
    http_for,
    retry_after_seconds,
)
from medianest.resilience import PolicyConfig
from medianest.simulators import SimulatorOptions, build_simulator
from tests.support.servers import serve_asgi

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracing() -> None:
    """Install an SDK provider once per process (OpenTelemetry refuses to replace one)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, errors.UpstreamAuthError),
        (403, errors.UpstreamAuthError),
        (404, errors.UpstreamNotFound),
        (409, errors.UpstreamConflict),
        (422, errors.UpstreamBadRequest),
        (429, errors.UpstreamRateLimited),
        (500, errors.UpstreamError),
        (502, errors.UpstreamUnavailable),
        (503, errors.UpstreamUnavailable),
        (504, errors.UpstreamUnavailable),
    ],
)
def test_status_mapping(status: int, cls: type[errors.UpstreamError]) -> None:
    exc = error_for_status("plex", "GET", "/library/sections", status, {}, "why")
    assert type(exc) is cls
    assert (exc.service, exc.endpoint, exc.status) == ("plex", "/library/sections", status)
    assert str(exc) == f"plex answered GET /library/sections with HTTP {status}: why"


def test_overrides_and_retry_after() -> None:
    exc = error_for_status(
        "overseerr", "GET", "/movie/{id}", 500, {}, "", {500: errors.UpstreamNotFound}
    )
    assert isinstance(exc, errors.UpstreamNotFound)
    limited = error_for_status("o", "GET", "/x", 429, {"Retry-After": "7"}, "")
    assert isinstance(limited, errors.UpstreamRateLimited)
    assert limited.retry_after == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    parsed = retry_after_seconds(later)
    assert parsed is not None
    assert 20 < parsed <= 30
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_query_encoding_is_strict_rfc3986() -> None:
    assert encode_query({"query": "the matrix: reloaded!", "page": 2, "x": None}) == (
        "query=the%20matrix%3A%20reloaded%21&page=2"
    )
    assert encode_query({"updatedAt>>": 1700000000, "includeGuids": True}) == (
        "updatedAt%3E%3E=1700000000&includeGuids=1"
    )


async def test_metrics_span_and_traceparent_per_call() -> None:
    sim = build_simulator("plex", SimulatorOptions(size=10))
    async with serve_asgi(sim, lifespan="off") as server:
        http = http_for("plex-metrics", server.url, PolicyConfig())
        await http.start()
        try:
            before = REGISTRY.get_sample_value(
                "integration_requests_total",
                {"service": "plex-metrics", "endpoint": "/library/metadata/{key}", "status": "404"},
            )
            with pytest.raises(errors.UpstreamError):
                await http.request(
                    "GET",
                    "/library/metadata/{key}",
                    path={"key": "999999"},
                    headers={"X-Plex-Token": SimulatorOptions().token},
                )
        finally:
            await http.close()
    after = REGISTRY.get_sample_value(
        "integration_requests_total",
        {"service": "plex-metrics", "endpoint": "/library/metadata/{key}", "status": "404"},
    )
    assert (after or 0) - (before or 0) == 1
    spans = [s for s in _EXPORTER.get_finished_spans() if s.name == "GET /library/metadata/{key}"]
    assert spans
    span = spans[-1]
    assert span.kind is trace.SpanKind.CLIENT
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 404
    sent = sim.requests[-1]
    traceparent = sent.header("traceparent")
    assert traceparent is not None
    assert f"{span.context.trace_id:032x}" in traceparent
    labels = [
        value
        for family in REGISTRY.collect()
        if family.name.startswith("integration_")
        for sample in family.samples
        for value in sample.labels.values()
    ]
    assert labels
    assert not [value for value in labels if "999999" in value]


async def test_unreachable_and_unstarted() -> None:
    from tests.support.servers import free_port

    http = http_for("nowhere", f"http://127.0.0.1:{free_port()}", PolicyConfig())
    with pytest.raises(errors.UpstreamError, match="not started"):
        await http.request("GET", "/x")
    await http.start()
    try:
        with pytest.raises(errors.UpstreamUnavailable) as info:
            await http.request("GET", "/x")
    finally:
        await http.close()
    assert info.value.service == "nowhere"
