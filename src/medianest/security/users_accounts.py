"""The account half of :class:`~medianest.security.users.UserService`: finding people and
managing them (roles, disabling, passwords) under the rules that keep an admin.

**Keeping an admin.** Nobody may demote or disable themselves, and the last enabled admin
may not be demoted or disabled. Such changes run one at a time: each transaction first
writes the ``first_admin`` row (:func:`~medianest.security.users_store.lock_admins`), then
counts the enabled admins, so two admins demoting each other at once leave one.

Disabling someone revokes their sessions in the same transaction. Listeners registered
with :meth:`~UserAccounts.add_listener` (the session cache) hear of every change at once.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.backends import mask_url
from medianest.database import Database
from medianest.database.engine import _reason
from medianest.database.schema import sessions, users
from medianest.errors import (
    AuthenticationError,
    AuthorizationError,
    BackendError,
    NotFoundError,
    ValidationError,
)
from medianest.observability import get_logger
from medianest.security import users_store as store
from medianest.security.passwords import Passwords
from medianest.security.roles import Role
from medianest.security.users_store import StoredUser, User, username_key
from medianest.security.vault import Vault

_log = get_logger("medianest.security.users")
_T = TypeVar("_T")
_ATTEMPTS = 4


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UserAccounts:
    """Find and manage people in the main database (see the module docstring).

    ``admin_plex`` names the plex.tv account made admin at each sign-in: its account id
    when all digits, else its username (any case). ``first_user_admin`` defaults to "only
    when no admin Plex account is configured". ``clock`` returns aware UTC datetimes.
    """

    def __init__(
        self,
        db: Database,
        vault: Vault,
        *,
        passwords: Passwords | None = None,
        admin_plex: str | None = None,
        first_user_admin: bool | None = None,
        default_role: Role | str = Role.USER,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self._vault = vault
        self.passwords = passwords or Passwords()
        self._admin_plex = admin_plex.strip().casefold() if admin_plex else None
        self._first_user_admin = (
            admin_plex is None if first_user_admin is None else first_user_admin
        )
        self._default_role = store.role_of(default_role)
        self._clock = clock or _utcnow
        self._listeners: list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        return f"UserService({self._db!r})"

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(user_id)`` after every committed change to a person."""
        self._listeners.append(callback)

    def _changed(self, user_id: str) -> None:
        for callback in self._listeners:
            callback(user_id)

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        """Run ``work`` in a transaction, again when it lost a race on a unique key."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with store.connection(
                    self._db, write=True, what="user store", conflicts=True
                ) as conn:
                    return await work(conn)
            except IntegrityError as exc:
                if attempt == _ATTEMPTS:
                    raise BackendError(
                        f"user store kept conflicting: {_reason(exc)}",
                        backend=mask_url(self._db.url),
                    ) from exc
                _log.debug("user write conflicted, retrying", attempt=attempt)
        raise AssertionError("unreachable")

    async def _reread(self, conn: AsyncConnection, user_id: str) -> User:
        found = await store.fetch(conn, user_id)
        assert found is not None
        return found.user

    # --- reading ---------------------------------------------------------------------------

    async def _get(self, condition: Any, what: str) -> StoredUser:
        async with store.connection(self._db) as conn:
            found = await store.fetch_where(conn, condition)
        if found is None:
            raise NotFoundError(f"no user {what}")
        return found

    async def get(self, user_id: str) -> User:
        """The user ``user_id``; :class:`NotFoundError` if none."""
        return (await self._get(users.c.id == user_id, repr(user_id))).user

    async def get_by_username(self, username: str) -> User:
        """The user named ``username`` (any case); :class:`NotFoundError` if none."""
        key = username_key(username)
        return (await self._get(users.c.username_key == key, f"named {username!r}")).user

    async def get_by_plex_id(self, plex_id: str | int) -> User:
        """The user of plex.tv account ``plex_id``; :class:`NotFoundError` if none."""
        plex_id = str(plex_id)
        return (await self._get(users.c.plex_id == plex_id, f"with Plex id {plex_id}")).user

    async def get_by_oidc(self, issuer: str, subject: str) -> User:
        """The user of OIDC identity ``(issuer, subject)``; :class:`NotFoundError` if none."""
        condition = (users.c.oidc_issuer == issuer) & (users.c.oidc_subject == subject)
        return (await self._get(condition, "with that OIDC identity")).user

    async def list(self, *, offset: int = 0, limit: int = 100) -> builtins.list[User]:
        """A page of users, oldest first."""
        if offset < 0 or not 1 <= limit <= 1000:
            raise ValidationError("offset must be >= 0 and limit between 1 and 1000")
        async with store.connection(self._db) as conn:
            return builtins.list(await store.fetch_page(conn, offset, limit))

    async def count(self) -> int:
        """How many users there are (for paging)."""
        async with store.connection(self._db) as conn:
            return await store.count(conn)

    # --- managing --------------------------------------------------------------------------

    async def _change(
        self, user_id: str, decide: Callable[[AsyncConnection, User], Awaitable[dict[str, Any]]]
    ) -> User:
        async def work(conn: AsyncConnection) -> User:
            await store.lock_admins(conn, self._now())
            found = await store.fetch(conn, user_id)
            if found is None:
                raise NotFoundError(f"no user {user_id!r}")
            values = await decide(conn, found.user)
            if values:
                await store.update_user(conn, user_id, {**values, "updated_at": self._now()})
            return await self._reread(conn, user_id)

        user = await self._write(work)
        self._changed(user_id)
        return user

    async def _keep_an_admin(self, conn: AsyncConnection, user: User, change: str) -> None:
        if user.is_admin and not user.disabled and await store.enabled_admins(conn) <= 1:
            raise ValidationError(
                f"{user.username} is the last enabled admin and cannot be {change}; "
                "make someone else admin first",
                errors={"user": "last admin"},
            )

    async def set_role(self, user_id: str, role: Role | str, *, actor_id: str | None) -> User:
        """Give ``user_id`` the role ``role`` on behalf of ``actor_id``."""
        new = store.role_of(role)

        async def decide(conn: AsyncConnection, user: User) -> dict[str, Any]:
            if user.role is new:
                return {}
            if new is Role.ADMIN:
                await store.claim_first_admin(conn, user.id, self._now())
            elif user.is_admin:
                if actor_id == user.id:
                    raise AuthorizationError("you cannot take away your own admin role")
                await self._keep_an_admin(conn, user, "demoted")
            return {"role": new.value}

        user = await self._change(user_id, decide)
        _log.info("user role set", user_id=user_id, role=new, actor_id=actor_id)
        return user

    async def disable(self, user_id: str, *, actor_id: str | None) -> User:
        """Disable ``user_id``: no sign-in, every session revoked at once."""
        if actor_id == user_id:
            raise AuthorizationError("you cannot disable your own account")

        async def decide(conn: AsyncConnection, user: User) -> dict[str, Any]:
            if user.disabled:
                return {}
            await self._keep_an_admin(conn, user, "disabled")
            now = self._now()
            await conn.execute(
                update(sessions)
                .where(sessions.c.user_id == user.id, sessions.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return {"disabled_at": now}

        user = await self._change(user_id, decide)
        _log.info("user disabled", user_id=user_id, actor_id=actor_id)
        return user

    async def delete(self, user_id: str, *, actor_id: str | None) -> User:
        """Delete ``user_id`` and their sessions (the last enabled admin and oneself never);
        the deleted user as they were."""
        if actor_id == user_id:
            raise AuthorizationError("you cannot delete your own account")

        async def work(conn: AsyncConnection) -> User:
            await store.lock_admins(conn, self._now())
            found = await store.fetch(conn, user_id)
            if found is None:
                raise NotFoundError(f"no user {user_id!r}")
            await self._keep_an_admin(conn, found.user, "deleted")
            await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
            await conn.execute(delete(users).where(users.c.id == user_id))
            return found.user

        user = await self._write(work)
        self._changed(user_id)
        _log.info("user deleted", user_id=user_id, actor_id=actor_id)
        return user

    async def enable(self, user_id: str, *, actor_id: str | None = None) -> User:
        """Let a disabled user sign in again (their old sessions stay revoked)."""

        async def decide(_conn: AsyncConnection, user: User) -> dict[str, Any]:
            return {"disabled_at": None} if user.disabled else {}

        user = await self._change(user_id, decide)
        _log.info("user enabled", user_id=user_id, actor_id=actor_id)
        return user

    async def set_password(
        self, user_id: str, password: str, *, must_change_password: bool = True
    ) -> User:
        """Set a password without the old one (an admin reset, or a first local password).
        Sessions are left alone: revoke them with the session service if wanted."""
        user = await self.get(user_id)
        self.passwords.check_policy(password, user.username)
        hashed = await self.passwords.hash(password)

        async def decide(_conn: AsyncConnection, _user: User) -> dict[str, Any]:
            return {"password_hash": hashed, "must_change_password": must_change_password}

        user = await self._change(user_id, decide)
        _log.info("user password set", user_id=user_id)
        return user

    async def change_password(self, user_id: str, current: str, new: str) -> User:
        """The user's own change: ``current`` must match; clears ``must_change_password``.
        The caller should revoke the user's other sessions."""
        async with store.connection(self._db) as conn:
            found = await store.fetch(conn, user_id)
        if found is None:
            raise NotFoundError(f"no user {user_id!r}")
        old_hash = found.password_hash
        if old_hash is None or not await self.passwords.verify(old_hash, current):
            raise AuthenticationError("the current password is not correct")
        if new == current:
            raise ValidationError(
                "the new password must differ from the current one", errors={"password": "same"}
            )
        self.passwords.check_policy(new, found.user.username)
        hashed = await self.passwords.hash(new)
        values = {"password_hash": hashed, "must_change_password": False}
        async with store.connection(self._db, write=True) as conn:
            now = self._now()
            cas = users.c.password_hash == old_hash
            if not await store.update_user(conn, user_id, {**values, "updated_at": now}, cas):
                raise ValidationError("the password was changed meanwhile; try again")
            user = await self._reread(conn, user_id)
        self._changed(user_id)
        _log.info("user password changed", user_id=user_id)
        return user
