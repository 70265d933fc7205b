"""Sign-in sessions: an opaque token for the browser (cookie) or an app (bearer refresh token).

:meth:`SessionService.create` returns the token once; the ``sessions`` table keeps its
SHA-256 (the token holds 256 random bits, so a hash is enough to make a stolen copy of the
database useless), and the session's public ``id`` names it in lists and in the ``sid`` of
access tokens. Tokens look like ``mns_<43 characters>`` so that people, secret scanners and
:func:`medianest.security.apikeys.extract_api_key` tell them apart from API keys.

Expiry slides: each use moves ``expires_at`` to ``now + idle`` (14 days by default), never
past ``created_at + max_age`` (90 days). The write happens at most once a minute per
session, whichever instance sees the use.

:meth:`~SessionService.resolve` remembers answers for ``cache_ttl`` seconds (5 by default)
and makes one query for a burst of requests presenting the same token. Revoking a session,
revoking all of a user's sessions, and any change to a user made through the
:class:`~medianest.security.users.UserService` given to the constructor (disabling, role
change...) drop the cached answers on this instance at once; other instances notice within
``cache_ttl``. Every refusal says only "invalid or expired session".
"""

from __future__ import annotations

import asyncio
import builtins
import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from medianest.config.identity import IdentitySettings
from medianest.database import Database
from medianest.database.schema import sessions
from medianest.errors import AuthenticationError, BackendError, NotFoundError, ValidationError
from medianest.observability import get_logger
from medianest.security import users_store
from medianest.security.sessions_store import (
    TOKEN_PREFIX,
    Session,
    SessionKind,
    fetch_with_user,
    looks_like_session_token,
    session_of,
    token_hash,
)
from medianest.security.users import UserService
from medianest.security.users_store import User

__all__ = [
    "TOKEN_PREFIX",
    "TOUCH_INTERVAL",
    "Session",
    "SessionKind",
    "SessionService",
    "looks_like_session_token",
    "token_hash",
]

_log = get_logger("medianest.security.sessions")

TOUCH_INTERVAL = timedelta(minutes=1)
_REJECTED = "invalid or expired session"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Entry:
    session: Session
    user: User
    at: datetime


