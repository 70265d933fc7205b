"""Service discovery settings: the ``[discovery]`` section and the instance definition.

:class:`ServiceInstance` (the seed's ServiceDefinition) is configuration data as much as
registry data (``[[discovery.instances]]`` of the ``static://`` registry), so it lives here,
beside the other validated models of :mod:`medianest.config`, and
:mod:`medianest.discovery.base` re-exports it.
"""

from __future__ import annotations

import re
from typing import Annotated, Self

from packaging.version import InvalidVersion, Version
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from medianest.config.section import Section

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_TAG = r"^[A-Za-z0-9][A-Za-z0-9._:/=-]{0,63}$"
_URL = re.compile(r"^(https?|wss?|tcp)://[^\s/?#]+(/[^\s]*)?$")

InstanceId = Annotated[str, StringConstraints(pattern=_ID)]
ServiceName = Annotated[str, StringConstraints(pattern=_NAME)]
Tag = Annotated[str, StringConstraints(pattern=_TAG)]


class ServiceInstance(BaseModel):
    """One running copy of a service (the seed's ServiceDefinition)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: InstanceId = Field(description="Unique instance id; registering it again replaces it.")
    name: ServiceName = Field(description="Service name, a DNS label: `plex`, `overseerr`.")
    version: str = Field("0", description="PEP 440 / semantic version, e.g. `1.32.5`.")
    endpoints: tuple[str, ...] = Field(
        min_length=1, description="Base URLs of the instance (http, https, ws, wss or tcp)."
    )
    health_check_url: str | None = Field(
        None, description="URL answering 2xx while the instance is healthy."
    )
    tags: tuple[Tag, ...] = Field((), description="Free tags to select instances by.")
    metadata: dict[str, str] = Field(default_factory=dict, description="String key/values.")
    weight: int = Field(1, ge=1, le=1000, description="Relative share of traffic.")

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        try:
            Version(value)
        except InvalidVersion as exc:
            raise ValueError(f"not a version: {value!r} (e.g. 1.2.3)") from exc
        return value

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [url for url in value if not _URL.match(url)]
        if bad:
            raise ValueError(f"not an http(s)/ws(s)/tcp URL: {', '.join(map(repr, bad))}")
        return value

    @field_validator("health_check_url")
    @classmethod
    def _health_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("the health check URL must be http:// or https://")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 64 or any(len(k) > 128 or len(v) > 1024 for k, v in value.items()):
            raise ValueError("at most 64 entries, keys up to 128 and values up to 1024 chars")
        return value


class DiscoverySettings(Section):
    """Service discovery: the registry backend, heartbeats and health checks."""

    url: str = Field(
        "",
        description="Registry URL: empty for the main database (the default), `memory://`, "
        "`etcd://host:2379`, `dns+srv://...` or `static://` (with `instances` below, or "
        "`static://?file=/path/instances.toml`).",
        examples=["etcd://127.0.0.1:2379", "static://"],
    )
    heartbeat_interval: float = Field(
        5.0, gt=0, le=3600, description="Seconds between the TTL renewals of this hub's roles."
    )
    instance_ttl: float = Field(
        15.0,
        gt=0,
        le=86400,
        description="Seconds a registration lives without a heartbeat; a crashed process "
        "disappears from the registry after this long.",
    )
    health_interval: float = Field(
        10.0, gt=0, le=3600, description="Seconds between active health checks of an instance."
    )
    health_timeout: float = Field(
        2.0, gt=0, le=300, description="Seconds a health check URL has to answer."
    )
    rise: int = Field(
        2, ge=1, le=100, description="Consecutive successes before an instance is healthy."
    )
    fall: int = Field(
        3, ge=1, le=100, description="Consecutive failures before an instance is unhealthy."
    )
    jitter: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Random spread of each check's schedule, as a fraction of the interval, "
        "so checks of many instances do not line up.",
    )
    poll_interval: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Seconds between reads of the change log by watchers of the database "
        "registry (changes made in the same process are seen at once).",
    )
    instances: tuple[ServiceInstance, ...] = Field(
        (),
        description="Instances of the `static://` registry: tables with id, name, version, "
        "endpoints, health_check_url, tags, metadata, weight.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.heartbeat_interval >= self.instance_ttl:
            raise ValueError(
                "heartbeat_interval must be shorter than instance_ttl (a third of it is usual), "
                "or registrations expire between heartbeats"
            )
        if self.health_timeout > self.health_interval:
            raise ValueError("health_timeout must not be longer than health_interval")
        ids = [instance.id for instance in self.instances]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"instances repeat the id(s) {', '.join(repeated)}")
        return self
