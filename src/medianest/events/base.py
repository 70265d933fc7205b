"""The event store: the contract every backend keeps.

An event store keeps **streams** (one per aggregate: ``request-42``, ``download-7``) of
immutable events, and one store-wide **log** of every event by ``position``. The values
(:class:`NewEvent`, :class:`RecordedEvent`, :class:`EventMetadata`, versions, filters,
snapshots) live in :mod:`medianest.events.model`; the numbering is explained there: versions
1, 2, 3... per stream (0 = no stream), positions 1, 2, 3... store-wide (0 = before the first).

Contract (checked on every backend by ``tests/contracts/test_event_store.py``):

* ``append(stream_id, events, expected_version)`` writes all the events or none, at the next
  versions of the stream, if the stream's version fits ``expected_version`` (an exact
  version, ``ANY``, ``NO_STREAM`` or ``STREAM_EXISTS``), else raises
  :class:`~medianest.errors.WrongExpectedVersion` whose ``actual`` is the stream's version
  (0 when it does not exist). Two appends racing on one stream with the same expected
  version: exactly one wins.
* Appends are **idempotent on event ids**: appending again events that are already stored
  (same ids, same stream, same consecutive versions, same type / schema version / data)
  returns the original :class:`AppendResult` and writes nothing, so a caller that lost the
  answer (timeout, crash) may simply retry. An id stored for another event, or a batch only
  partly stored, is a :class:`~medianest.errors.ValidationError` (ids are the writer's
  uuid4s; reusing one is a bug, not a race). See :func:`medianest.events.appending.replayed`.
* Positions are **gap-free and in commit order**: a reader that has seen position ``N``
  never later finds a newly committed event below ``N``, and every position below the head
  belongs to a committed event. Readers can therefore checkpoint a single number.
* ``read_stream`` returns a stream's events by version, forwards from ``from_version``
  (inclusive; None = the first) or backwards from it (None = the last), at most ``limit``;
  an unknown stream reads as empty. ``read_all`` returns events with a position strictly
  greater than ``from_position`` (a checkpoint: the last position already seen), ascending,
  at most ``limit`` *matching* events.
* ``subscribe`` is ``read_all`` that never ends: catch-up from the checkpoint, then live,
  filtered, resilient to backend failures (see :mod:`medianest.events.subscription`).
* Subscribers store their own checkpoints: ``save_checkpoint`` / ``load_checkpoint`` are a
  convenience table; SQL read models write theirs in their own transaction instead
  (:func:`medianest.events.backends.sql_store.save_checkpoint` takes a connection).
* Snapshots: ``save_snapshot`` keeps the newest snapshot of a stream (an older version than
  the stored one is ignored); ``load_snapshot`` returns it, or None, or None when a
  ``schema_version`` is asked for and the stored one differs (a stale shape is no snapshot).
* Reads apply the store's :class:`~medianest.events.upcasting.Upcasters`; filters match the
  stored type.
* Driver failures become :class:`~medianest.errors.BackendError` /
  :class:`~medianest.errors.BackendUnavailable`, translated in one place per backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from medianest.backends import BackendBase, BackendEntry, BackendTable
from medianest.errors import ValidationError
from medianest.events.model import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EventFilter,
    EventMetadata,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamState,
    check_name,
    json_object,
)
from medianest.events.subscription import AppendSignal, EventSubscription
from medianest.events.upcasting import Upcast, Upcasters


def check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValidationError(f"limit must be an int >= 0, not {limit!r}", errors={"limit": "bad"})
    return limit


def check_position(name: str, value: int | None, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be an int >= 0, not {value!r}", errors={name: "bad"})
    return value


class EventStore(BackendBase, ABC):
    """The contract (module docstring); backends live in ``events/backends``.

    ``upcasters`` are applied to every event read; ``poll_interval`` bounds how long a live
    subscription may miss an append made elsewhere (None: this backend is always told).
    """

    poll_interval: float | None = None

    def __init__(self, *, upcasters: Upcasters | None = None) -> None:
        self.upcasters = upcasters or Upcasters()
        self._signal = AppendSignal()

    @abstractmethod
    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` atomically if its version fits (module doc)."""

    @abstractmethod
    async def read_stream(
        self,
        stream_id: str,
        from_version: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        """Events of ``stream_id`` from ``from_version`` (inclusive), ascending or not."""

    @abstractmethod
    async def read_all(
        self,
        from_position: int = 0,
        limit: int | None = None,
        filter: EventFilter | None = None,
    ) -> list[RecordedEvent]:
        """Events after position ``from_position`` matching ``filter``, by position."""

    @abstractmethod
    async def head_position(self) -> int:
        """Position of the last committed event (0 when the store is empty)."""

    @abstractmethod
    async def stream_version(self, stream_id: str) -> int:
        """Current version of ``stream_id`` (0 when it does not exist)."""

    @abstractmethod
    async def save_snapshot(
        self, stream_id: str, version: int, schema_version: int, state: dict[str, object]
    ) -> None:
        """Keep ``state`` as the snapshot of ``stream_id`` at ``version`` (newest wins)."""

    @abstractmethod
    async def load_snapshot(
        self, stream_id: str, schema_version: int | None = None
    ) -> Snapshot | None:
        """The newest snapshot of ``stream_id``; None when absent or of another schema."""

    @abstractmethod
    async def save_checkpoint(self, name: str, position: int) -> None:
        """Remember that subscriber ``name`` has handled everything up to ``position``."""

    @abstractmethod
    async def load_checkpoint(self, name: str) -> int:
        """Where subscriber ``name`` stopped (0 when it never saved a checkpoint)."""

    def subscribe(
        self,
        from_position: int = 0,
        filter: EventFilter | None = None,
        *,
        batch_size: int = 256,
        poll_interval: float | None = None,
    ) -> EventSubscription:
        """Events after ``from_position`` (a checkpoint), catch-up then live, until closed.

        The subscription is taken at once; ``poll_interval`` overrides the backend's.
        """
        check_position("from_position", from_position)
        if batch_size < 1:
            raise ValidationError("batch_size must be >= 1", errors={"batch_size": "bad"})
        self._check_open()
        return EventSubscription(
            self,
            self._signal,
            from_position,
            filter or EventFilter(),
            batch_size=batch_size,
            poll_interval=poll_interval if poll_interval is not None else self.poll_interval,
        )

    def _check_open(self) -> None:
        """Raise :class:`~medianest.errors.BackendError` when the store cannot be read."""
        return None

    async def ping(self) -> None:
        return None

    def _check_snapshot(
        self, stream_id: str, version: int, schema_version: int, state: object
    ) -> dict[str, object]:
        check_name("stream_id", stream_id)
        check_position("version", version)
        check_position("schema_version", schema_version)
        return json_object("state", state)


STORES: BackendTable[EventStore] = BackendTable(
    "events",
    {
        "memory": "medianest.events.backends.memory:MemoryEventStore",
        "sqlite": "medianest.events.backends.sql:SqlEventStore",
        "sqlite+aiosqlite": "medianest.events.backends.sql:SqlEventStore",
        "postgresql": BackendEntry("medianest.events.backends.sql:SqlEventStore", "postgres"),
        "postgresql+asyncpg": BackendEntry(
            "medianest.events.backends.sql:SqlEventStore", "postgres"
        ),
        "postgres": BackendEntry("medianest.events.backends.sql:SqlEventStore", "postgres"),
    },
)

__all__ = [
    "ANY",
    "NO_STREAM",
    "STORES",
    "STREAM_EXISTS",
    "AppendResult",
    "EventFilter",
    "EventMetadata",
    "EventStore",
    "EventSubscription",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
    "StreamState",
    "Upcast",
    "Upcasters",
]
