"""The Uptime Kuma adapter: a public status page, its heartbeats, and ``/metrics``.

Kuma has no general REST API (its UI speaks socket.io); what it serves over HTTP is read here
(NOTES.md 4): ``/api/status-page/{slug}``, ``/api/status-page/heartbeat/{slug}`` (both
public) and the Prometheus text of ``/metrics`` behind HTTP Basic auth (username and
password, or any username with an API key as password), the credentials being sent to
``/metrics`` only. How v1 and v2 answers are evened out is in :mod:`.kuma_parse`.

v1 sends **no answer at all** for an unknown slug (v2 answers 404, ``UpstreamNotFound``), so
every call needs a deadline: the upstream's policy timeouts, or the default ones
(:class:`~medianest.resilience.config.TimeoutConfig`) when the configuration disabled both.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Self

from medianest.config import UpstreamSettings
from medianest.integrations.base import HttpAdapter
from medianest.integrations.http import UpstreamHttp, http_for
from medianest.integrations.kuma_parse import (
    Heartbeat,
    HeartbeatReport,
    MonitorMetric,
    StatusPage,
    parse_heartbeats,
    parse_metrics,
    parse_status_page,
)
from medianest.integrations.models import HealthStatus, MonitorHealth
from medianest.integrations.overseerr_parse import Node
from medianest.resilience.config import TimeoutConfig


class KumaAdapter(HttpAdapter):
    """One Uptime Kuma instance and its status page ``slug`` (``options.slug``)."""

    kind = "kuma"

    def __init__(
        self, name: str, http: UpstreamHttp, *, slug: str = "default", metrics_auth: str | None
    ) -> None:
        super().__init__(name, http)
        self.slug = slug
        self._metrics_headers = {"Authorization": metrics_auth} if metrics_auth else {}

    @classmethod
    def from_settings(cls, name: str, upstream: UpstreamSettings, **context: Any) -> Self:
        """Build from ``[upstreams.<name>]``: ``url``, ``options.slug``, ``username`` and
        ``password`` (or ``api_key``) for ``/metrics``."""
        policy = upstream.policy
        if not (policy.timeout.attempt or policy.timeout.total):
            policy = policy.model_copy(update={"timeout": TimeoutConfig()})
        secret = upstream.password or upstream.api_key
        auth = None
        if secret is not None:
            pair = f"{upstream.username or ''}:{secret.get_secret_value()}".encode()
            auth = f"Basic {base64.b64encode(pair).decode('ascii')}"
        http = http_for(
            name,
            str(upstream.url).rstrip("/"),
            policy,
            registry=context.get("registry"),
            clock=context.get("clock"),
        )
        return cls(name, http, slug=str(upstream.options.get("slug", "default")), metrics_auth=auth)

    async def _get(self, endpoint: str, slug: str | None) -> Node:
        response = await self.http.request("GET", endpoint, path={"slug": slug or self.slug})
        return Node.of(self.name, endpoint, response.json())

    async def status_page(self, slug: str | None = None) -> StatusPage:
        """The page's title, incidents (v1 and v2 alike), monitor groups and maintenance."""
        body = await self._get("/api/status-page/{slug}", slug)
        return parse_status_page(body, slug or self.slug)

    async def heartbeat_report(self, slug: str | None = None) -> HeartbeatReport:
        """Beats (last 100 per monitor in v2, 50 in v1) and 24 h uptime ratios."""
        return parse_heartbeats(await self._get("/api/status-page/heartbeat/{slug}", slug))

    async def heartbeats(self, slug: str | None = None) -> dict[int, list[Heartbeat]]:
        return (await self.heartbeat_report(slug)).beats

    async def uptime(self, slug: str | None = None) -> dict[int, float]:
        return (await self.heartbeat_report(slug)).uptime_24h

    async def monitors(self, slug: str | None = None) -> list[MonitorHealth]:
        """Every monitor on the page with its last beat and 24 h uptime (``unknown`` if none)."""
        page, report = await asyncio.gather(self.status_page(slug), self.heartbeat_report(slug))
        found = []
        for group in page.groups:
            for monitor in group.monitors:
                beats = report.beats.get(monitor.id) or []
                last = max(beats, key=lambda b: b.time) if beats else None
                found.append(
                    MonitorHealth(
                        id=monitor.id,
                        name=monitor.name,
                        type=monitor.type,
                        group=group.name,
                        status=last.status if last else HealthStatus.UNKNOWN,
                        last_beat_at=last.time if last else None,
                        ping_ms=last.ping_ms if last else None,
                        uptime_24h=report.uptime_24h.get(monitor.id),
                    )
                )
        return found

    async def _scrape(self) -> tuple[list[MonitorMetric], str | None]:
        response = await self.http.request("GET", "/metrics", headers=self._metrics_headers)
        return parse_metrics(self.name, response.text)

    async def metrics(self) -> list[MonitorMetric]:
        """Per-monitor gauges from ``/metrics``; wrong credentials raise ``UpstreamAuthError``."""
        return (await self._scrape())[0]

    async def probe(self) -> str | None:
        """``/metrics`` (checks the credentials, tells the version) when credentials are set,
        else the status page."""
        if self._metrics_headers:
            return (await self._scrape())[1]
        await self.status_page()
        return None
