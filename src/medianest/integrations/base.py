"""The adapter contract every third-party integration follows.

The seed's Integration Adapter pattern: authenticate (credentials sent by the HTTP layer),
healthCheck (:meth:`Adapter.health`), transformRequest/Response (each adapter's methods take
and return :mod:`medianest.integrations.models`), handleError (:mod:`.http` maps statuses to
:mod:`medianest.errors` in one place). ``start``/``close`` own the pooled connections.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol, Self

from medianest import errors
from medianest.integrations.http import UpstreamHttp
from medianest.integrations.models import HealthStatus, ServiceHealth


class Adapter(Protocol):
    """What the hub needs from any integration."""

    name: str
    kind: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> ServiceHealth:
        """Probe the service once (through its policy) and report; never raises."""
        ...


class HttpAdapter:
    """Base for adapters speaking HTTP through one :class:`UpstreamHttp`."""

    kind = "http"
    discoverable = True
    """Whether the service registry may say where this service runs (see
    :class:`~medianest.integrations.discovered.AdapterEndpoints`)."""

    def __init__(self, name: str, http: UpstreamHttp) -> None:
        self.name = name
        self.http = http

    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def probe(self) -> str | None:
        """One cheap authenticated call; returns the service version when it tells."""
        raise NotImplementedError

    def breaker_state(self) -> str | None:
        breaker = self.http.policy.breaker
        return breaker.state.value if breaker is not None else None

    async def health(self) -> ServiceHealth:
        started = time.perf_counter()
        status, detail, version = HealthStatus.UP, None, None
        try:
            version = await self.probe()
        except errors.CircuitOpenError as exc:
            status, detail = HealthStatus.DOWN, f"circuit open: {exc}"
        except errors.UpstreamAuthError as exc:
            status, detail = HealthStatus.DEGRADED, f"credentials refused: {exc}"
        except errors.MediaNestError as exc:
            status, detail = HealthStatus.DOWN, str(exc)
        return ServiceHealth(
            service=self.name,
            kind=self.kind,
            status=status,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            detail=detail,
            version=version,
            breaker=self.breaker_state(),
            checked_at=datetime.now(UTC),
        )
