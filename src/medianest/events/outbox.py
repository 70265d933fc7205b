"""The transactional outbox: every appended event reaches the broker, in order, at least once.

**The event log is the outbox.** A classic outbox writes the business change and an
"outbox" row in one database transaction, and a relay later publishes the outbox rows. With
event sourcing the business change *is* the append of its events, and the event log is
already a durable list of everything to publish, in one gap-free order (positions are
handed out in commit order, :mod:`medianest.events.base`). So appending the events and
enqueueing their publication are one and the same write, committed by the append's own
transaction: an event cannot commit without being queued, nor be queued without committing.
No second table, no second write that could be forgotten.

**The relay** (:class:`OutboxRelay`) keeps a single number, its checkpoint: the position of
the last event the broker confirmed (an ``event_checkpoints`` row named ``outbox:<name>``).
It reads the log after the checkpoint with ``read_all``, publishes each event as a
:class:`~medianest.messaging.Message` (:func:`message_for`) one at a time in position order,
retrying a failing broker with backoff (event N+1 is never published before N was
confirmed), and saves the checkpoint after each batch. After a crash -- or a broker outage
longer than the retries -- it starts again from the saved checkpoint: events published but
not yet checkpointed are **published again** (at-least-once: duplicates, never a loss).
Every message carries the event's id as its message id, so consumers drop duplicates
(:class:`~medianest.messaging.idempotency.IdempotentConsumer`).

**One relay at a time.** Every ``workers`` instance may run a relay; they share the lease
``outbox:<name>`` (:mod:`medianest.events.leases`), only its holder publishes, and another
takes over when it stops renewing. A holder that stalls past its lease can overlap with its
successor for a moment; that, too, only produces duplicates.

The relay waits for new events with a subscription (woken by appends in this process,
``LISTEN/NOTIFY`` or polling, see :mod:`medianest.events.subscription`), not by polling
the log itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from medianest.errors import BackendError, ConcurrencyError, MediaNestError
from medianest.events.base import EventStore
from medianest.events.downloads import TOPICS as DOWNLOAD_TOPICS
from medianest.events.leases import Leases, default_owner, leases_for
from medianest.events.model import EventFilter, RecordedEvent
from medianest.events.requests import TOPICS as REQUEST_TOPICS
from medianest.messaging.base import Broker, Message
from medianest.observability.logging import get_logger
from medianest.resilience.retry import Retry

_log = get_logger("medianest.events.outbox")

TOPICS: Mapping[str, str] = {**REQUEST_TOPICS, **DOWNLOAD_TOPICS}
"""Topics of the event types whose topic is not derived by the default rule."""

_NOT_A_WORD = re.compile(r"[^a-z0-9_-]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _word(text: str) -> str:
    return _NOT_A_WORD.sub("_", text.lower()).strip("_") or "event"


def default_topic(event: RecordedEvent) -> str:
    """The broker topic of ``event``: from :data:`TOPICS` (``RequestApproved`` →
    ``requests.approved``), else ``<stream category>.<type in snake case>`` (stream
    ``saga-7``, type ``StepCompleted`` → ``saga.step_completed``)."""
    known = TOPICS.get(event.type)
    if known is not None:
        return known
    category = event.stream_id.split("-", 1)[0]
    return f"{_word(category)}.{_word(_CAMEL.sub('_', event.type))}"


def message_for(event: RecordedEvent, topic: str) -> Message:
    """The broker message of ``event``: same id (consumers dedupe on it), the versioned
    event as payload, correlation / causation / ``traceparent`` from its metadata, and the
    stream id as ordering key (one aggregate's events stay in order)."""
    meta = event.metadata
    headers = {str(k): str(v) for k, v in meta.extra.items()}
    headers["event-type"] = event.type
    if meta.traceparent:
        headers["traceparent"] = meta.traceparent
    if meta.user:
        headers["user"] = meta.user
    payload = {
        "id": str(event.id),
        "type": event.type,
        "version": event.schema_version,
        "time": event.recorded_at.isoformat().replace("+00:00", "Z"),
        "stream_id": event.stream_id,
        "stream_version": event.version,
        "position": event.position,
        "data": event.data,
    }
    return Message(
        topic=topic,
        payload=payload,
        id=str(event.id),
        timestamp=event.recorded_at,
        correlation_id=meta.correlation_id or str(event.id),
        causation_id=meta.causation_id,
        headers=headers,
        key=event.stream_id,
    )


def _broker_failure(exc: BaseException) -> bool:
    return isinstance(exc, BackendError | OSError | TimeoutError)


def default_retry() -> Retry:
    """Publish retries: 6 attempts, 0.05 s doubling to at most 5 s, on broker failures."""
    return Retry(6, base_delay=0.05, max_delay=5.0, retry_on=_broker_failure, name="outbox")


class OutboxRelay:
    """Publishes the event log to a broker (module docstring).

    ``name`` names the checkpoint and the lease (one relay per name runs at a time);
    ``owner`` names this instance in the lease (unique per process by default). ``filter``
    limits what is published (everything by default), ``topic_for`` chooses topics.
    ``poll_interval`` overrides the store's for the wait for new events; ``idle_interval``
    is how long :meth:`run` waits for lease or events before looking again.
    """

    def __init__(
        self,
        store: EventStore,
        broker: Broker,
        *,
        name: str = "outbox",
        owner: str | None = None,
        leases: Leases | None = None,
        lease_ttl: float = 30.0,
        batch_size: int = 100,
        retry: Retry | None = None,
        topic_for: Callable[[RecordedEvent], str] = default_topic,
        filter: EventFilter | None = None,
        poll_interval: float | None = None,
        idle_interval: float | None = None,
    ) -> None:
        if batch_size < 1 or not lease_ttl > 0:
            raise ValueError("batch_size must be >= 1 and lease_ttl > 0")
        self.store = store
        self.broker = broker
        self.name = f"outbox:{name}"
        self.owner = owner or default_owner()
        self.leases = leases or leases_for(store)
        self.lease_ttl = lease_ttl
        self.batch_size = batch_size
        self.retry = retry or default_retry()
        self.topic_for = topic_for
        self.filter = filter or EventFilter()
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval if idle_interval is not None else lease_ttl / 3
        self.position = 0
        """The last position this relay saw confirmed (its checkpoint as last saved)."""
        self.published = 0
        """Messages this relay object published (duplicates after a take-over included)."""
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def __repr__(self) -> str:
        return f"OutboxRelay({self.name!r}, owner={self.owner!r}, position={self.position})"

    async def publish_pending(self) -> int | None:
        """Publish every event after the checkpoint, up to the head as of the last read.

        Returns how many were published, or None when another instance holds the lease.
        Raises after the retries when the broker keeps failing (the checkpoint then covers
        what was confirmed), and :class:`~medianest.errors.ConcurrencyError` when the lease
        was lost midway.
        """
        if not await self.leases.acquire(self.name, self.owner, self.lease_ttl):
            return None
        position = self.position = await self.store.load_checkpoint(self.name)
        count = 0
        while True:
            head = None if self.filter.everything else await self.store.head_position()
            batch = await self.store.read_all(position, limit=self.batch_size, filter=self.filter)
            confirmed = position
            try:
                for event in batch:
                    if self._stopping.is_set():
                        break
                    await self._publish(event)
                    confirmed = event.position
                    count += 1
            except BaseException:
                if confirmed > position:
                    with contextlib.suppress(MediaNestError):
                        await self._save(confirmed)
                raise
            if confirmed > position:
                await self._save(confirmed)
            position = confirmed
            if self._stopping.is_set():
                return count
            if len(batch) < self.batch_size:
                if head is not None and head > position:
                    await self._save(head)
                return count

    async def _publish(self, event: RecordedEvent) -> None:
        """Publish one event, retrying broker failures; the lease is renewed before each
        retry, so a long outage does not hand the relay to another instance meanwhile."""
        message = message_for(event, self.topic_for(event))
        self.retry.deposit()
        failures = 0
        while True:
            try:
                await self.broker.publish(message)
            except Exception as exc:
                failures += 1
                wait = self.retry.next_delay(exc, failures, idempotent=True)
                if wait is None:
                    raise
                if failures == 1:
                    _log.warning(
                        "outbox publish failed; retrying",
                        relay=self.name,
                        position=event.position,
                        error=str(exc),
                    )
                await self.retry.clock.sleep(wait)
                await self._hold_lease()
                continue
            self.published += 1
            return

    async def _hold_lease(self) -> None:
        if not await self.leases.renew(self.name, self.owner, self.lease_ttl):
            raise ConcurrencyError(f"{self.name}: lease lost to another instance")

    async def _save(self, position: int) -> None:
        """Save the checkpoint, if this relay still holds the lease (a relay that lost it
        must not move the successor's checkpoint back: that would only cause duplicates,
        but needless ones)."""
        await self._hold_lease()
        await self.store.save_checkpoint(self.name, position)
        self.position = position

    async def run(self) -> None:
        """Publish until :meth:`close`: take the lease (or wait for it), publish what is
        pending, wait for new events, repeat. Failures are logged and retried after
        ``idle_interval``; also ends when the store closes."""
        while not self._stopping.is_set():
            try:
                count = await self.publish_pending()
            except Exception as exc:
                _log.warning(
                    "outbox relay paused", relay=self.name, error=f"{type(exc).__name__}: {exc}"
                )
                count = None
            if not await self._idle(watch=count is not None):
                return

    async def _idle(self, *, watch: bool) -> bool:
        """Wait ``idle_interval`` seconds, or less: until :meth:`close`, or (``watch``)
        until an event after :attr:`position` exists. False: stop (closing, store closed).

        The lease is renewed by the next :meth:`publish_pending`, well within its ttl."""
        waits: set[asyncio.Task[Any]] = {asyncio.ensure_future(self._stopping.wait())}
        subscription = None
        if watch:
            subscription = self.store.subscribe(
                self.position, self.filter, batch_size=1, poll_interval=self.poll_interval
            )
            waits.add(asyncio.ensure_future(anext(subscription)))
        try:
            done, _ = await asyncio.wait(
                waits, timeout=self.idle_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            if subscription is not None:
                await subscription.aclose()
        for task in done:
            if task.cancelled():
                continue
            if isinstance(task.exception(), StopAsyncIteration):
                return False
        return not self._stopping.is_set()

    async def start(self) -> None:
        """Run :meth:`run` in a background task."""
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name=f"medianest-{self.name}")

    async def close(self, drain_timeout: float = 10.0) -> None:
        """Stop the background task -- after the event being published and the checkpoint
        of what was published, or after ``drain_timeout`` seconds at most -- and give up the
        lease, so that another instance takes over at once rather than after ``lease_ttl``."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, drain_timeout)
        with contextlib.suppress(MediaNestError):
            await self.leases.release(self.name, self.owner)
