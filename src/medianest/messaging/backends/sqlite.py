"""Embedded durable broker (``sqlite:///path/broker.db``): the default when nothing is installed.

**Its own file, not the main database.** Every publish, claim and ack is a write, and SQLite
lets one writer at a time into a file: sharing the hub's database would queue sessions,
heartbeats and catalogue writes behind a burst of messages (and the other way round). A file
of its own has its own WAL and its own write lock; its tables are created by the backend
(:mod:`~medianest.messaging.backends.sqlite_store`), not by the hub's migrations.

**Delivery.** A publish is one transaction: the message and one delivery row per group
whose patterns match (the groups subscribed so far: a group receives messages published
after its first subscription, like a RabbitMQ queue, whether or not a consumer runs). A
publish wakes this broker's own consumers of those groups at once (an :class:`asyncio.Event`);
consumers in other processes find it when they poll, every ``poll_interval`` seconds. Claims
take up to as many deliveries as the subscription has free handler slots, in one statement.

**At least once, across crashes.** A claim leases deliveries for ``lease`` seconds (renewed
every third of it while the handler runs): a consumer killed mid-handler stops renewing, the
lease runs out and the delivery becomes visible again to any consumer of the group, with
its attempt incremented. Acks, retries and releases apply only while the lease is still
held by the consumer that claimed it.

Publishing a message whose ``id`` is still stored (at least until every group acked it) does
nothing: a publisher that retries after an error cannot duplicate it meanwhile.

**Ordering** is per key, across every process: a delivery is not claimed while an earlier
delivery of the same key is still in its group (leased, or waiting for a retry).

**Durability.** WAL with ``synchronous=NORMAL``: a publish that returned survives the
process being killed; a power cut may lose the last few transactions. The WAL is copied
into the file by a background checkpoint every ``checkpoint_interval`` seconds on a
connection of its own, so no publish ever waits for a checkpoint's fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from medianest.errors import BackendError, ConfigurationError, NotFoundError
from medianest.messaging.backends import sqlite_store as sql
from medianest.messaging.backends.sqlite_consumer import SqliteConsumer
from medianest.messaging.backends.sqlite_store import SqliteStore, StaleBindings
from medianest.messaging.base import (
    Broker,
    DeadLetter,
    Handler,
    Message,
    RetryPolicy,
    check_group,
    check_pattern,
    topic_matches,
)
from medianest.messaging.metrics import MessagingMetrics
from medianest.messaging.wire import encode
from medianest.observability.logging import get_logger

_log = get_logger("medianest.messaging")


def sqlite_path(url: str) -> str:
    """The file of ``sqlite:///relative.db`` / ``sqlite:////absolute.db`` (SQLAlchemy style)."""
    scheme, sep, rest = url.partition("://")
    path = rest.split("?", 1)[0]
    if not sep or not scheme.lower().startswith("sqlite") or not path.startswith("/"):
        raise ConfigurationError(
            f"invalid SQLite broker URL {url!r}; expected sqlite:///path/broker.db",
            problems=[("messaging.url", url, "sqlite:///path/broker.db")],
        )
    path = path[1:]
    if not path:
        raise ConfigurationError(
            "the SQLite broker URL names no file; expected sqlite:///path/broker.db",
            problems=[("messaging.url", url, "sqlite:///path/broker.db")],
        )
    return path


