"""Event-sourced aggregates: state folded from a stream, changed only by recording events.

An :class:`Aggregate` is one consistency boundary (a media request, a download) kept as the
stream ``<category>-<id>``. Its state is never stored directly: it is what you get by applying
its events in order (:meth:`Aggregate.when`). A command method checks the current state,
then :meth:`~Aggregate.record`\\ s one or more events, which change the state at once and wait
in :attr:`~Aggregate.pending` until the :class:`Repository` appends them.

**Optimistic concurrency.** :attr:`Aggregate.version` is the stream version the state was
built from; :meth:`Repository.save` appends the pending events with that version as
``expected_version``, so a writer that decided on stale state gets
:class:`~medianest.errors.WrongExpectedVersion` instead of overwriting a decision taken
meanwhile. :meth:`Repository.update` reloads and re-runs the command in that case, so the
command is checked again against the state that won.

**Snapshots.** With ``snapshot_every=N`` the repository stores the aggregate's
:meth:`~Aggregate.to_snapshot` each time a save crosses a multiple of ``N`` events, and
:meth:`Repository.load` starts from the newest snapshot of the aggregate's
:attr:`~Aggregate.snapshot_schema` and replays only the events after it. A snapshot is an
optimisation only: the state is the same with or without it (the tests check), and a
snapshot of another schema version is ignored.

``when`` must accept every event ever stored for the type (old shapes reach it upcast by the
store's :class:`~medianest.events.upcasting.Upcasters`) and never raise for them: validation
belongs in the commands, before the event exists.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from medianest.errors import BackendError, NotFoundError, ValidationError, WrongExpectedVersion
from medianest.events.base import EventStore
from medianest.events.model import (
    NO_STREAM,
    AppendResult,
    EventMetadata,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    json_object,
    snapshot_due,
)
from medianest.observability.logging import get_logger

_log = get_logger("medianest.events")

_PAGE = 500
"""Events read per round trip when an aggregate is loaded."""


def transition_error(
    kind: str,
    aggregate_id: str,
    command: str,
    state: str | None,
    allowed: Iterable[str | None],
) -> ValidationError:
    """The error of a command that the aggregate's current state does not allow.

    The message names the aggregate, the command, the current state and the states from
    which the command would be accepted, e.g. ``cannot approve media request 42: it is
    declined (approve needs: submitted)``. ``None`` stands for "does not exist yet" ("new").
    """
    current = state or "new"
    shown = "it does not exist yet" if state is None else f"it is {state}"
    needs = ", ".join("new" if s is None else s for s in allowed) or "nothing"
    return ValidationError(
        f"cannot {command} {kind} {aggregate_id}: {shown} ({command} needs: {needs})",
        errors={"state": f"{command} is not allowed when {current}"},
        command=command,
        state=current,
        aggregate=kind,
        aggregate_id=aggregate_id,
    )


class Aggregate(ABC):
    """Base of an event-sourced aggregate (module docstring).

    Subclasses set ``category`` (the stream prefix), ``kind`` (the words used in error
    messages), ``event_schemas`` (the current schema version of each event type they record,
    1 when absent) and ``snapshot_schema`` (bump it when :meth:`to_snapshot` changes shape).
    """

    category: ClassVar[str]
    kind: ClassVar[str]
    event_schemas: ClassVar[Mapping[str, int]] = {}
    snapshot_schema: ClassVar[int] = 1

    def __init__(self, aggregate_id: str) -> None:
        if not isinstance(aggregate_id, str) or not aggregate_id:
            raise ValidationError("an aggregate id is a non-empty string", errors={"id": "empty"})
        self.id = aggregate_id
        self.version = 0
        self._pending: list[NewEvent] = []

    @classmethod
    def stream_for(cls, aggregate_id: str) -> str:
        return f"{cls.category}-{aggregate_id}"

    @property
    def stream_id(self) -> str:
        return self.stream_for(self.id)

    @property
    def pending(self) -> tuple[NewEvent, ...]:
        """Events recorded since the last load or save, oldest first."""
        return tuple(self._pending)

    @property
    def expected_version(self) -> ExpectedVersion:
        """What the next append expects: the loaded version, or no stream at all."""
        return self.version if self.version else NO_STREAM

    @abstractmethod
    def when(self, event_type: str, data: Mapping[str, Any]) -> None:
        """Apply one event (recorded now or replayed) to the state; never raises for a
        stored event. Unknown types are ignored (a newer writer may add some)."""

    @abstractmethod
    def to_snapshot(self) -> dict[str, Any]:
        """The state as a JSON object, in the shape :attr:`snapshot_schema`."""

    @abstractmethod
    def restore(self, state: Mapping[str, Any]) -> None:
        """Set the state from :meth:`to_snapshot`'s output (same ``snapshot_schema``)."""

    def record(self, event_type: str, data: Mapping[str, Any]) -> None:
        """Record a new event: apply it now, append it at the next save."""
        copied = json_object("data", data)
        event = NewEvent(
            type=event_type, data=copied, schema_version=self.event_schemas.get(event_type, 1)
        )
        self.when(event_type, copied)
        self._pending.append(event)

    def replay(self, events: Iterable[RecordedEvent]) -> None:
        """Apply stored events, which must follow :attr:`version` without a gap."""
        for event in events:
            if event.version != self.version + 1:
                raise BackendError(
                    f"stream {self.stream_id!r} jumps from version {self.version} to "
                    f"{event.version}: the store returned a gap"
                )
            self.when(event.type, event.data)
            self.version = event.version

    def require(self, command: str, state: str | None, allowed: Sequence[str | None]) -> None:
        """Raise the error of :func:`transition_error` unless ``state`` is in ``allowed``
        (``None`` in ``allowed``: the command creates the aggregate)."""
        if state not in allowed:
            raise transition_error(self.kind, self.id, command, state, allowed)

    def _saved(self, result: AppendResult) -> None:
        self.version = result.next_version
        self._pending.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, version={self.version})"


