"""etcd v3 registry: ``etcd://[user:password@]host:2379[,host2:2379][/prefix][?options]``.

Talks to etcd's JSON gateway over HTTP (:mod:`.etcd_gateway`), so no driver is needed.
Options (query or keyword): ``timeout`` seconds per request (default 5), ``ttl`` a default
TTL for registrations made without one (default none: they stay until deregistered),
``reconnect`` seconds a watch keeps trying to reconnect before it raises (default 60). The
prefix defaults to ``/medianest/registry``.

Layout under the prefix:

* ``instances/<name>/<id>`` — the :class:`Registration` as JSON, health included;
* ``ids/<id>`` — the service name of ``id``, so that an id is found in one read and a
  re-register under another name still replaces the old key in the same transaction;
* ``removed/<name>`` — ``{"id": ...}`` of the last instance of ``name`` deregistered on
  purpose (one small key per service, see "watch" below).

A registration with a ``ttl`` gets its own lease (etcd rounds up to whole seconds and to its
minimum lease TTL); both of its keys are bound to it, :meth:`heartbeat` is a lease
keep-alive, and etcd deletes the keys itself when the lease runs out, so a process killed
with SIGKILL vanishes after its TTL. ``register`` and ``deregister`` are single transactions
guarded by the ``mod_revision`` of the keys they read (a replacement keeps what
:func:`~medianest.discovery.base.successor` says it keeps, read and written atomically);
``set_health`` is a compare-and-swap on the instance key's ``mod_revision`` (retried on
conflict, so a concurrent re-register is never overwritten with the old definition) and
writes nothing when the verdict is unchanged. etcd keeps renewals in the lease, not in the
value: ``renewed_at`` is the registration time, or the time of the last :meth:`heartbeat`
made through this object.

``watch`` streams ``/v3/watch`` over the whole prefix with ``prev_kv`` and turns each event
into a :class:`Change`: a put without a previous value is ``registered``, one that changes
only state and reason (what ``set_health`` writes) ``health``, any other ``updated`` (a
re-register always moves ``renewed_at``). etcd does not say why a key was deleted, so
``deregister`` writes the ``removed/<name>`` marker in the same transaction (same revision)
as the delete: a delete with a marker, or with a put of the same id under another name (a
re-register that moved it), is ``deregistered``; any other delete (a lease that ran out, a
revoke, an ``etcdctl del``) is ``expired``. A dropped stream is reopened from the last seen
revision + 1, so no event is lost or repeated; a watcher etcd cannot serve any more (its
history was compacted) gets :class:`~medianest.errors.BackendError`, and watches end when
the registry is closed. A watch starts after the last revision this object had seen when
``watch()`` was called (``start`` reads the current one), so a change made after that call
is never missed, even one made before the iterator is first awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import ValidationError as ModelError

from medianest.backends import mask_url
from medianest.discovery.backends.etcd_gateway import (
    JSON,
    EtcdGateway,
    b64,
    delete_op,
    endpoints_of,
    prefix_end,
    put_op,
    unb64,
    unchanged,
)
from medianest.discovery.backends.etcd_watch import changes_of, watch_events
from medianest.discovery.base import (
    Change,
    Criteria,
    HealthState,
    Registration,
    ServiceInstance,
    ServiceRegistry,
    check_ttl,
    successor,
)
from medianest.errors import BackendError, BackendUnavailable, ConfigurationError, NotFoundError
from medianest.observability import get_logger

_log = get_logger("medianest.discovery")

DEFAULT_PREFIX = "/medianest/registry"
_ATTEMPTS = 20  # compare-and-swap rounds before a write gives up on a hot key
_OPTIONS = {"timeout", "ttl", "reconnect"}


class EtcdRegistry(ServiceRegistry):
    """Service registry in etcd v3 (module docstring: layout, leases, watch)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        ttl: float | None = None,
        reconnect: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        endpoints = endpoints_of(hosts)
        if parts.scheme != "etcd" or not endpoints:
            raise ConfigurationError(
                f"not an etcd registry URL: {mask_url(url)!r}",
                problems=[("discovery", mask_url(url), "etcd://host:2379[,host:2379][/prefix]")],
            )
        self.url = url
        self.prefix = parts.path.rstrip("/") or DEFAULT_PREFIX
        if ttl is not None and not 0 < ttl < math.inf:
            raise ConfigurationError(
                f"the etcd registry's default ttl must be positive seconds, not {ttl!r}",
                problems=[("discovery", mask_url(url), "ttl=<positive seconds>")],
            )
        self.default_ttl = ttl
        self.reconnect = reconnect
        self._gateway = EtcdGateway(
            endpoints,
            name=mask_url(url),
            timeout=timeout,
            username=unquote(user) if user else None,
            password=unquote(password) if user else None,
        )
        self._renewed: dict[str, datetime] = {}
        self._closed = True  # until start()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> EtcdRegistry:
        query = dict(parse_qsl(urlsplit(url).query))
        unknown = sorted(set(query) - _OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"unknown etcd registry option(s): {', '.join(unknown)}",
                problems=[("discovery", mask_url(url), f"options among {sorted(_OPTIONS)}")],
            )
        try:
            merged: dict[str, Any] = {k: float(v) for k, v in query.items()}
        except ValueError as exc:
            raise ConfigurationError(
                f"etcd registry options must be numbers (seconds): {mask_url(url)!r}",
                problems=[("discovery", mask_url(url), "timeout, ttl, reconnect in seconds")],
            ) from exc
        merged.update(options)
        return cls(url.split("?", 1)[0], **merged)

    def __repr__(self) -> str:
        return f"EtcdRegistry({mask_url(self.url)!r})"

    async def start(self) -> None:
        """Open the HTTP session and read etcd's current revision (the start of watches)."""
        self._closed = False
        await self._gateway.start()
        try:
            await self.ping()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connections; running watches end (leases are left to expire)."""
        self._closed = True
        await self._gateway.close()

    async def ping(self) -> None:
        await self._gateway.call("/v3/maintenance/status", {})

    def _instance_key(self, name: str, instance_id: str) -> str:
        return f"{self.prefix}/instances/{name}/{instance_id}"

    def _index_key(self, instance_id: str) -> str:
        return f"{self.prefix}/ids/{instance_id}"

    async def _get(self, key: str) -> JSON | None:
        answer = await self._gateway.call("/v3/kv/range", {"key": b64(key)})
        kvs = answer.get("kvs") or []
        return dict(kvs[0]) if kvs else None

    async def _txn(self, compare: list[JSON], success: list[JSON]) -> bool:
        body = {"compare": compare, "success": success}
        return bool((await self._gateway.call("/v3/kv/txn", body)).get("succeeded"))

    async def _revoke(self, lease: int) -> None:
        """Revoke ``lease``; one that is already gone (expired) is fine."""
        try:
            await self._gateway.call("/v3/lease/revoke", {"ID": str(lease)})
        except BackendError as exc:
            if exc.extra.get("grpc_code") != 5:  # NOT_FOUND: it expired on its own
                raise

    async def register(self, instance: ServiceInstance, *, ttl: float | None = None) -> None:
        ttl = check_ttl(self.default_ttl if ttl is None else ttl)
        lease = 0
        if ttl is not None:
            granted = await self._gateway.call("/v3/lease/grant", {"TTL": max(1, math.ceil(ttl))})
            lease = int(granted["ID"])
        try:
            old_lease = await self._replace(instance, ttl, lease)
        except BaseException:
            if lease:  # the registration did not happen: do not leave its lease behind
                with contextlib.suppress(BackendError):
                    await asyncio.shield(self._revoke(lease))
            raise
        self._renewed.pop(instance.id, None)
        if old_lease and old_lease != lease:
            await self._revoke(old_lease)

    async def _replace(self, instance: ServiceInstance, ttl: float | None, lease: int) -> int:
        """Write ``instance`` in one transaction guarded by what was read; the old lease."""
        index_key = self._index_key(instance.id)
        key = self._instance_key(instance.name, instance.id)
        for _ in range(_ATTEMPTS):
            index = await self._get(index_key)
            old_lease, old, ops = 0, None, []
            compare = [unchanged(index_key, int(index["mod_revision"]) if index else 0)]
            if index is not None:
                old_lease, old_name = int(index.get("lease", 0)), unb64(index["value"])
                old_key = self._instance_key(old_name, instance.id)
                old = await self._get(old_key)
                compare.append(unchanged(old_key, int(old["mod_revision"]) if old else 0))
                if old_name != instance.name:
                    ops.append(delete_op(old_key))
            previous = self._parse(old, renewals=False)
            registration = successor(previous, instance, datetime.now(UTC), ttl)
            ops.append(put_op(key, registration.model_dump_json(), lease))
            ops.append(put_op(index_key, instance.name, lease))
            if await self._txn(compare, ops):
                return old_lease
        raise BackendError(
            f"register of {instance.id!r} kept losing races", backend=self._gateway.name
        )

    async def heartbeat(self, instance_id: str) -> None:
        index = await self._get(self._index_key(instance_id))
        if index is None:
            raise NotFoundError(f"instance {instance_id!r} is not registered (or expired)")
        lease = int(index.get("lease", 0))
        if lease:
            answer = await self._gateway.call("/v3/lease/keepalive", {"ID": str(lease)})
            if int(answer.get("TTL", 0)) <= 0:
                raise NotFoundError(f"the registration of {instance_id!r} expired")
        self._renewed[instance_id] = datetime.now(UTC)

    async def deregister(self, instance_id: str) -> bool:
        index_key = self._index_key(instance_id)
        for _ in range(_ATTEMPTS):
            index = await self._get(index_key)
            if index is None:
                return False
            name, lease = unb64(index["value"]), int(index.get("lease", 0))
            ops = [
                delete_op(self._instance_key(name, instance_id)),
                delete_op(index_key),
                put_op(f"{self.prefix}/removed/{name}", json.dumps({"id": instance_id})),
            ]
            if await self._txn([unchanged(index_key, int(index["mod_revision"]))], ops):
                self._renewed.pop(instance_id, None)
                if lease:
                    await self._revoke(lease)
                return True
        raise BackendError(
            f"deregister of {instance_id!r} kept losing races", backend=self._gateway.name
        )

    async def discover(self, criteria: Criteria | None = None) -> list[Registration]:
        criteria = criteria or Criteria()
        start = f"{self.prefix}/instances/" + (f"{criteria.name}/" if criteria.name else "")
        body = {"key": b64(start), "range_end": b64(prefix_end(start))}
        answer = await self._gateway.call("/v3/kv/range", body)
        found = [r for kv in answer.get("kvs") or [] if (r := self._parse(kv)) is not None]
        found = [r for r in found if criteria.matches(r)]
        return sorted(found, key=lambda r: (r.instance.name, r.instance.id))

    async def _locate(
        self, instance_id: str, *, renewals: bool = True
    ) -> tuple[str, JSON, Registration] | None:
        """The instance key of ``instance_id``, its key-value and its parsed registration."""
        index = await self._get(self._index_key(instance_id))
        if index is None:
            return None
        key = self._instance_key(unb64(index["value"]), instance_id)
        kv = await self._get(key)
        registration = self._parse(kv, renewals=renewals) if kv is not None else None
        return (key, kv, registration) if kv is not None and registration is not None else None

    async def health(self, instance_id: str) -> Registration | None:
        found = await self._locate(instance_id)
        return found[2] if found is not None else None

    async def set_health(self, instance_id: str, state: HealthState, reason: str = "") -> bool:
        for _ in range(_ATTEMPTS):
            found = await self._locate(instance_id, renewals=False)
            if found is None:
                return False
            key, kv, registration = found
            if registration.state is state and registration.reason == reason:
                return True
            value = registration.model_copy(update={"state": state, "reason": reason})
            put = {"key": b64(key), "value": b64(value.model_dump_json()), "ignore_lease": True}
            compare = [unchanged(key, int(kv["mod_revision"]))]
            if await self._txn(compare, [{"request_put": put}]):
                return True
        raise BackendError(
            f"set_health of {instance_id!r} kept losing races", backend=self._gateway.name
        )

    def _parse(self, kv: JSON | None, *, renewals: bool = True) -> Registration | None:
        """The registration stored in ``kv`` (None when absent or not ours), with this
        object's own heartbeat times as ``renewed_at`` unless ``renewals`` is false."""
        if not kv or not kv.get("value"):
            return None
        try:
            registration = Registration.model_validate_json(unb64(kv["value"]))
        except (ModelError, ValueError) as exc:
            _log.warning("registry_bad_value", key=unb64(kv.get("key", "")), error=str(exc))
            return None
        renewed = self._renewed.get(registration.instance.id) if renewals else None
        if renewed is not None and renewed > registration.renewed_at:
            registration = registration.model_copy(update={"renewed_at": renewed})
        return registration

    def _stored(self, kv: JSON | None) -> Registration | None:
        return self._parse(kv, renewals=False)

    def watch(self, name: str | None = None) -> AsyncIterator[Change]:
        return self._watch(name, self._gateway.revision + 1 if self._gateway.revision else 0)

    async def _watch(self, name: str | None, start: int) -> AsyncIterator[Change]:
        if self._closed:  # closed before the first anext: an ended watch, or one never started
            if start:
                return
            raise BackendUnavailable("etcd registry is not started", backend=mask_url(self.url))
        if not start:
            await self.ping()
            start = self._gateway.revision + 1
        batches = watch_events(
            self._gateway,
            f"{self.prefix}/",
            start,
            reconnect=self.reconnect,
            closed=lambda: self._closed,
        )
        async with contextlib.aclosing(batches):
            async for events in batches:
                for change in changes_of(events, self.prefix, name, self._stored):
                    yield change
