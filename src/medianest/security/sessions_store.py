"""What is stored about a session, and the SQL that reads a session with its user.

The ``sessions`` table keeps the SHA-256 of each session token (:func:`token_hash`), never
the token: see :mod:`medianest.security.sessions`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from medianest.database.schema import sessions, users
from medianest.security.apikeys_store import utc
from medianest.security.users_store import User, user_of

TOKEN_PREFIX = "mns_"  # noqa: S105 - a prefix, not a secret
SessionKind = Literal["cookie", "bearer"]
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def token_hash(token: str) -> str:
    """What the table keeps of a session token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_session_token(text: str) -> bool:
    """Whether ``text`` has the shape of a session token (no database needed)."""
    body = text[len(TOKEN_PREFIX) :]
    return text.startswith(TOKEN_PREFIX) and len(body) == 43 and set(body) <= _TOKEN_CHARS


class Session(BaseModel):
    """A session as it may be shown: never its token."""

    model_config = ConfigDict(frozen=True)

    id: str
    user_id: str
    kind: SessionKind
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    user_agent: str | None = None
    ip: str | None = None

    def active(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and now < self.expires_at


def session_of(row: RowMapping) -> Session:
    return Session(
        id=row["id"],
        user_id=row["user_id"],
        kind=row["kind"],
        created_at=utc(row["created_at"]),
        last_seen_at=utc(row["last_seen_at"]),
        expires_at=utc(row["expires_at"]),
        revoked_at=utc(row["revoked_at"]),
        user_agent=row["user_agent"],
        ip=row["ip"],
    )


async def fetch_with_user(
    conn: AsyncConnection, where: ColumnElement[bool]
) -> tuple[Session, User] | None:
    """The session matching ``where`` and its user, in one query."""
    query = (
        select(sessions, *(column.label(f"u__{column.name}") for column in users.c))
        .join(users, users.c.id == sessions.c.user_id)
        .where(where)
    )
    row = (await conn.execute(query)).mappings().one_or_none()
    if row is None:
        return None
    user_row = {column.name: row[f"u__{column.name}"] for column in users.c}
    return session_of(row), user_of(user_row).user
