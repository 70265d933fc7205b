"""In-process broker (``memory://``): for tests and single-process tools, nothing survives it.

Each consumer group is an ordered dict of pending deliveries (publication order). A publish
adds one entry to every group that has a pattern matching the topic, then wakes the group's
consumers. A consumer claims the oldest visible entries of its group; an entry stays in its
group until acked or dead-lettered, so a retried or released one keeps its place. Delayed
redelivery is a ``visible_at`` time on the event loop's clock: consumers that find nothing
ready sleep until the earliest one is due (or until woken), never in a loop.

**Ordering**: per key, fully. An entry whose key has an earlier entry still in the group (in
flight or waiting for its retry) is skipped, so a group's handlers see a key's messages one
at a time and in publication order.

Payloads go through JSON on publish and are decoded per delivery, exactly as on the other
backends: a payload JSON cannot carry is refused, and each handler gets its own copy.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

from medianest.errors import BackendError, NotFoundError
from medianest.messaging.base import (
    Broker,
    DeadLetter,
    Handler,
    Message,
    RetryPolicy,
    check_group,
    check_pattern,
    topic_matches,
    uuid7,
)
from medianest.messaging.consumer import Consumer, Delivery
from medianest.messaging.metrics import MessagingMetrics
from medianest.messaging.wire import decode, encode

_IDLE = 3600.0


class _Entry:
    __slots__ = ("attempt", "in_flight", "key", "last_error", "seq", "text", "topic", "visible_at")

    def __init__(self, seq: int, topic: str, key: str | None, text: str, attempt: int = 0) -> None:
        self.seq = seq
        self.topic = topic
        self.key = key
        self.text = text
        self.attempt = attempt
        self.visible_at = 0.0
        self.in_flight = False
        self.last_error: str | None = None


class _Group:
    """A consumer group: its patterns, its pending entries, its live consumers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.patterns: set[str] = set()
        self.entries: dict[int, _Entry] = {}
        self.consumers: set[MemoryConsumer] = set()

    def wake(self) -> None:
        for consumer in self.consumers:
            consumer.wake()

    def claim(self, limit: int, now: float) -> tuple[list[_Entry], float]:
        """The oldest claimable entries and the earliest due time of a delayed one."""
        blocked: set[str] = set()
        taken: list[_Entry] = []
        due = math.inf
        for entry in self.entries.values():
            key = entry.key
            if key is not None and key in blocked:
                continue
            if entry.in_flight or entry.visible_at > now:
                if not entry.in_flight:
                    due = min(due, entry.visible_at)
                if key is not None:
                    blocked.add(key)
                continue
            entry.in_flight = True
            entry.attempt += 1
            taken.append(entry)
            if key is not None:
                blocked.add(key)
            if len(taken) >= limit:
                break
        return taken, due


