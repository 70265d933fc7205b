"""Catch-up-then-live subscriptions, the same on every backend.

A subscription never receives events pushed at it. It **pulls** with
:meth:`~medianest.events.base.EventStore.read_all` from the position of the last event it
handed out, in batches, and when a read comes back empty it waits for a wake-up: an
:class:`AppendSignal` fired by this process's appends, by the backend's cross-process channel
(PostgreSQL ``LISTEN/NOTIFY``) or, at the latest, after ``poll_interval`` seconds (other
SQLite processes). Because the wake-up only says "read again" and positions are gap-free and
commit-ordered, a lost or duplicated notification can delay an event but never lose, repeat
or reorder one.

With a filter, the subscription also remembers how far it has *scanned*: when a read returns
less than a batch, every event up to the head position taken just before that read has been
looked at (all of them were committed, positions being commit-ordered), so the next read
starts there instead of re-scanning the events that did not match.

A failing read (:class:`~medianest.errors.BackendError`: the database restarts, the network
drops) is retried with exponential backoff from the same position, logged once per outage;
the consumer sees a pause, not an error. Any other error (an upcaster that fails) reaches
the consumer, which resubscribes from its checkpoint once fixed. The iterator ends when it is
closed or its store is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from medianest.errors import BackendError
from medianest.events.model import EventFilter, RecordedEvent
from medianest.observability.logging import get_logger

if TYPE_CHECKING:
    from medianest.events.base import EventStore

_log = get_logger("medianest.events")


class AppendSignal:
    """Wakes the subscriptions of one store object when events may have been appended.

    Take :meth:`token` *before* reading, then :meth:`wait` on it: an append that commits after
    the read has fired it, so no wake-up falls between reading and waiting.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def token(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        """Wake every waiter (a new token is handed out for the next wait)."""
        fired, self._event = self._event, asyncio.Event()
        fired.set()

    def reopen(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.notify()

    @staticmethod
    async def wait(token: asyncio.Event, seconds: float | None) -> None:
        """Until ``token`` fires or ``seconds`` pass (forever when None)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await token.wait()


class EventSubscription:
    """An async iterator of :class:`RecordedEvent` after ``from_position``, catch-up then live.

    ``position`` is the position of the last event handed out (what a subscriber stores as
    its checkpoint *after* handling the event); ``live`` turns True once the subscription has
    caught up with the head of the store.
    """

    def __init__(
        self,
        store: EventStore,
        signal: AppendSignal,
        from_position: int,
        event_filter: EventFilter,
        *,
        batch_size: int,
        poll_interval: float | None,
        retry_delay: float = 0.05,
        max_retry_delay: float = 5.0,
    ) -> None:
        self._store = store
        self._signal = signal
        self.position = from_position
        self._scanned = from_position
        self.filter = event_filter
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.live = False
        self._closed = False
        self._buffer: deque[RecordedEvent] = deque()

    def __repr__(self) -> str:
        state = "live" if self.live else "catching up"
        return f"EventSubscription(position={self.position}, {state})"

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> RecordedEvent:
        delay = self.retry_delay
        failing = False
        while True:
            if self._closed or self._signal.closed:
                raise StopAsyncIteration
            if self._buffer:
                event = self._buffer.popleft()
                self.position = event.position
                return event
            token = self._signal.token()
            try:
                found = await self._read()
            except BackendError as exc:
                if self._closed or self._signal.closed:
                    raise StopAsyncIteration from None
                if not failing:
                    _log.warning("event subscription read failed; retrying", error=str(exc))
                failing = True
                await self._signal.wait(token, delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            if failing:
                _log.info("event subscription read recovered", position=self._scanned)
                failing, delay = False, self.retry_delay
            if not found:
                await self._signal.wait(token, self.poll_interval)

    async def _read(self) -> bool:
        """Fill the buffer with the next batch; False when there was nothing new."""
        head = None if self.filter.everything else await self._store.head_position()
        batch = await self._store.read_all(self._scanned, limit=self.batch_size, filter=self.filter)
        if batch:
            self._buffer.extend(batch)
            self._scanned = batch[-1].position
        if len(batch) < self.batch_size:
            self.live = True
            if head is not None:
                self._scanned = max(self._scanned, head)
        return bool(batch)

    async def aclose(self) -> None:
        """Stop; a consumer waiting in ``anext`` gets ``StopAsyncIteration``."""
        self._closed = True
        self._signal.notify()
