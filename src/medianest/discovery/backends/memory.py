"""In-process registry (``memory://``): one dict, for a single process and for tests.

Time comes from an injectable wall clock (``clock`` returning an aware UTC datetime), so
tests move TTLs forward without sleeping. A registration whose TTL ran out vanishes at the
next operation that looks at the registry, or at the latest after ``sweep_interval``
seconds through a background sweeper, and each watcher then gets one ``expired`` change.
Every operation is synchronous inside (no ``await`` between reading and writing the dict),
which is what makes replacement atomic here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from medianest.discovery.base import (
    Change,
    ChangeKind,
    Criteria,
    HealthState,
    Registration,
    ServiceInstance,
    ServiceRegistry,
    check_ttl,
    successor,
)
from medianest.discovery.fanout import ChangeFanout, Subscription
from medianest.errors import NotFoundError

WallClock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default wall clock: now, in UTC."""
    return datetime.now(UTC)


class MemoryRegistry(ServiceRegistry):
    """Registrations in a dict; ``sweep_interval=0`` turns the background sweeper off."""

    backend_name = "memory://"

    def __init__(self, *, clock: WallClock | None = None, sweep_interval: float = 1.0) -> None:
        self._clock = clock or utc_now
        self.sweep_interval = sweep_interval
        self._records: dict[str, Registration] = {}
        self._expires: dict[str, datetime] = {}
        self._fanout = ChangeFanout(backend=self.backend_name)
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryRegistry:
        return cls(**options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._records)} registrations)"

    async def start(self) -> None:
        if self._sweeper is None and self.sweep_interval > 0:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="registry-sweeper")

    async def close(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        self._fanout.close()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            self._expire()

    # -- writes ---------------------------------------------------------------------------

    async def register(self, instance: ServiceInstance, *, ttl: float | None = None) -> None:
        ttl = check_ttl(ttl)
        self._expire()
        now = self._clock()
        previous = self._records.get(instance.id)
        registration = successor(previous, instance, now, ttl)
        self._records[instance.id] = registration
        if ttl is None:
            self._expires.pop(instance.id, None)
        else:
            self._expires[instance.id] = now + timedelta(seconds=ttl)
        if previous is not None and previous.instance.name != instance.name:
            self._emit("deregistered", previous)
            previous = None
        self._emit("registered" if previous is None else "updated", registration)

    async def heartbeat(self, instance_id: str) -> None:
        self._expire()
        registration = self._records.get(instance_id)
        if registration is None:
            raise NotFoundError(f"no registration {instance_id!r} to renew (expired or removed)")
        now = self._clock()
        self._records[instance_id] = registration.model_copy(update={"renewed_at": now})
        if registration.ttl is not None:
            self._expires[instance_id] = now + timedelta(seconds=registration.ttl)

    async def deregister(self, instance_id: str) -> bool:
        self._expire()
        registration = self._records.pop(instance_id, None)
        self._expires.pop(instance_id, None)
        if registration is None:
            return False
        self._emit("deregistered", registration)
        return True

    async def set_health(self, instance_id: str, state: HealthState, reason: str = "") -> bool:
        self._expire()
        registration = self._records.get(instance_id)
        if registration is None:
            return False
        if (registration.state, registration.reason) == (state, reason):
            return True
        updated = registration.model_copy(update={"state": HealthState(state), "reason": reason})
        self._records[instance_id] = updated
        self._emit("health", updated)
        return True

    # -- reads ----------------------------------------------------------------------------

    async def discover(self, criteria: Criteria | None = None) -> list[Registration]:
        self._expire()
        criteria = criteria or Criteria()
        found = [r for r in self._records.values() if criteria.matches(r)]
        return sorted(found, key=lambda r: (r.instance.name, r.instance.id))

    async def health(self, instance_id: str) -> Registration | None:
        self._expire()
        return self._records.get(instance_id)

    def watch(self, name: str | None = None) -> Subscription:
        return self._fanout.subscribe(name)

    async def ping(self) -> None:
        return None

    # -- internals ------------------------------------------------------------------------

    def _expire(self) -> None:
        """Drop every registration past its TTL and tell the watchers, once each."""
        if not self._expires:
            return
        now = self._clock()
        gone = sorted(i for i, when in self._expires.items() if when <= now)
        for instance_id in gone:
            del self._expires[instance_id]
            registration = self._records.pop(instance_id)
            self._emit("expired", registration)

    def _emit(self, kind: ChangeKind, registration: Registration) -> None:
        instance = registration.instance
        self._fanout.publish(Change(kind, instance.id, instance.name, registration))
