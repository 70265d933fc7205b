"""``/admin/keys``: manage API keys over HTTP; callers need an API key with scope ``admin``.

The key is taken from ``Authorization: Bearer mn_...`` or ``X-Api-Key`` (never the query
string). Failures follow RFC 6750 on top of the usual problem+json body: 401 with
``WWW-Authenticate: Bearer realm="medianest"`` when no key was sent, the same plus
``error="invalid_token"`` for a bad, expired or revoked key, and 403 with
``error="insufficient_scope", scope="admin"`` for a valid key without the scope.

:func:`api_key_with_scopes` and :class:`BearerChallengeRoute` are meant for any router that
protects its routes with API keys. New keys are in the answer of create and rotate only,
sent with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from medianest.api import problems
from medianest.errors import AuthenticationError, AuthError, AuthorizationError, ConfigurationError
from medianest.security import (
    ADMIN_SCOPE,
    ApiKeyInfo,
    ApiKeyService,
    extract_api_key,
    require_scopes,
    www_authenticate,
)


class BearerChallengeRoute(APIRoute):
    """A route that answers auth errors (from itself or its dependencies) as problem+json
    with the ``WWW-Authenticate`` challenge the error carries (``challenge`` in its extra)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except AuthError as exc:
                response = problems.error_response(request, exc)
                challenge = exc.extra.get("challenge")
                response.headers["WWW-Authenticate"] = (
                    challenge if isinstance(challenge, str) else www_authenticate()
                )
                return response

        return guarded


def api_keys(request: Request) -> ApiKeyService:
    """The hub's :class:`ApiKeyService` (``app.state.api_keys``)."""
    service: ApiKeyService | None = getattr(request.app.state, "api_keys", None)
    if service is None:
        raise ConfigurationError("API keys are not set up on this hub")
    return service


def api_key_with_scopes(*needed: str) -> Callable[[Request], Awaitable[ApiKeyInfo]]:
    """A dependency: the caller's verified API key, which must grant every scope in ``needed``.

    It is also put on ``request.state.api_key`` for handlers and audit logs.
    """

    async def authenticate(request: Request) -> ApiKeyInfo:
        presented = extract_api_key(request.headers)
        if presented is None:
            raise AuthenticationError(
                "an API key is required (Authorization: Bearer mn_... or X-Api-Key)",
                challenge=www_authenticate(),
            )
        try:
            info = await api_keys(request).verify(presented)
        except AuthenticationError as exc:
            raise AuthenticationError(
                exc.message, challenge=www_authenticate("invalid_token")
            ) from None
        try:
            require_scopes(info.scopes, needed)
        except AuthorizationError as exc:
            challenge = www_authenticate("insufficient_scope", " ".join(needed))
            raise AuthorizationError(exc.message, challenge=challenge) from None
        request.state.api_key = info
        return info

    return authenticate


require_admin = api_key_with_scopes(ADMIN_SCOPE)

router = APIRouter(
    prefix="/admin/keys",
    tags=["admin"],
    route_class=BearerChallengeRoute,
    dependencies=[Depends(require_admin)],
)
Service = Annotated[ApiKeyService, Depends(api_keys)]
Caller = Annotated[ApiKeyInfo, Depends(require_admin)]
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
        body.name, body.owner or caller.owner, body.scopes, expires_at=body.expires_at
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
