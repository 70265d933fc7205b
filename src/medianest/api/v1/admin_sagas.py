"""``/admin/sagas``: list sagas, show one, retry a compensation that failed (scope ``admin``).

A saga whose compensation kept failing is ``compensation_failed``: it is listed with the
error of its last compensation attempt and stays so until an admin, having fixed the
cause, asks for a retry (``POST /admin/sagas/{id}/retry``); the hub then compensates again
in the background and the answer (202) shows the saga as ``compensating``.

The event store is ``app.state.event_store``; the orchestrator, ``app.state.sagas``, is
optional for reading (sagas can be listed from the store alone) and needed to retry here;
without it the retry is only recorded and a ``workers`` instance carries it out.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from medianest.api.auth import requires
from medianest.errors import ConfigurationError
from medianest.events import EventStore
from medianest.sagas import (
    SagaOrchestrator,
    SagaRecord,
    SagaState,
    SagaSummary,
    load,
    request_retry,
)
from medianest.security.roles import ADMIN, Principal


def event_store(request: Request) -> EventStore:
    """The hub's event store (``app.state.event_store``)."""
    found: EventStore | None = getattr(request.app.state, "event_store", None)
    if found is None:
        raise ConfigurationError("the event store is not set up on this hub")
    return found


def orchestrator(request: Request) -> SagaOrchestrator | None:
    """The hub's saga orchestrator (``app.state.sagas``), if this hub runs one."""
    found: SagaOrchestrator | None = getattr(request.app.state, "sagas", None)
    return found


require_sagas_admin = requires(ADMIN)
router = APIRouter(
    prefix="/admin/sagas", tags=["admin"], dependencies=[Depends(require_sagas_admin)]
)
Caller = Annotated[Principal, Depends(require_sagas_admin)]
Store = Annotated[EventStore, Depends(event_store)]
Orchestrator = Annotated[SagaOrchestrator | None, Depends(orchestrator)]
SagaId = Annotated[str, PathParam(min_length=1, max_length=100, description="Saga id.")]


class SagaSummaryView(BaseModel):
    """A saga in a listing; ``error`` is set when it is compensating or compensation_failed."""

    id: str
    definition: str
    state: SagaState
    started_at: datetime
    updated_at: datetime
    step: str | None = Field(None, description="The step that failed (or whose undo failed).")
    error: str | None = None

    @classmethod
    def of(cls, summary: SagaSummary) -> SagaSummaryView:
        return cls(**dataclasses.asdict(summary))


class StepView(BaseModel):
    name: str
    status: str = Field(description="pending, started (in doubt), failed, completed, compensated.")
    attempts: int
    error: str | None
    result: dict[str, Any] | None
    compensation_error: str | None


class SagaEventView(BaseModel):
    version: int
    type: str
    at: datetime
    data: dict[str, Any]


class SagaView(BaseModel):
    """Everything recorded about one saga."""

    id: str
    definition: str
    state: SagaState
    input: dict[str, Any]
    started_at: datetime
    updated_at: datetime
    error: str | None
    failed_step: str | None
    steps: list[StepView]
    history: list[SagaEventView]

    @classmethod
    def of(cls, record: SagaRecord) -> SagaView:
        return cls(
            id=record.id,
            definition=record.definition,
            state=record.state,
            input=record.input,
            started_at=record.started_at,
            updated_at=record.updated_at,
            error=record.error,
            failed_step=record.failed_step,
            steps=[
                StepView(
                    name=s.name,
                    status=s.status,
                    attempts=s.attempts,
                    error=s.error,
                    result=s.result,
                    compensation_error=s.compensation_error,
                )
                for s in record.steps
            ],
            history=[SagaEventView(**dataclasses.asdict(e)) for e in record.history],
        )


@router.get("", summary="List sagas, newest first")
async def list_sagas(
    store: Store,
    sagas: Orchestrator,
    state: Annotated[SagaState | None, Query(description="Only sagas in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[SagaSummaryView]:
    reader = sagas if sagas is not None else SagaOrchestrator(store, [])
    return [SagaSummaryView.of(s) for s in await reader.list(state, limit)]


@router.get("/{saga_id}", summary="One saga: its steps and history")
async def get_saga(saga_id: SagaId, store: Store) -> SagaView:
    return SagaView.of(await load(store, saga_id))


@router.post(
    "/{saga_id}/retry", status_code=202, summary="Compensate a compensation_failed saga again"
)
async def retry_saga(
    saga_id: SagaId, store: Store, sagas: Orchestrator, caller: Caller
) -> SagaView:
    by = f"{caller.kind}:{caller.id}"
    if sagas is not None:
        record = await sagas.retry(saga_id, by=by, wait=False)
    else:
        record = await request_retry(store, saga_id, by=by)
    return SagaView.of(record)