class MemoryConsumer(Consumer):
    """A subscription of :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, group: _Group, **options: Any) -> None:
        super().__init__(group=group.name, **options)
        self._broker = broker
        self._group = group
        self._due = math.inf

    async def _claim(self, limit: int) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        entries, self._due = self._group.claim(limit, loop.time())
        return [
            Delivery(decode(entry.text, entry.attempt), entry, entry.last_error)
            for entry in entries
        ]

    def _idle_timeout(self) -> float:
        if self._due == math.inf:
            return _IDLE
        return max(0.0, self._due - asyncio.get_running_loop().time())

    async def _ack(self, delivery: Delivery) -> None:
        self._remove(delivery.handle)

    async def _retry(self, delivery: Delivery, delay: float, error: str) -> None:
        entry: _Entry = delivery.handle
        entry.in_flight = False
        entry.last_error = error
        entry.visible_at = asyncio.get_running_loop().time() + delay
        self._group.wake()

    async def _release(self, delivery: Delivery) -> None:
        entry: _Entry = delivery.handle
        entry.in_flight = False
        entry.visible_at = 0.0
        self._group.wake()

    async def _dead_letter(self, delivery: Delivery, error: str) -> None:
        self._remove(delivery.handle)
        letter = DeadLetter(
            id=uuid7(),
            message=delivery.message,
            group=self.group,
            error=error,
            attempts=delivery.message.attempt,
            failed_at=datetime.now(UTC),
        )
        self._broker._dead[letter.id] = letter

    async def _stopped(self) -> None:
        self._group.consumers.discard(self)

    def _remove(self, entry: _Entry) -> None:
        self._group.entries.pop(entry.seq, None)
        if entry.key is not None:
            self._group.wake()


class MemoryBroker(Broker):
    """Groups, deliveries and dead letters in dicts (module docstring).

    ``retry`` is the policy of subscriptions that bring none; ``drain_timeout`` how long
    ``close`` lets running handlers finish.
    """

    ordered_keys = True

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        drain_timeout: float = 10.0,
        metrics: MessagingMetrics | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.drain_timeout = drain_timeout
        self.metrics = metrics or MessagingMetrics.for_registry()
        self._groups: dict[str, _Group] = {}
        self._dead: dict[str, DeadLetter] = {}
        self._seq = 0
        self._closed = False
        self.metrics.attach(self)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBroker:
        return cls(**options)

    def __repr__(self) -> str:
        return f"MemoryBroker({len(self._groups)} groups)"

    async def close(self) -> None:
        self._closed = True
        consumers = [c for group in self._groups.values() for c in group.consumers]
        await asyncio.gather(*(consumer.close() for consumer in consumers))
        self.metrics.detach(self)

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the memory broker is closed", backend="memory://")

    # -- publishing and consuming ---------------------------------------------------------

    async def publish(self, message: Message) -> None:
        self._check_open()
        message, text = encode(message)
        for group in self._groups.values():
            if any(topic_matches(pattern, message.topic) for pattern in group.patterns):
                self._enqueue(group, message, text)
        self.metrics.published(message.topic)

    def _enqueue(self, group: _Group, message: Message, text: str) -> None:
        self._seq += 1
        group.entries[self._seq] = _Entry(self._seq, message.topic, message.key, text)
        group.wake()

    async def subscribe(
        self,
        pattern: str,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
    ) -> MemoryConsumer:
        self._check_open()
        check_pattern(pattern)
        check_group(group)
        state = self._groups.get(group)
        if state is None:
            state = self._groups[group] = _Group(group)
        consumer = MemoryConsumer(
            self,
            state,
            pattern=pattern,
            handler=handler,
            retry=retry or self.retry,
            concurrency=concurrency,
            drain_timeout=self.drain_timeout,
            metrics=self.metrics,
        )
        state.patterns.add(pattern)
        state.consumers.add(consumer)
        consumer.start()
        return consumer

    def lag(self) -> dict[str, int]:
        return {name: len(group.entries) for name, group in self._groups.items()}

    # -- dead letters ---------------------------------------------------------------------

    async def dead_letters(
        self, topic: str | None = None, group: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        found = [
            letter
            for letter in self._dead.values()
            if (topic is None or letter.message.topic == topic)
            and (group is None or letter.group == group)
        ]
        return found[: max(0, limit)]

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter:
        letter = self._dead.get(dead_letter_id)
        if letter is None:
            raise NotFoundError(f"no dead letter {dead_letter_id!r}")
        return letter

    async def replay(self, dead_letter_id: str) -> Message:
        self._check_open()
        letter = await self.dead_letter(dead_letter_id)
        message, text = encode(letter.message)
        group = self._groups.get(letter.group)
        if group is None:
            group = self._groups[letter.group] = _Group(letter.group)
        del self._dead[dead_letter_id]
        self._enqueue(group, message, text)
        return message

    async def purge(self, topic: str | None = None, group: str | None = None) -> int:
        doomed = [letter.id for letter in await self.dead_letters(topic, group, len(self._dead))]
        for letter_id in doomed:
            del self._dead[letter_id]
        return len(doomed)
