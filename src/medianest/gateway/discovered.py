"""Routes whose target is a service name: their instances come from the service registry.

For each such route a :class:`DiscoveredTargets` task reads the healthy instances of the
service and hands them to the route's balancer (:meth:`InstancePool.update`, which keeps the
state of URLs that stay), then follows ``registry.watch(service)`` and refreshes on every
change (:func:`~medianest.discovery.follow.follow`), without a restart. When the registry
fails, the route keeps serving the instances it last knew and the task retries with a growing
pause; ``/ready`` reports the registry.

Passive outcomes of proxied requests (success, or a failure the outlier detection counts)
go to the health checker as reports on the instance, so the gateway's view feeds the same
health state as the active checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from medianest.config.gateway import Instance
from medianest.discovery.base import Criteria, Registration, ServiceRegistry
from medianest.discovery.follow import follow, stop_following
from medianest.errors import BackendError
from medianest.observability import get_logger

_log = get_logger("medianest.gateway.discovered")
Reporter = Callable[[str, bool, str], Any]


def instances_of(registrations: list[Registration]) -> list[Instance]:
    """The balancer's instances: each endpoint of each usable registration, with its weight."""
    return [
        Instance.model_validate({"url": endpoint, "weight": found.instance.weight})
        for found in registrations
        for endpoint in found.instance.endpoints
        if endpoint.startswith(("http://", "https://"))
    ]


class DiscoveredTargets:
    """Keep the pools of service-name routes in step with the registry."""

    def __init__(self, gateway: Any, registry: ServiceRegistry, *, retry: float = 1.0) -> None:
        self.gateway = gateway
        self.registry = registry
        self.retry = retry
        self.reporter: Reporter | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._owners: dict[str, str] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.sync()
        self.gateway.reload_listeners.append(self._reloaded)

    def _reloaded(self) -> None:
        task = asyncio.get_running_loop().create_task(self.sync(), name="discovery-sync")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def sync(self) -> None:
        """Follow exactly the services the current route table names (after a reload too)."""
        wanted = {
            rt.route.target.service
            for rt in self.gateway.runtimes.values()
            if rt.route.target.service is not None
        }
        for service in list(self._tasks):
            if service not in wanted:
                self._tasks.pop(service).cancel()
        for service in wanted:
            await self.refresh(service)  # new routes of a known service need instances too
            if service not in self._tasks:
                self._tasks[service] = asyncio.create_task(
                    follow(
                        self.registry, service, partial(self.refresh, service), retry=self.retry
                    ),
                    name=f"discovery-watch:{service}",
                )

    async def close(self) -> None:
        if self._reloaded in self.gateway.reload_listeners:
            self.gateway.reload_listeners.remove(self._reloaded)
        tasks, self._tasks = [*self._tasks.values(), *self._pending], {}
        await stop_following(tasks)

    async def refresh(self, service: str) -> bool:
        """Read ``service`` now and update its routes; False (state kept) when it fails."""
        try:
            found = await self.registry.discover(Criteria(name=service))
        except BackendError as exc:
            _log.warning(
                "registry unreachable; keeping the last known instances",
                service=service,
                error=exc.message,
            )
            return False
        for registration in found:
            for endpoint in registration.instance.endpoints:
                self._owners[endpoint.rstrip("/")] = registration.instance.id
        instances = instances_of(found)
        for rt in self.gateway.runtimes.values():
            if rt.route.target.service == service:
                rt.pool.update(instances)
                rt.pool.listener = self._outcome
        return True

    def _outcome(self, url: str, ok: bool, reason: str) -> None:
        instance_id = self._owners.get(url.rstrip("/"))
        if instance_id is not None and self.reporter is not None:
            self.reporter(instance_id, ok, reason)
