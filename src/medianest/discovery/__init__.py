"""Service discovery: a registry of service instances with health, chosen by URL.

See :mod:`medianest.discovery.base` for the model and the contract every backend keeps.
"""

from medianest.discovery.base import (
    REGISTRIES,
    Change,
    Criteria,
    HealthState,
    Registration,
    ServiceInstance,
    ServiceRegistry,
    parse_instance,
)

__all__ = [
    "REGISTRIES",
    "Change",
    "Criteria",
    "HealthState",
    "Registration",
    "ServiceInstance",
    "ServiceRegistry",
    "create_registry",
    "parse_instance",
]


def create_registry(url: str, **options: object) -> ServiceRegistry:
    """The registry backend for ``url`` (``memory://``, ``sqlite:///...``, ``etcd://...``,
    ``dns+srv://...``, ``static://``); unknown schemes raise ConfigurationError."""
    return REGISTRIES.create(url, **options)
