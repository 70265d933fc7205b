"""What is stored about a person, and the SQL over the ``users`` table.

Driver errors become :class:`~medianest.errors.BackendError` in :func:`connection`, in one
place for the identity tables (users, sessions, signing keys). Times are stored in UTC and
given back aware (:func:`~medianest.security.apikeys_store.utc`).

Usernames are unique without regard to case: ``username_key`` holds the case-folded name
and carries the unique constraint, ``username`` keeps the spelling people chose.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from medianest.backends import mask_url
from medianest.database import Database
from medianest.database.engine import _reason
from medianest.database.schema import instance_metadata, users
from medianest.errors import BackendError, ValidationError
from medianest.security.apikeys_store import utc
from medianest.security.roles import Role

FIRST_ADMIN = "first_admin"
"""The ``instance_metadata`` key naming the first admin; its row also serialises changes
that could leave the hub without an enabled admin (see :func:`lock_admins`)."""


def username_key(username: str) -> str:
    """The form in which usernames are compared and kept unique."""
    return username.strip().casefold()


def check_username(username: str) -> str:
    """``username`` stripped, or :class:`ValidationError` unless 1 to 200 printable chars."""
    username = username.strip()
    if not username or len(username) > 200 or not username.isprintable():
        raise ValidationError(
            "a username is 1 to 200 printable characters", errors={"username": "invalid"}
        )
    return username


def role_of(value: Role | str) -> Role:
    """``value`` as a :class:`Role`, or :class:`ValidationError` naming the roles."""
    try:
        return Role(value)
    except ValueError:
        roles = ", ".join(role.value for role in Role)
        raise ValidationError(
            f"no role {value!r}: one of {roles}", errors={"role": "unknown"}
        ) from None


class User(BaseModel):
    """A person as the hub shows them: never their password hash nor their Plex token."""

    model_config = ConfigDict(frozen=True)

    id: str
    username: str
    display_name: str
    email: str | None = None
    role: Role
    plex_id: str | None = None
    oidc_issuer: str | None = None
    oidc_subject: str | None = None
    has_password: bool = False
    has_plex_token: bool = False
    must_change_password: bool = False
    disabled_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class StoredUser:
    """A row: the shown part plus the password hash and the Plex token's ciphertext."""

    user: User
    password_hash: str | None
    plex_token_enc: str | None

    def __repr__(self) -> str:
        return f"StoredUser({self.user!r})"


@contextlib.asynccontextmanager
async def connection(
    db: Database, *, write: bool = False, what: str = "identity store", conflicts: bool = False
) -> AsyncIterator[AsyncConnection]:
    """A connection (in a committed-on-exit transaction when ``write``); errors translated.

    With ``conflicts`` an :class:`IntegrityError` passes through untranslated, so that the
    caller can retry a transaction that lost a race on a unique key (or say what is missing).
    """
    try:
        async with db.begin() if write else db.connect() as conn:
            yield conn
    except IntegrityError as exc:
        if conflicts:
            raise
        raise _backend_error(db, what, exc) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise _backend_error(db, what, exc) from exc


def _backend_error(db: Database, what: str, exc: BaseException) -> BackendError:
    return BackendError(f"{what} failed: {_reason(exc)}", backend=mask_url(db.url))


async def insert_ignore(conn: AsyncConnection, table: Any, values: Mapping[str, Any]) -> bool:
    """Insert unless a row with the same key exists; whether this call inserted.

    On PostgreSQL a concurrent uncommitted insert of the same key makes this wait for that
    transaction: if it commits, nothing is inserted here; if it rolls back, this inserts.
    """
    dialect = conn.dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    result = await conn.execute(module.insert(table).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)


async def lock_admins(conn: AsyncConnection, now: datetime) -> bool:
    """Start a user-changing transaction: whether an admin was ever made.

    It writes the :data:`FIRST_ADMIN` row (when there is one), which takes that row's lock
    on PostgreSQL, so transactions that may remove an admin run one at a time and each
    counts the admins after the previous one committed. On SQLite the write takes the
    database's write lock before anything is read: a deferred transaction that read first
    could not upgrade to writing after another connection committed.
    """
    result = await conn.execute(
        update(instance_metadata)
        .where(instance_metadata.c.key == FIRST_ADMIN)
        .values(updated_at=now)
    )
    return bool(result.rowcount)


async def claim_first_admin(conn: AsyncConnection, user_id: str, now: datetime) -> bool:
    """Record ``user_id`` as the first admin unless one was recorded before."""
    values = {"key": FIRST_ADMIN, "value": user_id, "updated_at": now}
    return await insert_ignore(conn, instance_metadata, values)


def user_of(row: RowMapping | Mapping[str, Any]) -> StoredUser:
    user = User(
        id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        email=row["email"],
        role=Role(row["role"]),
        plex_id=row["plex_id"],
        oidc_issuer=row["oidc_issuer"],
        oidc_subject=row["oidc_subject"],
        has_password=row["password_hash"] is not None,
        has_plex_token=row["plex_token_enc"] is not None,
        must_change_password=bool(row["must_change_password"]),
        disabled_at=utc(row["disabled_at"]),
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
        last_login_at=utc(row["last_login_at"]),
    )
    return StoredUser(user, row["password_hash"], row["plex_token_enc"])


async def fetch_where(conn: AsyncConnection, condition: ColumnElement[bool]) -> StoredUser | None:
    result = await conn.execute(select(users).where(condition))
    row = result.mappings().one_or_none()
    return None if row is None else user_of(row)


async def fetch(conn: AsyncConnection, user_id: str) -> StoredUser | None:
    return await fetch_where(conn, users.c.id == user_id)


async def fetch_page(conn: AsyncConnection, offset: int, limit: int) -> Sequence[User]:
    query = select(users).order_by(users.c.created_at, users.c.id).offset(offset).limit(limit)
    result = await conn.execute(query)
    return [user_of(row).user for row in result.mappings()]


async def count(conn: AsyncConnection) -> int:
    result = await conn.execute(select(func.count()).select_from(users))
    return int(result.scalar_one())


async def enabled_admins(conn: AsyncConnection) -> int:
    result = await conn.execute(
        select(func.count())
        .select_from(users)
        .where(users.c.role == Role.ADMIN.value, users.c.disabled_at.is_(None))
    )
    return int(result.scalar_one())


async def free_username(conn: AsyncConnection, wanted: str, user_id: str | None = None) -> str:
    """``wanted`` if no other user has it, else ``wanted-2``, ``wanted-3``..."""
    base = wanted[:190]
    candidate, n = wanted, 1
    while True:
        owner = await conn.execute(
            select(users.c.id).where(users.c.username_key == username_key(candidate))
        )
        found = owner.scalar_one_or_none()
        if found is None or found == user_id:
            return candidate
        n += 1
        candidate = f"{base}-{n}"


async def insert_user(conn: AsyncConnection, values: Mapping[str, Any]) -> None:
    row = dict(values)
    row["username_key"] = username_key(row["username"])
    await conn.execute(insert(users).values(**row))


async def update_user(
    conn: AsyncConnection, user_id: str, values: Mapping[str, Any], *extra: ColumnElement[bool]
) -> bool:
    """Apply ``values`` to ``user_id`` (when ``extra`` conditions hold); whether it did."""
    row = dict(values)
    if "username" in row:
        row["username_key"] = username_key(row["username"])
    result = await conn.execute(update(users).where(users.c.id == user_id, *extra).values(**row))
    return bool(result.rowcount)
