"""Reading media requests: the ``media_requests`` read model, and the saga behind a request
the projection has not reached yet.

The projection trails the event log by a moment (a subscription hop; longer when the
``workers`` role runs in another process). So that a client following the ``Location`` of
its ``202`` never gets a 404 for a request it has just made, :func:`find_request` falls
back on the request's saga: its input says who asked for what, its state whether it is
still under way (``pending``) or was undone (``failed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import func, select
from sqlalchemy.engine import RowMapping

from medianest.database import Database
from medianest.database.schema import media_requests
from medianest.errors import NotFoundError, ValidationError
from medianest.events.backends.sql_store import utc
from medianest.events.base import EventStore
from medianest.media_requests.saga import RequestInput, saga_id_for
from medianest.sagas import SagaState, load

_T = media_requests.c

RequestStatusName = Literal[
    "pending", "requested", "submitted", "approved", "declined", "available", "failed", "cancelled"
]
"""What ``media_requests.status`` holds: ``pending`` while the saga runs, then the state of
the ``MediaRequest`` aggregate, or ``failed`` when the saga was compensated."""
STATUSES: tuple[str, ...] = get_args(RequestStatusName)


@dataclass(frozen=True)
class RequestRow:
    """One media request as the read model has it."""

    id: str
    user_id: str
    media_type: str
    tmdb_id: int
    seasons: list[int]
    title: str | None
    status: str
    reason: str | None
    overseerr_id: str | None
    saga_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: RowMapping) -> RequestRow:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            media_type=row["media_type"],
            tmdb_id=int(row["tmdb_id"]),
            seasons=list(row["seasons"] or []),
            title=row["title"],
            status=row["status"],
            reason=row["reason"],
            overseerr_id=row["overseerr_id"],
            saga_id=row["saga_id"],
            created_at=utc(row["created_at"]),
            updated_at=utc(row["updated_at"]),
        )


async def _from_saga(store: EventStore, request_id: str) -> RequestRow | None:
    try:
        record = await load(store, saga_id_for(request_id))
    except (NotFoundError, ValidationError):
        return None
    request = RequestInput.of(record.input)
    if record.state is SagaState.COMPENSATED:
        status = "failed"
    elif record.state is SagaState.COMPLETED:
        status = "submitted"
    else:
        status = "pending"
    made: dict[str, Any] = record.results.get("create_in_overseerr") or {}
    overseerr_id = made.get("overseerr_id")
    return RequestRow(
        id=request.request_id,
        user_id=request.user_id,
        media_type=request.media_type.value,
        tmdb_id=request.tmdb_id,
        seasons=list(request.seasons),
        title=made.get("title"),
        status=status,
        reason=record.error,
        overseerr_id=None if overseerr_id is None else str(overseerr_id),
        saga_id=record.id,
        created_at=record.started_at,
        updated_at=record.updated_at,
    )


async def find_request(
    database: Database, store: EventStore | None, request_id: str
) -> RequestRow | None:
    """Request ``request_id`` from the read model, else from its saga; None if unknown."""
    async with database.connect() as conn:
        found = (
            (await conn.execute(select(media_requests).where(_T.id == request_id)))
            .mappings()
            .one_or_none()
        )
    if found is not None:
        return RequestRow.of(found)
    return None if store is None else await _from_saga(store, request_id)


async def list_requests(
    database: Database,
    *,
    user_id: str | None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[RequestRow], int]:
    """Requests newest first (of ``user_id`` only, unless None) and how many match."""
    conditions = []
    if user_id is not None:
        conditions.append(_T.user_id == user_id)
    if status is not None:
        conditions.append(_T.status == status)
    query = select(media_requests).where(*conditions)
    query = query.order_by(_T.created_at.desc(), _T.id.desc()).limit(limit).offset(offset)
    counted = select(func.count()).select_from(media_requests).where(*conditions)
    async with database.connect() as conn:
        rows = [RequestRow.of(r) for r in (await conn.execute(query)).mappings()]
        total = int((await conn.execute(counted)).scalar_one())
    return rows, total
