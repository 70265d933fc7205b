"""People: local accounts, Plex and OIDC sign-ins, roles, and the rules that keep an admin.

:class:`UserService` owns the ``users`` table. People arrive three ways: a local account
(:meth:`~UserService.create_local`, argon2id password), a Plex sign-in
(:meth:`~UserService.upsert_plex`, keyed by the plex.tv account id, the Plex token kept
encrypted by the :class:`~medianest.security.vault.Vault`), or an OIDC sign-in
(:meth:`~UserService.upsert_oidc`, keyed by issuer and subject; never linked to another
account by e-mail, which would let an identity provider take over accounts).

**The first admin.** Unless a Plex account is configured as the admin
(``identity.admin_plex_username``), the first person created or signing in becomes admin.
The decision is an insert of the ``first_admin`` row of ``instance_metadata`` in the same
transaction as the new user: the primary key lets one transaction win however many
processes race, and a losing transaction that rolls back leaves the claim to the next.
The configured Plex admin is made admin each time it signs in.

Finding and managing people (roles, disabling, passwords) and the rules that keep an
admin live in :mod:`medianest.security.users_accounts`; an identity provider's role mapping
never demotes the last enabled admin either.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.config.identity import IdentitySettings
from medianest.database import Database
from medianest.database.schema import users
from medianest.errors import AuthenticationError, ValidationError
from medianest.observability import get_logger
from medianest.security import users_store as store
from medianest.security.passwords import Passwords
from medianest.security.roles import Role
from medianest.security.users_accounts import UserAccounts
from medianest.security.users_store import User, check_username, username_key
from medianest.security.vault import Vault

__all__ = ["User", "UserAccounts", "UserService", "plex_token_context"]

_log = get_logger("medianest.security.users")
_BAD_LOGIN = "invalid username or password"


def plex_token_context(user_id: str) -> str:
    """The vault context binding a Plex token to its user."""
    return f"plex_token:{user_id}"


class UserService(UserAccounts):
    """People in the main database: everything of :class:`UserAccounts`, plus creating
    them and recording their sign-ins."""

    @classmethod
    def from_settings(
        cls,
        db: Database,
        vault: Vault,
        identity: IdentitySettings,
        *,
        passwords: Passwords | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> UserService:
        return cls(
            db,
            vault,
            passwords=passwords or Passwords(min_length=identity.password_min_length),
            admin_plex=identity.admin_plex_username,
            default_role=identity.default_role,
            clock=clock,
        )

    async def _initial_role(
        self, conn: AsyncConnection, user_id: str, requested: Role | None, marker: bool
    ) -> Role:
        role = requested or self._default_role
        if role is Role.ADMIN or (self._first_user_admin and not marker):
            claimed = await store.claim_first_admin(conn, user_id, self._now())
            if claimed and self._first_user_admin:
                _log.info("first user made admin", user_id=user_id)
                role = Role.ADMIN
        return role

    # --- creating and signing in ----------------------------------------------------------

    async def create_local(
        self,
        username: str,
        password: str,
        *,
        display_name: str | None = None,
        email: str | None = None,
        role: Role | str | None = None,
        must_change_password: bool = True,
    ) -> User:
        """A local account; ``must_change_password`` asks for a new password at sign-in."""
        username = check_username(username)
        self.passwords.check_policy(password, username)
        hashed = await self.passwords.hash(password)
        requested = store.role_of(role) if role is not None else None

        async def work(conn: AsyncConnection) -> User:
            now = self._now()
            marker = await store.lock_admins(conn, now)
            if await store.fetch_where(conn, users.c.username_key == username_key(username)):
                raise ValidationError(
                    f"the username {username!r} is taken", errors={"username": "taken"}
                )
            user_id = str(uuid.uuid4())
            await store.insert_user(
                conn,
                {
                    "id": user_id,
                    "username": username,
                    "display_name": _text(display_name) or username,
                    "email": _text(email),
                    "role": (await self._initial_role(conn, user_id, requested, marker)).value,
                    "password_hash": hashed,
                    "must_change_password": must_change_password,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            return await self._reread(conn, user_id)

        user = await self._write(work)
        _log.info("local user created", user_id=user.id, username=user.username, role=user.role)
        return user

    def _is_admin_plex(self, plex_id: str, username: str) -> bool:
        """Digits name the account id, anything else the username: a username that looks
        like the owner's account id must not make its holder admin."""
        if self._admin_plex is None:
            return False
        if self._admin_plex.isdigit():
            return plex_id == self._admin_plex
        return username.casefold() == self._admin_plex

    async def upsert_plex(
        self,
        plex_id: str | int,
        username: str,
        *,
        email: str | None = None,
        display_name: str | None = None,
        token: str | None = None,
    ) -> tuple[User, bool]:
        """Record a Plex sign-in; the user and whether they are new. A disabled user stays
        disabled: the caller must refuse the sign-in (sessions refuse them anyway)."""
        plex_id = str(plex_id).strip()
        if not plex_id.isdigit() or len(plex_id) > 32:
            raise ValidationError("a plex.tv account id is digits", errors={"plex_id": "invalid"})
        username = check_username(username)
        configured = self._is_admin_plex(plex_id, username)
        fields = {"email": _text(email), "display_name": _text(display_name) or username}
        return await self._upsert(
            users.c.plex_id == plex_id,
            {"plex_id": plex_id},
            username,
            fields,
            Role.ADMIN if configured else None,
            promote_only=True,
            token=token,
        )

    async def upsert_oidc(
        self,
        issuer: str,
        subject: str,
        claims: Mapping[str, Any],
        *,
        role: Role | str | None = None,
    ) -> tuple[User, bool]:
        """Record an OIDC sign-in; ``role`` (from the provider's role mapping, ``None`` when
        there is none) is applied at every sign-in, except that it never demotes the last
        enabled admin."""
        if not issuer or not subject or len(issuer) > 500 or len(subject) > 255:
            raise ValidationError("an OIDC identity needs an issuer and a subject")
        username = check_username(
            next(
                (
                    str(claims[name])
                    for name in ("preferred_username", "email", "nickname")
                    if isinstance(claims.get(name), str) and str(claims[name]).strip()
                ),
                subject,
            )[:200]
        )
        fields = {
            "email": _text(claims.get("email")),
            "display_name": _text(claims.get("name")) or username,
        }
        where = (users.c.oidc_issuer == issuer) & (users.c.oidc_subject == subject)
        key = {"oidc_issuer": issuer, "oidc_subject": subject}
        wanted = store.role_of(role) if role is not None else None
        return await self._upsert(where, key, username, fields, wanted, promote_only=False)

    async def _upsert(
        self,
        where: Any,
        key: Mapping[str, Any],
        username: str,
        fields: Mapping[str, Any],
        role: Role | None,
        *,
        promote_only: bool,
        token: str | None = None,
    ) -> tuple[User, bool]:
        async def work(conn: AsyncConnection) -> tuple[User, bool]:
            now = self._now()
            marker = await store.lock_admins(conn, now)
            found = await store.fetch_where(conn, where)
            given = {name: value for name, value in fields.items() if value is not None}
            values: dict[str, Any] = {**given, "last_login_at": now, "updated_at": now}
            if found is None:
                user_id = str(uuid.uuid4())
                values["id"] = user_id
                values["username"] = await store.free_username(conn, username)
                values["role"] = (await self._initial_role(conn, user_id, role, marker)).value
                values["created_at"] = now
            else:
                user_id = found.user.id
                renamed = username_key(username) != username_key(found.user.username)
                if renamed and await store.free_username(conn, username, user_id) == username:
                    values["username"] = username
                new_role = await self._role_at_sign_in(conn, found.user, role, promote_only)
                if new_role is not found.user.role:
                    values["role"] = new_role.value
            if token is not None:
                values["plex_token_enc"] = self._vault.encrypt(token, plex_token_context(user_id))
            if found is None:
                await store.insert_user(conn, {**key, **values})
            else:
                await store.update_user(conn, user_id, values)
            return await self._reread(conn, user_id), found is None

        user, created = await self._write(work)
        if not created:
            self._changed(user.id)
        _log.info("user signed in", user_id=user.id, created=created, role=user.role)
        return user, created

    async def _role_at_sign_in(
        self, conn: AsyncConnection, user: User, role: Role | None, promote_only: bool
    ) -> Role:
        if role is None or role is user.role or (promote_only and role is not Role.ADMIN):
            return user.role
        if role is Role.ADMIN:
            await store.claim_first_admin(conn, user.id, self._now())
            return role
        if user.is_admin and not user.disabled and await store.enabled_admins(conn) <= 1:
            _log.warning("role mapping would demote the last admin; kept", user_id=user.id)
            return user.role
        return role

    async def authenticate(self, username: str, password: str) -> User:
        """The local user ``username`` if ``password`` is theirs and they are enabled, else
        :class:`AuthenticationError` with one message for every reason."""
        async with store.connection(self._db) as conn:
            found = await store.fetch_where(conn, users.c.username_key == username_key(username))
        if found is None or found.password_hash is None:
            await self.passwords.verify_nothing(password)
            raise AuthenticationError(_BAD_LOGIN)
        if not await self.passwords.verify(found.password_hash, password) or found.user.disabled:
            _log.info("local sign-in refused", user_id=found.user.id)
            raise AuthenticationError(_BAD_LOGIN)
        now = self._now()
        values: dict[str, Any] = {"last_login_at": now}
        if self.passwords.needs_rehash(found.password_hash):
            values["password_hash"] = await self.passwords.hash(password)
        async with store.connection(self._db, write=True) as conn:
            await store.update_user(
                conn, found.user.id, values, users.c.password_hash == found.password_hash
            )
            return await self._reread(conn, found.user.id)

    async def plex_token(self, user: User | str) -> str | None:
        """The user's Plex token in clear (``None`` if none is stored)."""
        user_id = user if isinstance(user, str) else user.id
        stored = await self._get(users.c.id == user_id, repr(user_id))
        if stored.plex_token_enc is None:
            return None
        return self._vault.decrypt(stored.plex_token_enc, plex_token_context(user_id))

    async def reencrypt_tokens(self, vault: Vault | None = None) -> int:
        """Re-encrypt every Plex token not under ``vault``'s (default: this service's) first
        key; how many were. Safe to run in several processes at once, and again."""
        vault = vault or self._vault
        async with store.connection(self._db) as conn:
            rows = (
                await conn.execute(
                    select(users.c.id, users.c.plex_token_enc).where(
                        users.c.plex_token_enc.is_not(None)
                    )
                )
            ).all()
        done = 0
        for user_id, old in rows:
            if not vault.needs_reencrypt(old):
                continue
            new = vault.reencrypt(old, plex_token_context(user_id))
            async with store.connection(self._db, write=True) as conn:
                cas = users.c.plex_token_enc == old
                done += await store.update_user(conn, user_id, {"plex_token_enc": new}, cas)
        _log.info("plex tokens re-encrypted", count=done, key_id=vault.primary_key_id)
        return done


def _text(value: object) -> str | None:
    """``value`` stripped and cut to 200 characters, or ``None`` when not a non-empty str."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:200]
