"""A saga's state as events, and the state folded back from them.

Every saga is the stream ``saga-<id>`` of the event store. Its events, all schema version 1:

=========================== ==============================================================
SagaStarted                 ``definition``, ``input``, ``steps`` (names, in order)
StepStarted                 ``step``, ``index``, ``attempt``, ``idempotency_key``
StepCompleted               ``step``, ``index``, ``attempt``, ``result``
StepFailed                  ``step``, ``index``, ``attempt``, ``error``, ``retrying``
CompensationStarted         ``step``, ``index``, ``error`` (the step that failed for good)
StepCompensated             ``step``, ``index``, ``skipped`` (no compensation defined)
StepCompensationFailed      ``step``, ``index``, ``attempt``, ``error``, ``retrying``
CompensationFailed          ``step``, ``index``, ``error`` (gave up: a person must look)
CompensationRetryRequested  ``by`` (compensation resumes)
SagaCompleted / SagaCompensated
=========================== ==============================================================

A final ``StepFailed`` and its ``CompensationStarted`` are appended together, so a saga is
never seen between "gave up on the step" and "compensating". :func:`fold` turns the stream
into a :class:`SagaRecord`; the *lifecycle* events (:data:`LIFECYCLE`) alone give a
:class:`SagaSummary`, which is what listing and the recovery scan read from the global log.
:func:`load` reads one saga, :func:`request_retry` asks for a failed compensation to be
tried again; neither needs the saga's definition (the CLI uses them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from medianest.errors import NotFoundError, ValidationError
from medianest.events.base import EventStore
from medianest.events.model import EventMetadata, NewEvent, RecordedEvent
from medianest.sagas.base import SagaState, check_saga_name

STREAM_PREFIX = "saga-"

SAGA_STARTED = "SagaStarted"
STEP_STARTED = "StepStarted"
STEP_COMPLETED = "StepCompleted"
STEP_FAILED = "StepFailed"
COMPENSATION_STARTED = "CompensationStarted"
STEP_COMPENSATED = "StepCompensated"
STEP_COMPENSATION_FAILED = "StepCompensationFailed"
COMPENSATION_FAILED = "CompensationFailed"
COMPENSATION_RETRY_REQUESTED = "CompensationRetryRequested"
SAGA_COMPLETED = "SagaCompleted"
SAGA_COMPENSATED = "SagaCompensated"

LIFECYCLE: tuple[str, ...] = (
    SAGA_STARTED,
    COMPENSATION_STARTED,
    COMPENSATION_FAILED,
    COMPENSATION_RETRY_REQUESTED,
    SAGA_COMPLETED,
    SAGA_COMPENSATED,
)
"""The events that change a saga's :class:`SagaState`."""

_STATE_AFTER: Mapping[str, SagaState] = {
    SAGA_STARTED: SagaState.RUNNING,
    COMPENSATION_STARTED: SagaState.COMPENSATING,
    COMPENSATION_FAILED: SagaState.COMPENSATION_FAILED,
    COMPENSATION_RETRY_REQUESTED: SagaState.COMPENSATING,
    SAGA_COMPLETED: SagaState.COMPLETED,
    SAGA_COMPENSATED: SagaState.COMPENSATED,
}

StepStatus = Literal["pending", "started", "failed", "completed", "compensated"]


def stream_of(saga_id: str) -> str:
    return f"{STREAM_PREFIX}{saga_id}"


@dataclass
class StepRecord:
    """One step as recorded. ``started`` with no outcome means in doubt (a crash);
    ``retrying`` is True when the last failure will be followed by another attempt."""

    name: str
    index: int
    status: StepStatus = "pending"
    attempts: int = 0
    retrying: bool = False
    result: dict[str, Any] | None = None
    error: str | None = None
    compensation_attempts: int = 0
    compensation_error: str | None = None

    @property
    def touched(self) -> bool:
        """Whether the action ever started (so it may have had an effect to undo)."""
        return self.attempts > 0


@dataclass(frozen=True)
class SagaEvent:
    """One entry of a saga's history, as ``show`` displays it."""

    version: int
    type: str
    at: datetime
    data: dict[str, Any]


@dataclass
class SagaSummary:
    """A saga as the lifecycle events describe it (``list``)."""

    id: str
    definition: str
    state: SagaState
    started_at: datetime
    updated_at: datetime
    step: str | None = None
    error: str | None = None


