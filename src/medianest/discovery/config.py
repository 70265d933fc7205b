"""The ``[discovery]`` settings section: which registry, TTLs, health checks, static instances."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from medianest.config.section import Section
from medianest.discovery.base import ServiceInstance


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
