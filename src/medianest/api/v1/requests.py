"""``/requests``: ask for a movie or a show, and follow what became of it.

``POST /requests`` (scope ``requests:write``) starts the ``request-media`` saga
(:mod:`medianest.media_requests.saga`) and answers **202** as soon as the saga is recorded
(it is durable then: should this process stop, a ``workers`` instance finishes it), with
the saga id, the request id and ``Location: /api/v1/requests/{id}``. Whether the request
succeeds -- quota, Overseerr -- is known later: follow the ``Location``.

``GET /requests/{id}`` and ``GET /requests`` (scope ``requests:read``) read the
``media_requests`` read model: a person sees their own requests, an admin everyone's
(:attr:`~medianest.security.roles.Principal.can_see_all`). Someone else's request answers
**404, not 403**: a 403 would confirm that the id exists, and ids must not leak whose
requests exist. An API key acts for its owner.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import uuid4

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medianest.api.auth import requires
from medianest.config.requests import requests_settings
from medianest.database import Database
from medianest.errors import ConfigurationError, NotFoundError
from medianest.events import EventMetadata, EventStore
from medianest.integrations.models import MediaType
from medianest.media_requests import (
    REQUEST_MEDIA,
    RequestInput,
    RequestRow,
    find_request,
    list_requests,
    saga_id_for,
)
from medianest.media_requests.queries import RequestStatusName
from medianest.sagas import SagaOrchestrator
from medianest.security.roles import REQUESTS_READ, REQUESTS_WRITE, Principal

router = APIRouter(prefix="/requests", tags=["requests"])
Reader = Annotated[Principal, Depends(requires(REQUESTS_READ))]
Writer = Annotated[Principal, Depends(requires(REQUESTS_WRITE))]
RequestId = Annotated[str, PathParam(min_length=1, max_length=64, description="Request id.")]
Status = RequestStatusName


def _database(request: Request) -> Database:
    found: Database | None = getattr(getattr(request.app.state, "hub", None), "database", None)
    if found is None:
        raise ConfigurationError("media requests need the hub's database")
    return found


def _store(request: Request) -> EventStore | None:
    found: EventStore | None = getattr(request.app.state, "event_store", None)
    return found


def _sagas(request: Request) -> SagaOrchestrator:
    found: SagaOrchestrator | None = getattr(request.app.state, "sagas", None)
    if found is None or REQUEST_MEDIA not in found.definitions:
        raise ConfigurationError("media requests need the event store (run `medianest migrate`)")
    return found


def _owner(principal: Principal) -> str:
    return principal.owner or principal.id


class NewRequest(BaseModel):
    """What to request: a movie, or a show (all seasons unless ``seasons`` says which)."""

    model_config = ConfigDict(extra="forbid")

    media_type: Literal["movie", "tv"]
    tmdb_id: int = Field(gt=0, le=2**31 - 1, description="The title's TMDB id.")
    seasons: list[Annotated[int, Field(ge=1, le=1000)]] | None = Field(
        None, max_length=200, description="TV only: season numbers; absent = every season."
    )

    @model_validator(mode="after")
    def _seasons_for_tv_only(self) -> NewRequest:
        if self.seasons is not None and self.media_type != "tv":
            raise ValueError("seasons are for tv requests only")
        return self


class Accepted(BaseModel):
    """The request was accepted; its saga runs in the background."""

    request_id: str
    saga_id: str
    status: Literal["pending"] = "pending"


class MediaRequestView(BaseModel):
    """A media request. ``status``: pending (being made), requested, submitted (Overseerr
    has it), approved, declined, available, failed (``reason`` says why), cancelled."""

    id: str
    user_id: str
    media_type: str
    tmdb_id: int
    seasons: list[int]
    title: str | None = Field(description="Known once Overseerr was asked.")
    status: Status
    reason: str | None
    overseerr_id: str | None
    saga_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: RequestRow) -> MediaRequestView:
        return cls.model_validate(row, from_attributes=True)


@router.post("", status_code=202, summary="Request a movie or a show")
async def create_request(
    body: NewRequest, caller: Writer, request: Request, response: Response
) -> Accepted:
    sagas = _sagas(request)
    settings = requests_settings(request.app.state.settings)
    request_id = uuid4().hex
    saga_id = saga_id_for(request_id)
    saga_input = RequestInput(
        request_id=request_id,
        user_id=_owner(caller),
        media_type=MediaType(body.media_type),
        tmdb_id=body.tmdb_id,
        seasons=tuple(sorted(set(body.seasons or ()))),
        quota_exempt=settings.quota_exempt_admins and caller.is_admin,
    )
    meta = EventMetadata(
        correlation_id=saga_id,
        causation_id=getattr(request.state, "request_id", None),
        user=_owner(caller),
    )
    await sagas.start(REQUEST_MEDIA, saga_id, saga_input.to_json(), metadata=meta, wait=False)
    response.headers["Location"] = f"/api/v1/requests/{request_id}"
    return Accepted(request_id=request_id, saga_id=saga_id)


@router.get("/{request_id}", summary="One media request")
async def get_request(request_id: RequestId, caller: Reader, request: Request) -> MediaRequestView:
    found = await find_request(_database(request), _store(request), request_id)
    if found is None or not (caller.can_see_all or found.user_id == _owner(caller)):
        raise NotFoundError(f"no media request {request_id!r}", request_id=request_id)
    return MediaRequestView.of(found)


@router.get("", summary="Media requests, newest first (one's own; admins: everyone's)")
async def get_requests(
    caller: Reader,
    request: Request,
    response: Response,
    status: Annotated[Status | None, Query(description="Only requests in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[MediaRequestView]:
    owner = None if caller.can_see_all else _owner(caller)
    rows, total = await list_requests(
        _database(request), user_id=owner, status=status, limit=limit, offset=offset
    )
    response.headers["X-Total-Count"] = str(total)
    return [MediaRequestView.of(row) for row in rows]
