"""Read-only registry from DNS SRV records, as Kubernetes headless services publish them.

URL: ``dns+srv://[nameserver[:port]]/?domain=media.svc.cluster.local&names=plex,overseerr``

* the netloc is an optional nameserver IP (``127.0.0.1:5353``, ``[::1]:53``); without it the
  system resolver configuration (``/etc/resolv.conf``) is used;
* ``names`` lists the services ``discover()`` and ``watch()`` cover when no name is given.
  A plain name (``plex``) is looked up as ``_<port_name>._<proto>.<name>.<domain>``, the
  Kubernetes convention (``_http._tcp.plex.media.svc.cluster.local``); an entry starting
  with ``_`` is a full SRV name and its service name is its first label without ``_``;
  ``discover(Criteria(name=...))`` of a plain name that is not listed works too when
  ``domain`` is set;
* ``port_name`` (default ``http``), ``proto`` (``tcp``), ``scheme`` of the endpoints
  (``http``), ``timeout`` seconds per resolution (2), ``interval`` seconds between the
  re-resolutions of a watch (10), ``reconnect`` seconds a watch tolerates a failing DNS
  server before it raises (60). Keyword options of ``from_url`` override the query.

Each SRV record becomes one instance: id ``<target>:<port>``, one endpoint
``<scheme>://<address>:<port>`` per A/AAAA address of the target (taken from the answer's
additional section when the server put them there, else looked up), ``weight`` the SRV
weight (clamped to 1..1000), metadata ``priority``, ``target`` and ``srv``. Results are
ordered by service name, then SRV priority, then weight (highest first), then id, and cached
for the smallest TTL of the records used (0: not cached). NXDOMAIN or an empty answer means
no instances; a server that does not answer is :class:`BackendUnavailable`.

DNS has no health and no writes: ``register``, ``heartbeat`` and ``deregister`` raise
:class:`ConfigurationError`. ``set_health`` keeps verdicts in an **in-memory overlay** of
this object, so health checks and ``healthy_only`` work; a verdict is forgotten when its
instance leaves DNS. ``watch`` polls every ``interval`` and yields ``registered``,
``updated`` and ``deregistered`` for differences, plus ``health`` for overlay changes; it
compares with the last answer this object had for the service when ``watch()`` was called
(else with its first poll), and ends when the registry is closed.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import TypeAdapter
from pydantic import ValidationError as ModelError

from medianest.discovery.backends.dns_records import (
    SrvTarget,
    instances_of,
    make_resolver,
    resolve_srv,
)
from medianest.discovery.base import (
    Change,
    Criteria,
    HealthState,
    Registration,
    ServiceInstance,
    ServiceName,
    ServiceRegistry,
)
from medianest.errors import BackendError, ConfigurationError
from medianest.observability import get_logger

_log = get_logger("medianest.discovery")

_OPTIONS = {"domain", "names", "port_name", "proto", "scheme", "timeout", "interval", "reconnect"}
_SECONDS = {"timeout", "interval", "reconnect"}
_SERVICE_NAME: TypeAdapter[str] = TypeAdapter(ServiceName)


def _valid_name(name: str) -> bool:
    try:
        _SERVICE_NAME.validate_python(name)
    except ModelError:
        return False
    return True


class DnsSrvRegistry(ServiceRegistry):
    """Instances from SRV + A/AAAA records (module docstring: URL, mapping, overlay)."""

    read_only = True

    def __init__(
        self,
        url: str,
        *,
        names: Sequence[str] = (),
        domain: str | None = None,
        port_name: str = "http",
        proto: str = "tcp",
        scheme: str = "http",
        timeout: float = 2.0,
        interval: float = 10.0,
        reconnect: float = 60.0,
    ) -> None:
        self.url = url
        self.domain = domain.strip(".") if domain else None
        self.port_name, self.proto, self.scheme = port_name, proto, scheme
        self.interval, self.reconnect = interval, reconnect
        if scheme not in ("http", "https", "ws", "wss", "tcp"):
            raise _config(url, f"scheme must be http, https, ws, wss or tcp, not {scheme!r}")
        self._resolver = make_resolver(urlsplit(url).netloc, timeout, url)
        self._services: dict[str, str] = {}
        for entry in names:
            name, qname = self._entry(entry)
            self._services[name] = qname
        self._cache: dict[str, tuple[float, list[SrvTarget]]] = {}
        self._known: dict[str, list[Registration]] = {}
        self._first_seen: dict[str, datetime] = {}
        self._health: dict[str, tuple[HealthState, str]] = {}
        self._watchers: weakref.WeakSet[asyncio.Queue[Change | None]] = weakref.WeakSet()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DnsSrvRegistry:
        base, _, query = url.partition("?")
        params = dict(parse_qsl(query))
        unknown = sorted(set(params) - _OPTIONS)
        if unknown:
            raise _config(url, f"unknown dns+srv:// option(s): {', '.join(unknown)}")
        merged: dict[str, Any] = dict(params)
        if "names" in merged:
            merged["names"] = [n.strip() for n in merged["names"].split(",") if n.strip()]
        try:
            merged.update({k: float(v) for k, v in params.items() if k in _SECONDS})
        except ValueError as exc:
            raise _config(url, "timeout, interval and reconnect are seconds") from exc
        merged.update(options)
        return cls(base, **merged)

    def _entry(self, entry: str) -> tuple[str, str]:
        """``(service name, SRV name)`` of one ``names`` entry."""
        if entry.startswith("_"):
            labels = entry.strip(".").split(".")
            name = next((label for label in labels if not label.startswith("_")), "").lower()
            if not _valid_name(name):
                raise _config(self.url, f"no service name label in SRV name {entry!r}")
            return name, entry.rstrip(".") + "."
        if not _valid_name(entry):
            raise _config(self.url, f"{entry!r} is not a service name (a lower-case DNS label)")
        qname = self._conventional(entry)
        if qname is None:
            raise _config(self.url, f"service {entry!r} needs domain=... (or a full SRV name)")
        return entry, qname

    def _conventional(self, name: str) -> str | None:
        if self.domain is None:
            return None
        return f"_{self.port_name}._{self.proto}.{name}.{self.domain}."

    def __repr__(self) -> str:
        return f"DnsSrvRegistry({self.url!r}, names={sorted(self._services)})"

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        """Forget cached answers and end the running watches."""
        self._closed = True
        self._cache.clear()
        for queue in list(self._watchers):
            queue.put_nowait(None)

    def _refuse(self, what: str) -> ConfigurationError:
        return _config(self.url, f"dns+srv:// is read-only: {what} is not possible")

    async def register(self, instance: ServiceInstance, *, ttl: float | None = None) -> None:
        raise self._refuse("register (publish SRV records in DNS instead)")

    async def heartbeat(self, instance_id: str) -> None:
        raise self._refuse("heartbeat")

    async def deregister(self, instance_id: str) -> bool:
        raise self._refuse("deregister (remove the SRV record from DNS instead)")

    async def ping(self) -> None:
        """Resolve one configured service (any answer, NXDOMAIN included, is fine)."""
        for name in list(self._services)[:1]:
            await self._resolve(name, fresh=True)

    async def discover(self, criteria: Criteria | None = None) -> list[Registration]:
        criteria = criteria or Criteria()
        names = [criteria.name] if criteria.name is not None else list(self._services)
        batches = await asyncio.gather(*(self._resolve(name) for name in names))
        found = [self._overlaid(r) for batch in batches for r in batch]
        return sorted((r for r in found if criteria.matches(r)), key=_order)

    async def health(self, instance_id: str) -> Registration | None:
        registration = await self._find(instance_id)
        return self._overlaid(registration) if registration is not None else None

    async def set_health(self, instance_id: str, state: HealthState, reason: str = "") -> bool:
        registration = await self._find(instance_id)
        if registration is None:
            return False
        if self._health.get(instance_id, (HealthState.UNKNOWN, "")) == (state, reason):
            return True
        self._health[instance_id] = (state, reason)
        name = registration.instance.name
        change = Change("health", instance_id, name, self._overlaid(registration))
        for queue in list(self._watchers):
            queue.put_nowait(change)
        return True

    async def _find(self, instance_id: str) -> Registration | None:
        """The current registration of ``instance_id`` among the services looked up so far."""
        names = list(dict.fromkeys([*self._services, *self._known]))
        for batch in await asyncio.gather(*(self._resolve(name) for name in names)):
            for registration in batch:
                if registration.instance.id == instance_id:
                    return registration
        return None

    def _overlaid(self, registration: Registration) -> Registration:
        verdict = self._health.get(registration.instance.id)
        if verdict is None:
            return registration
        return registration.model_copy(update={"state": verdict[0], "reason": verdict[1]})

    async def _resolve(self, name: str, *, fresh: bool = False) -> list[Registration]:
        """Registrations of service ``name`` (without the overlay), from cache when valid."""
        qname = self._services.get(name)
        if qname is None and _valid_name(name):
            qname = self._conventional(name)
        if qname is None:
            return []
        cached = self._cache.get(qname)
        if cached is not None and cached[0] > time.monotonic() and not fresh:
            targets = cached[1]
        else:
            targets, ttl = await resolve_srv(self._resolver, qname, self.url)
            if ttl > 0:
                self._cache[qname] = (time.monotonic() + ttl, targets)
        now = datetime.now(UTC)
        instances = instances_of(name, qname, targets, self.scheme)
        registrations = [
            Registration(
                instance=instance,
                registered_at=self._first_seen.setdefault(instance.id, now),
                renewed_at=now,
            )
            for instance in instances
        ]
        current = {r.instance.id for r in registrations}
        for gone in {r.instance.id for r in self._known.get(name, [])} - current:
            self._first_seen.pop(gone, None)
            self._health.pop(gone, None)
        self._known[name] = registrations
        return registrations

    def watch(self, name: str | None = None) -> AsyncIterator[Change]:
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._watchers.add(queue)
        names = [name] if name is not None else list(self._services)
        baseline = None
        if all(n in self._known for n in names):
            baseline = {r.instance.id: r for n in names for r in self._known[n]}
        return self._watch(name, names, baseline, queue)

    async def _watch(
        self,
        name: str | None,
        names: list[str],
        previous: dict[str, Registration] | None,
        queue: asyncio.Queue[Change | None],
    ) -> AsyncIterator[Change]:
        failing_since: float | None = None
        while not self._closed:
            try:
                batches = await asyncio.gather(*(self._resolve(n) for n in names))
            except BackendError as exc:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since >= self.reconnect:
                    raise
                _log.info("registry_watch_retry", backend=self.url, error=str(exc))
            else:
                failing_since = None
                current = {r.instance.id: r for batch in batches for r in batch}
                for difference in _differences(previous, current):
                    yield difference
                previous = current
            deadline = time.monotonic() + self.interval
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    async with asyncio.timeout(remaining):  # a cancelled get() keeps its item
                        health = await queue.get()
                except TimeoutError:
                    break
                if health is None:  # the registry was closed
                    return
                if name in (None, health.name):
                    yield health


def _differences(
    previous: dict[str, Registration] | None, current: dict[str, Registration]
) -> list[Change]:
    if previous is None:
        return []
    changes = []
    for instance_id in sorted(previous.keys() | current.keys()):
        old, new = previous.get(instance_id), current.get(instance_id)
        if old is None and new is not None:
            changes.append(Change("registered", instance_id, new.instance.name, new))
        elif new is None and old is not None:
            changes.append(Change("deregistered", instance_id, old.instance.name, old))
        elif old is not None and new is not None and old.instance != new.instance:
            changes.append(Change("updated", instance_id, new.instance.name, new))
    return changes


def _order(registration: Registration) -> tuple[str, int, int, str]:
    instance = registration.instance
    priority = int(instance.metadata.get("priority", "0"))
    return (instance.name, priority, -instance.weight, instance.id)


def _config(url: str, message: str) -> ConfigurationError:
    return ConfigurationError(
        message, problems=[("discovery", url, "dns+srv://[ns[:port]]/?domain=...&names=...")]
    )
