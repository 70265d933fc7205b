"""Prometheus metrics of the message broker, counted in plain numbers and read at scrape time.

Families (one :class:`MessagingMetrics` collector per Prometheus registry, see
:class:`~medianest.observability.collectors.SharedCollector`):

``medianest_messages_published_total{topic}`` (counter)
    Messages whose ``publish`` returned. Per topic only: a publisher does not know which
    groups will receive a message (Redis, RabbitMQ and NATS route after the publish), so a
    ``group`` label could not mean the same thing on every backend.
``medianest_messages_consumed_total{topic,group}`` (counter)
    Deliveries whose handler returned (and were acked).
``medianest_messages_failed_total{topic,group}`` (counter)
    Deliveries whose handler raised (each one is retried or dead-lettered).
``medianest_messages_dead_lettered_total{topic,group}`` (counter)
    Messages moved to the dead-letter queue of their topic and group.
``medianest_message_handler_duration_seconds{topic,group}`` (histogram)
    Handler run time, successful or not.
``medianest_messaging_lag{group}`` (gauge)
    Messages not yet acked per group, from every attached broker whose backend exposes it
    (:meth:`~medianest.messaging.base.Broker.lag`); memory and SQLite count pending
    deliveries.

Consumers record into integers under one lock: ``Counter.labels(...).inc()`` costs more
than the broker's own bookkeeping for a message. Topics and groups are names chosen by the
code, so the label sets stay few.
"""

from __future__ import annotations

import bisect
import inspect
import threading
import weakref
from collections.abc import Mapping
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from medianest.observability.collectors import SharedCollector

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Upper bounds (seconds) of the handler duration histogram."""

_COUNTERS = {
    "consumed": ("medianest_messages_consumed", "Deliveries whose handler returned (acked)."),
    "failed": ("medianest_messages_failed", "Deliveries whose handler raised."),
    "dead_lettered": (
        "medianest_messages_dead_lettered",
        "Messages moved to the dead-letter queue of their topic and group.",
    ),
}


class LagSource(Protocol):
    """Anything that says how many messages each group has not acked yet (a broker)."""

    def lag(self) -> Mapping[str, int] | None: ...


class _Durations:
    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.count = 0
        self.total = 0.0


class MessagingMetrics(SharedCollector):
    """The broker families (module docstring); one per registry via ``for_registry()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._published: dict[str, int] = {}
        self._counts: dict[str, dict[tuple[str, str], int]] = {kind: {} for kind in _COUNTERS}
        self._durations: dict[tuple[str, str], _Durations] = {}
        self._sources: weakref.WeakSet[LagSource] = weakref.WeakSet()

    # -- recording ------------------------------------------------------------------------

    def published(self, topic: str) -> None:
        with self._lock:
            self._published[topic] = self._published.get(topic, 0) + 1

    def handled(self, topic: str, group: str, seconds: float, *, ok: bool) -> None:
        """A handler ran for ``seconds``; ``ok`` when it returned."""
        key = (topic, group)
        counts = self._counts["consumed" if ok else "failed"]
        with self._lock:
            counts[key] = counts.get(key, 0) + 1
            durations = self._durations.get(key)
            if durations is None:
                durations = self._durations[key] = _Durations()
            durations.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            durations.count += 1
            durations.total += seconds

    def dead_lettered(self, topic: str, group: str) -> None:
        counts = self._counts["dead_lettered"]
        with self._lock:
            counts[(topic, group)] = counts.get((topic, group), 0) + 1

    def attach(self, source: LagSource) -> None:
        """Report ``source.lag()`` in the lag gauge until it is detached or collected."""
        with self._lock:
            self._sources.add(source)

    def detach(self, source: LagSource) -> None:
        with self._lock:
            self._sources.discard(source)

    # -- reading --------------------------------------------------------------------------

    def count(self, kind: str, topic: str, group: str = "") -> int:
        """A counter's value (``published``, ``consumed``, ``failed``, ``dead_lettered``)."""
        with self._lock:
            if kind == "published":
                return self._published.get(topic, 0)
            return self._counts[kind].get((topic, group), 0)

    def describe(self) -> list[Metric]:
        return list(_Families().all())

    def collect(self) -> list[Metric]:
        with self._lock:
            published = dict(self._published)
            counts = {kind: dict(values) for kind, values in self._counts.items()}
            durations = {key: (list(d.buckets), d.total) for key, d in self._durations.items()}
            sources = list(self._sources)
        lag: dict[str, int] = {}
        for source in sources:
            seen = source.lag()
            if inspect.isawaitable(seen):  # a backend that has to ask a server: not here
                getattr(seen, "close", lambda: None)()
                continue
            for group, pending in (seen or {}).items():
                lag[group] = lag.get(group, 0) + pending
        out = _Families()
        for topic, value in sorted(published.items()):
            out.published.add_metric([topic], value)
        for kind, family in out.counters.items():
            for labels, value in sorted(counts[kind].items()):
                family.add_metric(list(labels), value)
        bounds = (*map(str, BUCKETS), "+Inf")
        for (topic, group), (buckets, total) in sorted(durations.items()):
            cumulative, running = [], 0
            for bound, hits in zip(bounds, buckets, strict=True):
                running += hits
                cumulative.append((bound, float(running)))
            out.durations.add_metric([topic, group], cumulative, total)
        for group, pending in sorted(lag.items()):
            out.lag.add_metric([group], pending)
        return list(out.all())


class _Families:
    """Fresh, empty metric families for one scrape."""

    def __init__(self) -> None:
        labels = ["topic", "group"]
        self.published = CounterMetricFamily(
            "medianest_messages_published", "Messages published, by topic.", labels=["topic"]
        )
        self.counters = {
            kind: CounterMetricFamily(name, text, labels=labels)
            for kind, (name, text) in _COUNTERS.items()
        }
        self.durations = HistogramMetricFamily(
            "medianest_message_handler_duration_seconds",
            "Time a message handler ran, by topic and group.",
            labels=labels,
        )
        self.lag = GaugeMetricFamily(
            "medianest_messaging_lag",
            "Messages not yet acked per consumer group (where the backend exposes it).",
            labels=["group"],
        )

    def all(self) -> tuple[Metric, ...]:
        return (self.published, *self.counters.values(), self.durations, self.lag)