@dataclass
class SagaRecord:
    """Everything known about one saga, folded from its stream (``show``, recovery).

    ``version`` is the stream version the record was built from: the expected version of
    the next append (the fence against a second driver, see :mod:`.orchestrator`).
    """

    id: str
    definition: str
    input: dict[str, Any]
    state: SagaState
    steps: list[StepRecord]
    started_at: datetime
    updated_at: datetime
    metadata: EventMetadata = field(default_factory=EventMetadata)
    version: int = 0
    error: str | None = None
    failed_step: str | None = None
    history: list[SagaEvent] = field(default_factory=list)

    @property
    def results(self) -> dict[str, Any]:
        """Results of the completed steps, by step name."""
        return {s.name: s.result for s in self.steps if s.status in ("completed", "compensated")}

    def apply(self, event_type: str, data: Mapping[str, Any], at: datetime) -> None:
        """Fold one more event (after ``SagaStarted``) into the record."""
        self.version += 1
        self.updated_at = at
        self.history.append(SagaEvent(self.version, event_type, at, dict(data)))
        if event_type in _STATE_AFTER:
            self.state = _STATE_AFTER[event_type]
        index = data.get("index")
        step = (
            self.steps[index] if isinstance(index, int) and 0 <= index < len(self.steps) else None
        )
        if event_type == COMPENSATION_FAILED:
            self.error = data.get("error")
            self.failed_step = data.get("step")
        elif event_type == COMPENSATION_STARTED:
            self.error = data.get("error")
            self.failed_step = data.get("step")
            for item in self.steps:
                item.compensation_attempts = 0
        elif event_type == COMPENSATION_RETRY_REQUESTED:
            for item in self.steps:
                item.compensation_attempts = 0
        if step is None:
            return
        if event_type == STEP_STARTED:
            step.status, step.attempts, step.retrying = "started", int(data["attempt"]), False
        elif event_type == STEP_COMPLETED:
            step.status, step.result, step.error = "completed", data.get("result"), None
        elif event_type == STEP_FAILED:
            step.status, step.error = "failed", data.get("error")
            step.retrying = bool(data.get("retrying"))
        elif event_type == STEP_COMPENSATED:
            step.status, step.compensation_error = "compensated", None
        elif event_type == STEP_COMPENSATION_FAILED:
            step.compensation_attempts = int(data["attempt"])
            step.compensation_error = data.get("error")


def fold(saga_id: str, events: Iterable[RecordedEvent]) -> SagaRecord | None:
    """The record of a saga from its stream's events (None for an empty stream)."""
    record: SagaRecord | None = None
    for event in events:
        if record is None:
            data = event.data
            record = SagaRecord(
                id=saga_id,
                definition=data["definition"],
                input=dict(data.get("input") or {}),
                state=SagaState.RUNNING,
                steps=[StepRecord(name, i) for i, name in enumerate(data["steps"])],
                started_at=event.recorded_at,
                updated_at=event.recorded_at,
                metadata=event.metadata,
                version=1,
                history=[SagaEvent(1, event.type, event.recorded_at, dict(data))],
            )
            continue
        record.apply(event.type, event.data, event.recorded_at)
    return record


def summarise(index: dict[str, SagaSummary], event: RecordedEvent) -> None:
    """Update ``index`` (saga id → summary) with one lifecycle event from the global log."""
    saga_id = event.stream_id.removeprefix(STREAM_PREFIX)
    state = _STATE_AFTER.get(event.type)
    if state is None:
        return
    if event.type == SAGA_STARTED:
        index[saga_id] = SagaSummary(
            saga_id, event.data["definition"], state, event.recorded_at, event.recorded_at
        )
        return
    found = index.get(saga_id)
    if found is None:
        return
    found.state, found.updated_at = state, event.recorded_at
    if event.type in (COMPENSATION_STARTED, COMPENSATION_FAILED):
        found.step, found.error = event.data.get("step"), event.data.get("error")
    elif event.type == COMPENSATION_RETRY_REQUESTED:
        found.error = None


async def load(store: EventStore, saga_id: str) -> SagaRecord:
    """The record of saga ``saga_id``; :class:`NotFoundError` when there is none."""
    check_saga_name("saga id", saga_id)
    record = fold(saga_id, await store.read_stream(stream_of(saga_id)))
    if record is None:
        raise NotFoundError(f"no saga {saga_id!r}", saga_id=saga_id)
    return record


async def request_retry(store: EventStore, saga_id: str, *, by: str = "") -> SagaRecord:
    """Record that compensation of a ``compensation_failed`` saga should be tried again;
    the recovery loop of a ``workers`` instance resumes it. ValidationError in any other
    state."""
    record = await load(store, saga_id)
    if record.state is not SagaState.COMPENSATION_FAILED:
        raise ValidationError(
            f"saga {saga_id!r} is {record.state.value}: only a compensation_failed saga can "
            "be retried",
            errors={"state": record.state.value},
        )
    event = NewEvent(COMPENSATION_RETRY_REQUESTED, {"by": by}, metadata=record.metadata)
    await store.append(stream_of(saga_id), [event], record.version)
    record.apply(event.type, {"by": by}, datetime.now(UTC))
    return record
