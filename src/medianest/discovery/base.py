"""The service registry: what an instance is, how to find instances, and the backend contract.

A :class:`ServiceInstance` is one running copy of a service (``plex``, ``overseerr``, a hub
role such as ``medianest-gateway``): a unique ``id``, the service ``name``, a ``version``,
one or more ``endpoints`` (base URLs), an optional ``health_check_url``, ``tags`` and string
``metadata``, and a balancing ``weight``. Definitions are validated models: a bad one is
refused with field errors before it reaches a backend.

A :class:`ServiceRegistry` backend keeps :class:`Registration` records (the instance, its
health :class:`HealthState`, when it was registered and last renewed, its TTL) and answers
:meth:`~ServiceRegistry.discover` with a :class:`Criteria` (name, a version constraint such
as ``>=1.2,<2``, tags and metadata that must match, healthy only by default).

Contract every backend keeps (checked by ``tests/contracts/test_discovery.py``):

* ``register`` replaces a registration with the same id **atomically**: a reader sees the
  old definition or the new one, never a mix and never none. The replacement keeps
  ``registered_at`` and the health verdict while the endpoints and health check URL stay
  the same (otherwise it starts again in ``unknown``) -- see :func:`successor`;
* ``ttl`` must be a positive number of seconds (or None for no expiry), else
  :class:`~medianest.errors.ValidationError` naming ``ttl``;
* a registration with a ``ttl`` disappears when it is not renewed by :meth:`heartbeat`
  within ``ttl`` seconds (a process killed with SIGKILL vanishes on its own);
* ``deregister`` of an unknown id returns ``False``, never raises;
* a new registration starts in :attr:`HealthState.UNKNOWN`, which ``discover`` counts as
  usable (an instance without a health check is assumed up until something says otherwise)
  while ``healthy_only`` drops :attr:`HealthState.UNHEALTHY` ones;
* ``set_health`` records a ``health`` change only when the state or the reason differ from
  what is stored (repeating a verdict is not news);
* ``watch(name)`` yields a :class:`Change` for every registration, update, health change and
  removal of that service (all services when ``name`` is None) made after ``watch()``
  returned, in the order the backend saw them. The subscription is taken when ``watch()`` is
  called, not at the first ``anext``. Re-registering an id under another service name is
  seen as ``deregistered`` (old name) then ``registered`` (new name). A watcher that falls
  too far behind gets :class:`~medianest.errors.BackendError` rather than a silent gap; the
  iterator ends when the registry is closed;
* read-only backends (``static://``, ``dns+srv://``) raise
  :class:`~medianest.errors.ConfigurationError` from ``register``, ``heartbeat`` and
  ``deregister`` and say so in :attr:`ServiceRegistry.read_only`; their ``set_health`` keeps
  verdicts in memory (health checks of configured instances are still worth having);
* driver failures become :class:`~medianest.errors.BackendError` /
  :class:`~medianest.errors.BackendUnavailable`, translated in one place per backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from medianest.backends import BackendBase, BackendEntry, BackendTable
from medianest.config.discovery import InstanceId, ServiceInstance, ServiceName, Tag


class HealthState(StrEnum):
    """Health of one instance as the registry last heard it."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class Registration(BaseModel):
    """What the registry holds about an instance."""

    model_config = ConfigDict(frozen=True)

    instance: ServiceInstance
    state: HealthState = HealthState.UNKNOWN
    reason: str = ""
    registered_at: datetime
    renewed_at: datetime
    ttl: float | None = None

    @property
    def usable(self) -> bool:
        """Whether traffic may go here (healthy or not yet checked)."""
        return self.state is not HealthState.UNHEALTHY


@dataclass(frozen=True)
class Criteria:
    """Which instances ``discover`` returns.

    ``version`` is a PEP 440 specifier set (``>=1.2,<2``); ``tags`` must all be present;
    ``metadata`` entries must all be equal; ``healthy_only`` drops unhealthy instances.
    """

    name: str | None = None
    version: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    healthy_only: bool = True

    def __post_init__(self) -> None:
        if self.version:
            try:
                SpecifierSet(self.version)
            except InvalidSpecifier as exc:
                from medianest.errors import ValidationError

                raise ValidationError(
                    f"invalid version constraint {self.version!r} (e.g. '>=1.2,<2')",
                    errors={"version": "invalid constraint"},
                ) from exc

    def matches(self, registration: Registration) -> bool:
        instance = registration.instance
        if self.name is not None and instance.name != self.name:
            return False
        if self.healthy_only and not registration.usable:
            return False
        if self.version and Version(instance.version) not in SpecifierSet(self.version):
            return False
        if any(tag not in instance.tags for tag in self.tags):
            return False
        return all(instance.metadata.get(k) == v for k, v in self.metadata.items())


