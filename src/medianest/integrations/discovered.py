"""Adapters that find their service through the registry instead of a fixed URL.

Each configured upstream is registered as an instance of its own name (``plex``,
``overseerr``...) at its configured URL (:func:`medianest.wiring.hub_instances`), so with no
other registration nothing changes. When other instances of that name are registered (in
etcd, the SQL registry, ``medianest services register``, or DNS SRV records as a Kubernetes
headless service publishes them), :class:`AdapterEndpoints` hands the healthy ones' endpoints
to the adapter's :class:`~medianest.integrations.http.UpstreamHttp`
(:meth:`~medianest.integrations.http.UpstreamHttp.use_endpoints`) and follows
``registry.watch`` so a move reaches the adapter without a restart. No healthy instance at
all means the configured URL again, so calls fail with the upstream's own error rather than a
registry's. A failing registry leaves each adapter with what it last knew.
"""

from __future__ import annotations

import asyncio
from functools import partial

from medianest.discovery.base import Criteria, ServiceRegistry
from medianest.discovery.follow import follow, stop_following
from medianest.errors import BackendError
from medianest.integrations.base import HttpAdapter
from medianest.observability import get_logger

_log = get_logger("medianest.integrations.discovered")


class AdapterEndpoints:
    """Keep the endpoints of every discoverable adapter in step with the registry."""

    def __init__(
        self, adapters: list[HttpAdapter], registry: ServiceRegistry, *, retry: float = 1.0
    ) -> None:
        self.adapters = [adapter for adapter in adapters if adapter.discoverable]
        self.registry = registry
        self.retry = retry
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for adapter in self.adapters:
            await self.refresh(adapter)
            self._tasks.append(
                asyncio.create_task(
                    follow(
                        self.registry,
                        adapter.name,
                        partial(self.refresh, adapter),
                        retry=self.retry,
                    ),
                    name=f"discovery-watch:{adapter.name}",
                )
            )

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        await stop_following(tasks)

    async def refresh(self, adapter: HttpAdapter) -> bool:
        """Read the adapter's service now; False (endpoints kept) when the registry fails."""
        try:
            found = await self.registry.discover(Criteria(name=adapter.name))
        except BackendError as exc:
            _log.warning(
                "registry unreachable; keeping the last known endpoints",
                service=adapter.name,
                error=exc.message,
            )
            return False
        urls = [
            endpoint
            for registration in found
            for endpoint in registration.instance.endpoints
            if endpoint.startswith(("http://", "https://"))
        ]
        before = adapter.http.endpoints
        adapter.http.use_endpoints(urls)
        if adapter.http.endpoints != before:
            _log.info("service endpoints changed", service=adapter.name, count=len(urls))
        return True
