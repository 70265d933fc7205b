"""``/.well-known/jwks.json``: the public keys that verify the hub's access tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from medianest.api.auth import identity

router = APIRouter(tags=["auth"])


@router.get("/.well-known/jwks.json", summary="Public keys of the hub's access tokens")
async def jwks(request: Request, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    return await identity(request).tokens.jwks()
