"""``medianest_service_instances{service,state}``: how many instances each service has per state.

The gauge is computed when Prometheus scrapes, from the last known state of every
instance as seen by the health checkers of this process (each checker keeps a view of the
registry, refreshed every interval and updated on every transition it makes). There is one
:class:`DiscoveryMetrics` collector per Prometheus registry (see
:class:`~medianest.observability.collectors.SharedCollector`); checkers attach their view to
it and are held weakly, so a closed checker stops counting. Every known service reports all
three states, zeros included, so a state that empties drops to 0 instead of vanishing.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric

from medianest.discovery.base import HealthState
from medianest.observability.collectors import SharedCollector

_HELP = "Service instances known to the registry, by service and health state."
_lock = threading.Lock()


class InstanceView(Protocol):
    """Something that knows the last (service name, state) of each instance id."""

    def known_states(self) -> Mapping[str, tuple[str, HealthState]]: ...


class DiscoveryMetrics(SharedCollector):
    """Sums the views attached to it into ``medianest_service_instances``."""

    def __init__(self) -> None:
        self._views: weakref.WeakSet[InstanceView] = weakref.WeakSet()

    def attach(self, view: InstanceView) -> None:
        with _lock:
            self._views.add(view)

    def detach(self, view: InstanceView) -> None:
        with _lock:
            self._views.discard(view)

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> list[Metric]:
        with _lock:
            views = list(self._views)
        family = self._family()
        for (service, state), count in sorted(count_states(views).items()):
            family.add_metric([service, state], count)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("medianest_service_instances", _HELP, labels=["service", "state"])


def count_states(views: Iterable[InstanceView]) -> dict[tuple[str, str], int]:
    """Instances per (service, state) over ``views``; an id seen twice counts once."""
    merged: dict[str, tuple[str, HealthState]] = {}
    for view in views:
        merged.update(view.known_states())
    counts = Counter((name, state.value) for name, state in merged.values())
    for name in {name for name, _ in merged.values()}:
        for state in HealthState:
            counts.setdefault((name, state.value), 0)
    return dict(counts)
