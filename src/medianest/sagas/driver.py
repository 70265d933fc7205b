"""Driving one saga from whatever its stream says to its end.

The driver is a loop: fold what is recorded, decide the next action (:func:`next_action`),
record its start, do it, record its outcome. Deciding only from the record is what makes a
saga survive a crash: a new process folds the same stream and takes the same decision.

**Continue or compensate.** While the saga is ``running``, the first step that has not
completed decides:

* never started, or its last failure said "retrying" → run its next attempt;
* started with no outcome recorded (the process stopped during it: *in doubt*) → run it
  again with the **same idempotency key**; the step either does its work now or finds it
  done under that key and returns the same result (steps are idempotent per key, see
  :mod:`.base`). A step found in doubt more than its ``max_attempts`` times (it keeps
  killing its process) fails for good instead;
* every step completed → ``SagaCompleted``.

A failure that the step's retry policy does not retry (or the last attempt's) is recorded
with ``CompensationStarted`` in the same append. While ``compensating``, the highest step
that ever started and is not compensated yet is compensated next (reverse order, the failed
step first, since its last attempt may have had an effect); each compensation is retried by
``compensation_retry``; when none is left → ``SagaCompensated``. A compensation that keeps
failing ends in ``CompensationFailed`` (state ``compensation_failed``), which only a retry
request resumes.

Every append names the stream version the driver last saw, so if another driver got hold
of the saga (a lease that expired under a stalled process) this one's next append fails
with :class:`~medianest.errors.WrongExpectedVersion` and it stops. A cancelled driver
records nothing: to the next driver that looks the same as a crash.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from medianest.errors import ValidationError
from medianest.events.base import EventStore
from medianest.events.model import NewEvent, json_object
from medianest.resilience.timeout import Timeout
from medianest.sagas import records as R
from medianest.sagas.base import SagaDefinition, SagaState, Step, StepContext
from medianest.sagas.records import SagaRecord, StepRecord

ActionKind = Literal["execute", "give_up", "complete", "compensate", "compensated", "none"]


@dataclass(frozen=True)
class Action:
    """What the driver does next; ``step`` is the index of the step concerned."""

    kind: ActionKind
    step: int = -1


def next_action(record: SagaRecord, definition: SagaDefinition) -> Action:
    """The next thing to do for ``record`` (module docstring)."""
    if record.state is SagaState.RUNNING:
        for step in record.steps:
            if step.status == "completed":
                continue
            in_doubt = step.status == "started"
            limit = definition.step(step.index).retry.max_attempts
            if in_doubt and step.attempts > limit:
                return Action("give_up", step.index)
            return Action("execute", step.index)
        return Action("complete")
    if record.state is SagaState.COMPENSATING:
        for step in reversed(record.steps):
            if step.touched and step.status != "compensated":
                return Action("compensate", step.index)
        return Action("compensated")
    return Action("none")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


@contextlib.contextmanager
def _limit(step: Step) -> Iterator[None]:
    if step.timeout is None:
        yield
        return
    with Timeout(step.timeout, name=f"saga step {step.name}").scope():
        yield


class SagaDriver:
    """Drives one saga (module docstring); the caller holds the saga's lease."""

    def __init__(self, store: EventStore, definition: SagaDefinition, record: SagaRecord) -> None:
        self.store = store
        self.definition = definition
        self.record = record

    async def run(self) -> SagaRecord:
        """Act until the saga is completed, compensated or compensation_failed."""
        while True:
            action = next_action(self.record, self.definition)
            if action.kind == "none":
                return self.record
            if action.kind == "complete":
                await self._append([(R.SAGA_COMPLETED, {})])
            elif action.kind == "compensated":
                await self._append([(R.SAGA_COMPENSATED, {})])
            elif action.kind == "give_up":
                await self._give_up(action.step)
            elif action.kind == "execute":
                await self._execute(action.step)
            else:
                await self._compensate(action.step)

    def _context(self, step: StepRecord, attempt: int) -> StepContext:
        return StepContext(
            saga_id=self.record.id,
            saga=self.definition.name,
            step=step.name,
            idempotency_key=Step.idempotency_key(self.record.id, step.name),
            input=self.record.input,
            results=self.record.results,
            attempt=attempt,
            result=step.result,
        )

    async def _give_up(self, index: int) -> None:
        step = self.record.steps[index]
        error = (
            f"step {step.name!r} was left in doubt {step.attempts} times (the process "
            "running it stopped each time)"
        )
        await self._fail_for_good(step, step.attempts, error)

    async def _fail_for_good(self, step: StepRecord, attempt: int, error: str) -> None:
        where = {"step": step.name, "index": step.index}
        await self._append(
            [
                (R.STEP_FAILED, {**where, "attempt": attempt, "error": error, "retrying": False}),
                (R.COMPENSATION_STARTED, {**where, "error": error}),
            ]
        )

    async def _execute(self, index: int) -> None:
        step = self.record.steps[index]
        definition = self.definition.step(index)
        attempt = step.attempts + 1
        key = Step.idempotency_key(self.record.id, step.name)
        where = {"step": step.name, "index": index}
        await self._append(
            [(R.STEP_STARTED, {**where, "attempt": attempt, "idempotency_key": key})]
        )
        try:
            with _limit(definition):
                outcome = await definition.execute(self._context(step, attempt))
            result = None if outcome is None else _json_result(outcome)
        except Exception as exc:
            retry = definition.retry
            retrying = attempt < retry.max_attempts and retry.retry_on(exc)
            if not retrying:
                await self._fail_for_good(step, attempt, _error(exc))
                return
            await self._append(
                [
                    (
                        R.STEP_FAILED,
                        {**where, "attempt": attempt, "error": _error(exc), "retrying": True},
                    )
                ]
            )
            await retry.clock.sleep(retry.delay(exc, attempt))
            return
        await self._append([(R.STEP_COMPLETED, {**where, "attempt": attempt, "result": result})])

    async def _compensate(self, index: int) -> None:
        step = self.record.steps[index]
        definition = self.definition.step(index)
        where = {"step": step.name, "index": index}
        if definition.compensate is None:
            await self._append([(R.STEP_COMPENSATED, {**where, "skipped": True})])
            return
        attempt = step.compensation_attempts + 1
        try:
            with _limit(definition):
                await definition.compensate(self._context(step, attempt))
        except Exception as exc:
            retry = definition.compensation_retry
            retrying = attempt < retry.max_attempts and retry.retry_on(exc)
            failed = {**where, "attempt": attempt, "error": _error(exc), "retrying": retrying}
            events: list[tuple[str, Mapping[str, Any]]] = [(R.STEP_COMPENSATION_FAILED, failed)]
            if not retrying:
                events.append((R.COMPENSATION_FAILED, {**where, "error": _error(exc)}))
            await self._append(events)
            if retrying:
                await retry.clock.sleep(retry.delay(exc, attempt))
            return
        await self._append([(R.STEP_COMPENSATED, {**where, "skipped": False})])

    async def _append(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Append at the version last seen (the fence), then fold the events in."""
        record = self.record
        batch = [NewEvent(t, data=d, metadata=record.metadata) for t, d in events]
        await self.store.append(R.stream_of(record.id), batch, record.version)
        now = datetime.now(UTC)
        for event in batch:
            record.apply(event.type, json_object("data", event.data), now)


def _json_result(outcome: object) -> dict[str, Any]:
    """A step's result as stored; a step returning something JSON cannot carry fails."""
    try:
        return json_object("result", outcome)
    except ValidationError as exc:
        raise ValidationError(f"a saga step must return a JSON object or None: {exc}") from exc