A = TypeVar("A", bound=Aggregate)


class Repository(Generic[A]):
    """Loads and saves aggregates of one class in an event store (module docstring)."""

    def __init__(self, store: EventStore, aggregate: type[A], *, snapshot_every: int = 0) -> None:
        if snapshot_every < 0:
            raise ValidationError("snapshot_every must be >= 0", errors={"snapshot_every": "bad"})
        self.store = store
        self.aggregate = aggregate
        self.snapshot_every = snapshot_every

    async def find(self, aggregate_id: str, *, use_snapshot: bool = True) -> A | None:
        """The aggregate at its current version, or None when its stream is empty."""
        item = self.aggregate(aggregate_id)
        stream_id = item.stream_id
        if use_snapshot and self.snapshot_every:
            snapshot = await self.store.load_snapshot(stream_id, item.snapshot_schema)
            if snapshot is not None:
                item.restore(snapshot.state)
                item.version = snapshot.version
        while True:
            page = await self.store.read_stream(stream_id, item.version + 1, limit=_PAGE)
            item.replay(page)
            if len(page) < _PAGE:
                break
        return item if item.version else None

    async def load(self, aggregate_id: str, *, use_snapshot: bool = True) -> A:
        """The aggregate at its current version; :class:`NotFoundError` when it has no
        events."""
        found = await self.find(aggregate_id, use_snapshot=use_snapshot)
        if found is None:
            raise NotFoundError(
                f"no {self.aggregate.kind} {aggregate_id}",
                aggregate=self.aggregate.kind,
                aggregate_id=aggregate_id,
            )
        return found

    async def save(self, item: A, *, metadata: EventMetadata | None = None) -> AppendResult | None:
        """Append the pending events with the loaded version as the expected version.

        Every event gets ``metadata`` (correlation, causation, trace, user). Returns None
        when nothing was pending. :class:`~medianest.errors.WrongExpectedVersion` when the
        stream moved since the aggregate was loaded; the pending events are kept, so after
        a :class:`~medianest.errors.BackendError` the same save may simply be retried (the
        store recognises the event ids and does not append them twice).
        """
        if not item.pending:
            return None
        events = list(item.pending)
        if metadata is not None:
            events = [dataclasses.replace(event, metadata=metadata) for event in events]
        before = item.version
        result = await self.store.append(item.stream_id, events, item.expected_version)
        item._saved(result)
        if snapshot_due(self.snapshot_every, before, result.next_version):
            await self._snapshot(item)
        return result

    async def update(
        self,
        aggregate_id: str,
        command: Callable[[A], None],
        *,
        metadata: EventMetadata | None = None,
        attempts: int = 3,
    ) -> A:
        """Load, run ``command`` on the aggregate, save; on a concurrency conflict load the
        winner's state and run the command again (up to ``attempts`` times in all).

        A command that refuses the new state raises its own error (a ``ValidationError``
        naming the state), which is what a caller losing such a race should see.
        """
        for attempt in range(1, attempts + 1):
            item = await self.load(aggregate_id)
            command(item)
            try:
                await self.save(item, metadata=metadata)
            except WrongExpectedVersion:
                if attempt == attempts:
                    raise
                continue
            return item
        raise AssertionError("unreachable")  # pragma: no cover

    async def _snapshot(self, item: A) -> None:
        """Store a snapshot; a failure is logged, not raised: the events are committed and
        the command succeeded, the next load simply replays a little more."""
        try:
            await self.store.save_snapshot(
                item.stream_id, item.version, item.snapshot_schema, item.to_snapshot()
            )
        except BackendError as exc:
            _log.warning("snapshot not saved", stream_id=item.stream_id, error=str(exc))
