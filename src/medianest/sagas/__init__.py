"""Sagas: durable, compensating business processes recorded in the event store.

:mod:`.base` says what a saga is (steps, compensation, idempotency keys, retries),
:mod:`.records` how its state is recorded as events, :mod:`.driver` how one saga is driven
and resumed, :mod:`.orchestrator` how sagas are started, recovered under leases, listed and
retried.
"""

from medianest.sagas.base import (
    Compensation,
    SagaDefinition,
    SagaState,
    Step,
    StepAction,
    StepContext,
)
from medianest.sagas.orchestrator import SagaOrchestrator
from medianest.sagas.records import (
    SagaEvent,
    SagaRecord,
    SagaSummary,
    StepRecord,
    load,
    request_retry,
)

__all__ = [
    "Compensation",
    "SagaDefinition",
    "SagaEvent",
    "SagaOrchestrator",
    "SagaRecord",
    "SagaState",
    "SagaSummary",
    "Step",
    "StepAction",
    "StepContext",
    "StepRecord",
    "load",
    "request_retry",
]