class SqliteBroker(Broker):
    """The broker over its own SQLite file (module docstring).

    ``retry`` is the policy of subscriptions that bring none; ``drain_timeout`` how long
    ``close`` lets running handlers finish; ``poll_interval`` how often consumers look for
    work published by other processes (and for lost leases); ``lease`` how long a claimed
    delivery stays invisible without renewal; ``prune_interval`` how often fully delivered
    messages are deleted; ``lag_interval`` how often the lag gauge is refreshed.
    """

    ordered_keys = True

    def __init__(
        self,
        path: str,
        *,
        retry: RetryPolicy | None = None,
        drain_timeout: float = 10.0,
        poll_interval: float = 0.2,
        lease: float = 30.0,
        prune_interval: float = 60.0,
        lag_interval: float = 5.0,
        checkpoint_interval: float = 0.25,
        metrics: MessagingMetrics | None = None,
    ) -> None:
        intervals = (poll_interval, lease, prune_interval, lag_interval, checkpoint_interval)
        if not all(interval > 0 for interval in intervals):
            raise ConfigurationError("SQLite broker intervals and lease must be positive")
        self.store = SqliteStore(path)
        self.retry = retry or RetryPolicy()
        self.drain_timeout = drain_timeout
        self.poll_interval = poll_interval
        self.lease = lease
        self.prune_interval = prune_interval
        self.lag_interval = lag_interval
        self.checkpoint_interval = checkpoint_interval
        self.metrics = metrics or MessagingMetrics.for_registry()
        self._consumers: set[SqliteConsumer] = set()
        self._lag: dict[str, int] = {}
        self._bindings_version: int | None = None
        self._bindings: dict[str, set[str]] = {}
        self._routes: dict[str, tuple[str, frozenset[str]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteBroker:
        return cls(sqlite_path(url), **options)

    def __repr__(self) -> str:
        return f"SqliteBroker({self.store.path!r})"

    async def start(self) -> None:
        if self._tasks:
            return
        await self.store.open()
        await self._refresh_lag()
        self.metrics.attach(self)
        self._tasks = [
            asyncio.create_task(self._maintain_forever(), name="broker upkeep"),
            asyncio.create_task(self._checkpoint_forever(), name="broker checkpoints"),
        ]

    async def close(self) -> None:
        await asyncio.gather(*(consumer.close() for consumer in list(self._consumers)))
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.metrics.detach(self)
        await self.store.close()

    async def ping(self) -> None:
        await self.store.run("SELECT 1")

    # -- publishing and consuming ---------------------------------------------------------

    async def publish(self, message: Message) -> None:
        message, text = encode(message)
        for _ in range(10):
            version, groups_json, groups = await self._route(message.topic)
            row = (message.id, message.topic, message.key, text, time.time(), groups_json, version)
            try:
                await self.store.run(sql.PUBLISH, row)
            except StaleBindings:
                self._bindings_version = None  # another process subscribed meanwhile
                continue
            break
        else:
            raise BackendError(
                "bindings kept changing during a publish", backend=self.store.backend
            )
        self.metrics.published(message.topic)
        for consumer in self._consumers:
            if consumer.group in groups:
                consumer.wake()

    async def _route(self, topic: str) -> tuple[int, str, frozenset[str]]:
        """The bindings version and the groups ``topic`` goes to (as JSON and as a set)."""
        if self._bindings_version is None:
            await self._load_bindings()
        version = self._bindings_version
        assert version is not None
        route = self._routes.get(topic)
        if route is None:
            groups = sorted(
                group
                for group, patterns in self._bindings.items()
                if any(topic_matches(pattern, topic) for pattern in patterns)
            )
            if len(self._routes) >= 10_000:
                self._routes.clear()
            route = self._routes[topic] = (json.dumps(groups), frozenset(groups))
        return version, route[0], route[1]

    async def _load_bindings(self) -> None:
        bindings: dict[str, set[str]] = {}
        version = 0
        for found_version, group, pattern in await self.store.run(sql.BINDINGS):
            if group is None:
                version = int(found_version)
            else:
                bindings.setdefault(group, set()).add(pattern)
        self._bindings, self._routes = bindings, {}
        self._bindings_version = version

    async def subscribe(
        self,
        pattern: str,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
    ) -> SqliteConsumer:
        check_pattern(pattern)
        check_group(group)
        consumer = SqliteConsumer(
            self,
            pattern=pattern,
            group=group,
            handler=handler,
            retry=retry or self.retry,
            concurrency=concurrency,
            drain_timeout=self.drain_timeout,
            metrics=self.metrics,
        )
        await self.store.run(sql.BIND, (group, pattern, time.time()))
        if pattern not in self._bindings.get(group, ()):
            self._bindings_version = None
        self._consumers.add(consumer)
        consumer.start()
        return consumer

    def lag(self) -> dict[str, int]:
        return dict(self._lag)

    def _wake(self, group: str) -> None:
        for consumer in self._consumers:
            if consumer.group == group:
                consumer.wake()

    # -- dead letters ---------------------------------------------------------------------

    async def dead_letters(
        self, topic: str | None = None, group: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        rows = await self.store.run(
            sql.LIST_DEAD, {"topic": topic, "grp": group, "limit": max(0, limit)}
        )
        return [sql.dead_letter(row) for row in rows]

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter:
        rows = await self.store.run(sql.GET_DEAD, (dead_letter_id,))
        if not rows:
            raise NotFoundError(f"no dead letter {dead_letter_id!r}")
        return sql.dead_letter(rows[0])

    async def replay(self, dead_letter_id: str) -> Message:
        group, message = await sql.replay(self.store, dead_letter_id)
        self._wake(group)
        return message

    async def purge(self, topic: str | None = None, group: str | None = None) -> int:
        rows = await self.store.run(sql.PURGE_DEAD, {"topic": topic, "grp": group})
        return len(rows)

    # -- upkeep ---------------------------------------------------------------------------

    async def _maintain_forever(self) -> None:
        pruned = lagged = time.monotonic()
        while True:
            await asyncio.sleep(min(self.lag_interval, self.prune_interval))
            now = time.monotonic()
            try:
                if now - lagged >= self.lag_interval:
                    lagged = now
                    await self._refresh_lag()
                if now - pruned >= self.prune_interval:
                    pruned = now
                    await self.store.run(sql.PRUNE)
            except Exception as exc:
                _log.warning("broker upkeep failed", error=str(exc), backend=self.store.backend)

    async def _checkpoint_forever(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            try:
                await self.store.checkpoint()
            except Exception as exc:
                _log.warning("broker checkpoint failed", error=str(exc), backend=self.store.backend)

    async def _refresh_lag(self) -> None:
        rows = await self.store.run(sql.LAG)
        self._lag = {str(group): int(count) for group, count in rows}
