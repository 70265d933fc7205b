"""What a saga is: an ordered list of steps, each with an action and its compensation.

A :class:`SagaDefinition` names a business process that spans several services ("request
this movie on Overseerr, then queue its download, then notify"), where no single
transaction can cover every step. The orchestrator runs the steps in order; when one fails
for good (after its retries), it **compensates** the steps already taken, in reverse order,
so that the world ends as if the saga had not run.

Each :class:`Step` has

* ``execute(ctx)`` -- the action; it returns a JSON object (or None), recorded as the
  step's result and handed to later steps in ``ctx.results``;
* ``compensate(ctx)`` -- the undo (None: nothing to undo); ``ctx.result`` is the step's
  result when it completed, None when it failed or its outcome is unknown;
* an **idempotency key**, ``<saga id>:<step name>`` (:attr:`StepContext.idempotency_key`),
  the same on every attempt and in every process;
* a per-attempt ``timeout`` and a ``retry`` policy (a
  :class:`~medianest.resilience.Retry`: attempts, backoff and which errors are worth
  another attempt -- by default connection errors, timeouts, 429 and 5xx); the
  compensation has its own (``compensation_retry``, by default five attempts on any error).

**Steps must be idempotent per key.** After a crash the orchestrator cannot know whether a
step whose start was recorded took effect, so it runs it again with the same key. The step
must then make its effect at most once per key -- hand the key to the upstream as its
idempotency key, or look up what it already did under that key -- and return the same
result. The same holds for ``compensate``: it may run again after a crash, and it also runs
for the step that failed (its last attempt may have taken effect before failing, e.g. a
timeout), so it must accept a key whose action never happened and then do nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from medianest.errors import ValidationError
from medianest.resilience.retry import Retry

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


def check_saga_name(kind: str, value: object) -> str:
    """A saga id, definition name or step name: ``[A-Za-z0-9_.:-]``, 1 to 100 characters."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValidationError(
            f"{kind} must be 1 to 100 characters of letters, digits, '_', '.', ':' or '-' "
            f"(starting with a letter or digit), not {value!r}",
            errors={kind: "invalid"},
        )
    return value


class SagaState(StrEnum):
    """Where a saga is. ``running`` and ``compensating`` are incomplete (recovery resumes
    them); ``compensation_failed`` waits for a person (``medianest sagas retry``)."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"

    @property
    def incomplete(self) -> bool:
        return self in (SagaState.RUNNING, SagaState.COMPENSATING)


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step's action or compensation is given.

    ``results`` holds the results of the steps completed before this one, by step name;
    ``attempt`` counts the attempts of this action (or of this compensation), from 1.
    """

    saga_id: str
    saga: str
    step: str
    idempotency_key: str
    input: Mapping[str, Any]
    results: Mapping[str, Any]
    attempt: int
    result: Mapping[str, Any] | None = None


StepAction = Callable[[StepContext], Awaitable[Mapping[str, Any] | None]]
Compensation = Callable[[StepContext], Awaitable[None]]


def _transient(exc: BaseException) -> bool:
    from medianest.resilience.retry import is_retryable

    return is_retryable(exc)


def _any_error(exc: BaseException) -> bool:
    return True


def default_step_retry() -> Retry:
    """Three attempts, 0.1 s backoff doubling to 5 s, on transient errors only."""
    return Retry(3, base_delay=0.1, max_delay=5.0, retry_on=_transient, name="saga step")


def default_compensation_retry() -> Retry:
    """Five attempts, 0.1 s backoff doubling to 5 s, on any error: an undo is worth trying
    hard before a person is asked to look."""
    return Retry(5, base_delay=0.1, max_delay=5.0, retry_on=_any_error, name="saga compensation")


@dataclass(frozen=True)
class Step:
    """One step of a saga (module docstring). ``timeout`` is seconds per attempt (None: no
    limit) and applies to the compensation too."""

    name: str
    execute: StepAction
    compensate: Compensation | None = None
    timeout: float | None = 30.0
    retry: Retry = field(default_factory=default_step_retry)
    compensation_retry: Retry = field(default_factory=default_compensation_retry)

    def __post_init__(self) -> None:
        check_saga_name("step name", self.name)
        if self.timeout is not None and not self.timeout > 0:
            raise ValidationError("a step timeout must be > 0 seconds or None")

    @staticmethod
    def idempotency_key(saga_id: str, step_name: str) -> str:
        """The key of step ``step_name`` in saga ``saga_id``: ``<saga id>:<step name>``."""
        return f"{saga_id}:{step_name}"


@dataclass(frozen=True)
class SagaDefinition:
    """A named, ordered list of steps with unique names."""

    name: str
    steps: Sequence[Step]

    def __post_init__(self) -> None:
        check_saga_name("saga definition name", self.name)
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ValidationError(f"saga {self.name!r} has no steps")
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise ValidationError(f"saga {self.name!r} has two steps of the same name")

    def step(self, index: int) -> Step:
        return self.steps[index]
