"""Registrations a process vouches for: registered on start, renewed by heartbeat, removed on
a graceful stop.

The hub registers each of its roles (``medianest-gateway``, ``medianest-api``...) and the
upstreams it was configured with (``plex``, ``overseerr``...) with a TTL. A heartbeat renews
them every ``interval`` seconds; a registration found gone (the registry lost it, or the
process was paused past its TTL) is registered again. A process killed with SIGKILL stops
heartbeating, so its registrations vanish once their TTL passes; a graceful stop
deregisters them at once. A registry that fails a heartbeat is retried at the next one: the
process keeps running on what it knows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from medianest.discovery.base import ServiceInstance, ServiceRegistry
from medianest.errors import BackendError, NotFoundError
from medianest.observability import get_logger

_log = get_logger("medianest.discovery.membership")


class Membership:
    """Keep ``instances`` registered in ``registry`` while this object is started."""

    def __init__(
        self,
        registry: ServiceRegistry,
        instances: Sequence[ServiceInstance],
        *,
        ttl: float,
        interval: float,
    ) -> None:
        self.registry = registry
        self.instances = tuple(instances)
        self.ttl = ttl
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Register everything; a registry that fails now is tried again at each heartbeat
        (the process starts anyway: ``/ready`` reports the registry meanwhile)."""
        try:
            for instance in self.instances:
                await self.registry.register(instance, ttl=self.ttl)
            _log.info("registered", instances=[i.id for i in self.instances], ttl=self.ttl)
        except BackendError as exc:
            _log.warning("registration failed; retrying at the next heartbeat", error=exc.message)
        self._task = asyncio.create_task(self._beat_forever(), name="registry-heartbeat")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for instance in self.instances:
            try:
                await self.registry.deregister(instance.id)
            except BackendError as exc:
                _log.warning("deregistration failed", instance=instance.id, error=exc.message)

    async def beat(self) -> None:
        """Renew every registration once (register again what the registry lost)."""
        for instance in self.instances:
            try:
                await self.registry.heartbeat(instance.id)
            except NotFoundError:
                _log.warning("registration lost; registering again", instance=instance.id)
                await self.registry.register(instance, ttl=self.ttl)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except BackendError as exc:
                _log.warning("heartbeat failed; retrying at the next one", error=exc.message)
