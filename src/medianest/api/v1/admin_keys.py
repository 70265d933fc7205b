"""``/admin/keys``: manage API keys over HTTP (scope ``keys:admin``, which ``admin`` grants).

Callers authenticate as for every ``/api/v1`` endpoint (:mod:`medianest.api.auth`): an admin
signed in, or an API key with the scope. New keys are in the answer of create and rotate
only, sent with ``Cache-Control: no-store``; a key's owner defaults to the caller (the user
id of a person, the owner of a calling key).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from medianest.api.auth import requires
from medianest.errors import ConfigurationError
from medianest.security import ApiKeyInfo, ApiKeyService
from medianest.security.roles import KEYS_ADMIN, Principal


def api_keys(request: Request) -> ApiKeyService:
    """The hub's :class:`ApiKeyService` (``app.state.api_keys``)."""
    service: ApiKeyService | None = getattr(request.app.state, "api_keys", None)
    if service is None:
        raise ConfigurationError("API keys are not set up on this hub")
    return service


require_keys_admin = requires(KEYS_ADMIN)

router = APIRouter(prefix="/admin/keys", tags=["admin"], dependencies=[Depends(require_keys_admin)])
Service = Annotated[ApiKeyService, Depends(api_keys)]
Caller = Annotated[Principal, Depends(require_keys_admin)]
KeyId = Annotated[str, PathParam(max_length=100, description="Key id or `mn_<key id>`.")]


class NewKey(BaseModel):
    """What to create; ``owner`` defaults to the owner of the calling key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="What the key is for.")
    owner: str | None = Field(None, min_length=1, max_length=200)
    scopes: list[str] = Field(default_factory=list, max_length=64)
    expires_at: datetime | None = Field(None, description="When it stops working (UTC).")


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_hours: float = Field(24.0, ge=0, le=24 * 366, description="Old key's grace period.")


class IssuedKey(BaseModel):
    """A new key: ``key`` appears in this answer only and cannot be retrieved again."""

    key: str
    info: ApiKeyInfo


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


@router.post("", status_code=201, summary="Create an API key (shown once)")
async def create_key(
    body: NewKey, service: Service, caller: Caller, response: Response
) -> IssuedKey:
    info, key = await service.create(
        body.name, body.owner or caller.owner or caller.id, body.scopes, expires_at=body.expires_at
    )
    _no_store(response)
    return IssuedKey(key=key, info=info)


@router.get("", summary="List API keys")
async def list_keys(
    service: Service, owner: str | None = None, include_revoked: bool = False
) -> list[ApiKeyInfo]:
    return await service.list(owner, include_revoked=include_revoked)


@router.get("/{key_id}", summary="One API key")
async def get_key(key_id: KeyId, service: Service) -> ApiKeyInfo:
    return await service.get(key_id)


@router.post("/{key_id}/rotate", status_code=201, summary="Rotate an API key (new key shown once)")
async def rotate_key(
    key_id: KeyId, service: Service, response: Response, body: Rotation | None = None
) -> IssuedKey:
    overlap = timedelta(hours=(body or Rotation()).overlap_hours)
    info, key = await service.rotate(key_id, overlap=overlap)
    _no_store(response)
    return IssuedKey(key=key, info=info)


@router.delete("/{key_id}", summary="Revoke an API key at once")
async def revoke_key(key_id: KeyId, service: Service) -> ApiKeyInfo:
    return await service.revoke(key_id)