def successor(
    previous: Registration | None, instance: ServiceInstance, now: datetime, ttl: float | None
) -> Registration:
    """The registration that ``register(instance, ttl=ttl)`` stores at ``now``.

    A first registration (or one under another service name) starts ``unknown``; a
    replacement keeps ``registered_at``, and keeps the health verdict while the instance is
    still reached the same way (same endpoints and health check URL).
    """
    if previous is None or previous.instance.name != instance.name:
        return Registration(instance=instance, registered_at=now, renewed_at=now, ttl=ttl)
    old = previous.instance
    same_target = (old.endpoints, old.health_check_url) == (
        instance.endpoints,
        instance.health_check_url,
    )
    return Registration(
        instance=instance,
        state=previous.state if same_target else HealthState.UNKNOWN,
        reason=previous.reason if same_target else "",
        registered_at=previous.registered_at,
        renewed_at=now,
        ttl=ttl,
    )


def check_ttl(ttl: float | None) -> float | None:
    """``ttl`` when it is None or a positive finite number of seconds, else ValidationError."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < float("inf"):
        from medianest.errors import ValidationError

        raise ValidationError(
            f"ttl must be a positive number of seconds, not {ttl!r}",
            errors={"ttl": "must be a positive number of seconds"},
        )
    return float(ttl)


def parse_instance(data: Mapping[str, Any]) -> ServiceInstance:
    """Validate a definition from outside (API body, configuration) into a ServiceInstance.

    Raises :class:`~medianest.errors.ValidationError` whose ``errors`` map each offending
    field (``endpoints.0``, ``version``...) to the reason, all of them at once.
    """
    from medianest.errors import ValidationError

    try:
        return ServiceInstance.model_validate(data)
    except PydanticValidationError as exc:
        errors = {
            ".".join(str(part) for part in err["loc"]) or "instance": err["msg"]
            for err in exc.errors()
        }
        fields = ", ".join(errors)
        raise ValidationError(
            f"invalid service instance definition ({fields})", errors=errors
        ) from exc


ChangeKind = Literal["registered", "updated", "health", "deregistered", "expired"]


@dataclass(frozen=True)
class Change:
    """One event seen by :meth:`ServiceRegistry.watch`.

    ``registration`` is the new record (the last known one for ``deregistered`` and
    ``expired``, or None when the backend no longer knows it).
    """

    kind: ChangeKind
    instance_id: str
    name: str
    registration: Registration | None


class ServiceRegistry(BackendBase, ABC):
    """The registry contract (module docstring); backends live in ``discovery/backends``."""

    read_only: bool = False

    @abstractmethod
    async def register(self, instance: ServiceInstance, *, ttl: float | None = None) -> None:
        """Add or atomically replace ``instance``; with ``ttl`` it expires unless renewed."""

    @abstractmethod
    async def heartbeat(self, instance_id: str) -> None:
        """Renew the TTL of ``instance_id``; :class:`~medianest.errors.NotFoundError` if gone."""

    @abstractmethod
    async def deregister(self, instance_id: str) -> bool:
        """Remove ``instance_id``; ``False`` when it was not registered."""

    @abstractmethod
    async def discover(self, criteria: Criteria | None = None) -> list[Registration]:
        """Registrations matching ``criteria``, ordered by service name then instance id."""

    @abstractmethod
    async def health(self, instance_id: str) -> Registration | None:
        """The registration of ``instance_id`` with its health, or None."""

    @abstractmethod
    async def set_health(self, instance_id: str, state: HealthState, reason: str = "") -> bool:
        """Record a health verdict; ``False`` when the instance is unknown."""

    @abstractmethod
    def watch(self, name: str | None = None) -> AsyncIterator[Change]:
        """Changes of service ``name`` (or all) from now on, until the iterator is closed."""

    async def ping(self) -> None:
        """Raise :class:`~medianest.errors.BackendUnavailable` when the registry is down."""
        return None


REGISTRIES: BackendTable[ServiceRegistry] = BackendTable(
    "discovery",
    {
        "memory": "medianest.discovery.backends.memory:MemoryRegistry",
        "sqlite": "medianest.discovery.backends.sql:SqlRegistry",
        "sqlite+aiosqlite": "medianest.discovery.backends.sql:SqlRegistry",
        "postgresql": BackendEntry("medianest.discovery.backends.sql:SqlRegistry", "postgres"),
        "postgresql+asyncpg": BackendEntry(
            "medianest.discovery.backends.sql:SqlRegistry", "postgres"
        ),
        "postgres": BackendEntry("medianest.discovery.backends.sql:SqlRegistry", "postgres"),
        "etcd": "medianest.discovery.backends.etcd:EtcdRegistry",
        "dns+srv": "medianest.discovery.backends.dns:DnsSrvRegistry",
        "static": "medianest.discovery.backends.static:StaticRegistry",
    },
)

__all__ = [
    "REGISTRIES",
    "Change",
    "ChangeKind",
    "Criteria",
    "HealthState",
    "InstanceId",
    "Registration",
    "ServiceInstance",
    "ServiceName",
    "ServiceRegistry",
    "Tag",
    "check_ttl",
    "parse_instance",
    "successor",
]
