"""Custom Prometheus collectors registered once per registry.

Hot paths (a breaker's outcome counts, a rate limiter's refusals) keep plain integers and
a :class:`SharedCollector` turns them into metric families when Prometheus scrapes:
cheaper than ``Counter.inc()`` per call. Building many breakers or limiters must not register
the same metric twice, so each collector class has exactly one instance per registry,
obtained with :meth:`SharedCollector.for_registry`.
"""

from __future__ import annotations

import threading
import weakref
from typing import Self

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.registry import Collector

# Re-entrant: registering in a registry collects once, and a collector may take it too.
_lock = threading.RLock()
_instances: weakref.WeakKeyDictionary[CollectorRegistry, dict[type, SharedCollector]] = (
    weakref.WeakKeyDictionary()
)


class SharedCollector(Collector):
    """Base of collectors that exist once per (class, registry)."""

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> Self:
        """The instance registered in ``registry`` (the default registry when ``None``)."""
        registry = REGISTRY if registry is None else registry
        with _lock:
            by_class = _instances.setdefault(registry, {})
            found = by_class.get(cls)
            if found is None:
                found = by_class[cls] = cls()
                registry.register(found)
            assert isinstance(found, cls)
            return found