class SessionService:
    """Create, resolve, slide, list and revoke sessions (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        users: UserService | None = None,
        *,
        idle: timedelta = timedelta(days=14),
        max_age: timedelta = timedelta(days=90),
        clock: Callable[[], datetime] | None = None,
        cache_ttl: float = 5.0,
        cache_size: int = 10_000,
    ) -> None:
        if idle <= timedelta(0) or max_age < idle:
            raise ValueError("idle must be positive and max_age at least idle")
        self._db = db
        self._idle, self._max_age = idle, max_age
        self._clock = clock or _utcnow
        self._ttl = timedelta(seconds=cache_ttl)
        self._cache_size = cache_size
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[tuple[Session, User] | None]] = {}
        self._generation = 0
        if users is not None:
            users.add_listener(self.invalidate_user)

    @classmethod
    def from_settings(
        cls,
        db: Database,
        users: UserService | None,
        identity: IdentitySettings,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> SessionService:
        return cls(
            db,
            users,
            idle=timedelta(days=identity.session_idle_days),
            max_age=timedelta(days=identity.session_max_days),
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"SessionService({self._db!r}, idle={self._idle}, max_age={self._max_age})"

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def _connection(self, write: bool = False) -> AbstractAsyncContextManager[AsyncConnection]:
        return users_store.connection(self._db, write=write, what="session store")

    async def create(
        self,
        user: User,
        kind: SessionKind,
        *,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> tuple[str, Session]:
        """A new session for ``user``: the token (its only copy) and the session."""
        if kind not in ("cookie", "bearer"):
            raise ValidationError("a session is a cookie or a bearer session")
        if user.disabled:
            raise AuthenticationError("this account is disabled")
        now = self._now()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        session = Session(
            id=secrets.token_urlsafe(16),
            user_id=user.id,
            kind=kind,
            created_at=now,
            last_seen_at=now,
            expires_at=min(now + self._idle, now + self._max_age),
            user_agent=(user_agent or "")[:500] or None,
            ip=(ip or "")[:64] or None,
        )
        try:
            async with users_store.connection(
                self._db, write=True, what="session store", conflicts=True
            ) as conn:
                await conn.execute(
                    insert(sessions).values(**session.model_dump(), token_hash=token_hash(token))
                )
        except IntegrityError:
            raise NotFoundError(f"no user {user.id!r}") from None
        _log.info("session created", session_id=session.id, user_id=user.id, kind=kind)
        return token, session

    async def resolve(self, token: str) -> tuple[Session, User]:
        """The session of ``token`` and its user, or :class:`AuthenticationError` (unknown,
        revoked, expired, user disabled). Each use slides the expiry."""
        if not looks_like_session_token(token):
            raise self._rejected(None, "malformed")
        digest = token_hash(token)
        return await self._resolve("t:" + digest, sessions.c.token_hash == digest)

    async def resolve_id(self, session_id: str) -> tuple[Session, User]:
        """Like :meth:`resolve`, by the session id (the ``sid`` of an access token)."""
        if not 1 <= len(session_id) <= 64:
            raise self._rejected(None, "malformed id")
        return await self._resolve("i:" + session_id, sessions.c.id == session_id)

    async def _resolve(self, key: str, where: ColumnElement[bool]) -> tuple[Session, User]:
        now = self._now()
        cached = self._cache.get(key)
        if cached is not None and timedelta(0) <= now - cached.at < self._ttl:
            found: tuple[Session, User] | None = (cached.session, cached.user)
            fetched_at = cached.at
        else:
            generation = self._generation
            found = await self._load_once(key, where)
            fetched_at = now
            if found is not None and generation == self._generation:
                self._remember(key, _Entry(found[0], found[1], fetched_at))
        if found is None:
            raise self._rejected(None, "unknown")
        session, user = found
        reason = (
            "revoked"
            if session.revoked_at is not None
            else "expired"
            if now >= session.expires_at or now >= session.created_at + self._max_age
            else "user disabled"
            if user.disabled
            else None
        )
        if reason is not None:
            self._cache.pop(key, None)
            raise self._rejected(session.id, reason)
        if now - session.last_seen_at >= TOUCH_INTERVAL:
            session = await self._slide(session, now)
            if key in self._cache:
                self._cache[key] = _Entry(session, user, fetched_at)
        return session, user

    async def _load_once(self, key: str, where: ColumnElement[bool]) -> tuple[Session, User] | None:
        """One query per key however many callers ask at once; a caller that gives up
        (cancelled) does not cancel the query for the others."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(where))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(task)

    def _landed(self, key: str, task: asyncio.Task[tuple[Session, User] | None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()

    async def _load(self, where: ColumnElement[bool]) -> tuple[Session, User] | None:
        async with self._connection() as conn:
            return await fetch_with_user(conn, where)

    async def _slide(self, session: Session, now: datetime) -> Session:
        expires_at = min(now + self._idle, session.created_at + self._max_age)
        try:
            async with self._connection(write=True) as conn:
                await conn.execute(
                    update(sessions)
                    .where(
                        sessions.c.id == session.id,
                        sessions.c.revoked_at.is_(None),
                        sessions.c.last_seen_at <= now - TOUCH_INTERVAL,
                    )
                    .values(last_seen_at=now, expires_at=expires_at)
                )
        except BackendError as exc:
            _log.warning("session use not recorded", session_id=session.id, error=exc.message)
        return session.model_copy(update={"last_seen_at": now, "expires_at": expires_at})

    def _rejected(self, session_id: str | None, reason: str) -> AuthenticationError:
        _log.info("session rejected", session_id=session_id, reason=reason)
        return AuthenticationError(_REJECTED)

    def _remember(self, key: str, entry: _Entry) -> None:
        self._cache.pop(key, None)
        while len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = entry

    def _forget(self, match: Callable[[_Entry], bool]) -> None:
        self._generation += 1
        self._inflight.clear()
        for key in [key for key, entry in self._cache.items() if match(entry)]:
            del self._cache[key]

    def invalidate(self, session_id: str) -> None:
        """Forget cached answers about ``session_id`` (revoked elsewhere)."""
        self._forget(lambda entry: entry.session.id == session_id)

    def invalidate_user(self, user_id: str) -> None:
        """Forget cached answers about every session of ``user_id`` (the user changed)."""
        self._forget(lambda entry: entry.user.id == user_id)

    async def revoke(self, session_id: str) -> bool:
        """Revoke one session at once (idempotent); whether it was not revoked before."""
        async with self._connection(write=True) as conn:
            result = await conn.execute(
                update(sessions)
                .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )
        self.invalidate(session_id)
        _log.info("session revoked", session_id=session_id)
        return bool(result.rowcount)

    async def revoke_all(self, user_id: str, *, except_session: str | None = None) -> int:
        """Revoke every session of ``user_id`` (but ``except_session``); how many."""
        conditions = [sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None)]
        if except_session is not None:
            conditions.append(sessions.c.id != except_session)
        async with self._connection(write=True) as conn:
            result = await conn.execute(
                update(sessions).where(*conditions).values(revoked_at=self._now())
            )
        self._forget(lambda entry: entry.user.id == user_id and entry.session.id != except_session)
        _log.info("sessions revoked", user_id=user_id, count=result.rowcount)
        return int(result.rowcount)

    async def list_for_user(
        self, user_id: str, *, include_inactive: bool = False
    ) -> builtins.list[Session]:
        """The user's sessions, newest first; revoked and expired ones only if asked."""
        query = (
            select(sessions)
            .where(sessions.c.user_id == user_id)
            .order_by(sessions.c.created_at.desc(), sessions.c.id)
        )
        if not include_inactive:
            query = query.where(
                sessions.c.revoked_at.is_(None), sessions.c.expires_at > self._now()
            )
        async with self._connection() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [session_of(row) for row in rows]

    async def prune(self, older_than: timedelta = timedelta(days=30)) -> int:
        """Delete sessions expired or revoked more than ``older_than`` ago; how many."""
        cutoff = self._now() - older_than
        async with self._connection(write=True) as conn:
            result = await conn.execute(
                sessions.delete().where(
                    (sessions.c.expires_at < cutoff) | (sessions.c.revoked_at < cutoff)
                )
            )
        return int(result.rowcount)
