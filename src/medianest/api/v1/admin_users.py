"""``/admin/users``: list people, change roles, disable, enable and delete (scope
``users:admin``).

An admin cannot demote, disable or delete themselves (403), and the last enabled admin cannot
be demoted, disabled or deleted (422), each with the reason. Disabling or deleting ends the
person's sessions and revokes their API keys at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict

from medianest.api.auth import identity, requires
from medianest.security.identity import Identity
from medianest.security.roles import USERS_ADMIN, Principal, Role
from medianest.security.users_store import User

require_users_admin = requires(USERS_ADMIN)
router = APIRouter(
    prefix="/admin/users", tags=["admin"], dependencies=[Depends(require_users_admin)]
)
Ident = Annotated[Identity, Depends(identity)]
Caller = Annotated[Principal, Depends(require_users_admin)]
UserId = Annotated[str, Path(min_length=1, max_length=64)]


class UserChange(BaseModel):
    """What to change; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = None


@router.get("", summary="People who can sign in")
async def list_users(
    ident: Ident,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[User]:
    return await ident.users.list(offset=offset, limit=limit)


@router.get("/{user_id}", summary="One person")
async def get_user(user_id: UserId, ident: Ident) -> User:
    return await ident.users.get(user_id)


@router.patch("/{user_id}", summary="Change a role, disable or enable")
async def change_user(user_id: UserId, body: UserChange, caller: Caller, ident: Ident) -> User:
    actor = caller.id if caller.kind == "user" else None
    user = await ident.users.get(user_id)
    if body.role is not None and body.role != user.role:
        user = await ident.users.set_role(user_id, body.role, actor_id=actor)
    if body.disabled is True and not user.disabled:
        user = await ident.disable_user(user_id, actor_id=actor)
    elif body.disabled is False and user.disabled:
        user = await ident.users.enable(user_id, actor_id=actor)
    return user


@router.delete("/{user_id}", summary="Delete a person (sessions end, keys are revoked)")
async def delete_user(user_id: UserId, caller: Caller, ident: Ident) -> User:
    actor = caller.id if caller.kind == "user" else None
    return await ident.delete_user(user_id, actor_id=actor)
