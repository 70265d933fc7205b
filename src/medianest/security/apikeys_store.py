"""What is stored about an API key, what may be, and the SQL over the ``api_keys`` table.

The table holds an HMAC of each key, never the key: see :mod:`medianest.security.apikeys`
for the scheme. Every time is stored in UTC; SQLite hands datetimes back without a zone, so
:func:`utc` puts UTC back on whatever the driver returns. Driver errors become
:class:`~medianest.errors.BackendError` here, in one place.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field
from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.backends import mask_url
from medianest.database import Database
from medianest.database.engine import _reason
from medianest.database.schema import api_keys
from medianest.errors import BackendError, ValidationError

KEY_PREFIX = "mn_"

_SCOPE = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")

KeyState = Literal["active", "expired", "revoked", "rotating", "replaced"]


def utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def validate_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """``scopes`` without duplicates, or :class:`ValidationError` naming the bad ones."""
    unique = tuple(dict.fromkeys(scopes))
    bad = [s for s in unique if not _SCOPE.fullmatch(s)]
    if bad:
        raise ValidationError(
            f"invalid scope(s) {', '.join(map(repr, bad))}: lower-case letters, digits and "
            "'_.:-', starting with a letter, at most 64 characters",
            errors={"scopes": "invalid scope name"},
        )
    return unique


def check_text(field: str, value: str) -> str:
    """``value`` stripped, or :class:`ValidationError` unless 1 to 200 printable characters."""
    value = value.strip()
    if not value or len(value) > 200 or not value.isprintable():
        raise ValidationError(
            f"{field} must be 1 to 200 printable characters", errors={field: "invalid"}
        )
    return value


class ApiKeyInfo(BaseModel):
    """Everything about an API key that may be shown: never the key itself nor its HMAC.

    ``prefix`` (``mn_<key_id>``) is how people recognise a key in lists and logs. After a
    rotation the old key carries ``replaced_by`` (the new key id) and ``overlap_until``, the
    end of the window in which it still works.
    """

    model_config = ConfigDict(frozen=True)

    key_id: str
    name: str
    owner: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    overlap_until: datetime | None = None
    replaced_by: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prefix(self) -> str:
        return f"{KEY_PREFIX}{self.key_id}"

    def state(self, now: datetime) -> KeyState:
        """``active``, ``rotating`` (replaced, still in its overlap window) or why it is dead."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        if self.overlap_until is not None:
            return "rotating" if now < self.overlap_until else "replaced"
        return "active"

    def usable(self, now: datetime) -> bool:
        """Whether a request presenting this key at ``now`` may be let in."""
        return self.state(now) in ("active", "rotating")


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A row: the shown part and the HMAC (hex) that a presented key must match."""

    info: ApiKeyInfo
    hmac: str

    def __repr__(self) -> str:
        return f"StoredKey({self.info!r})"


@contextlib.asynccontextmanager
async def connection(db: Database, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
    """A connection (in a committed-on-exit transaction when ``write``); errors translated."""
    try:
        async with db.begin() if write else db.connect() as conn:
            yield conn
    except (SQLAlchemyError, OSError) as exc:
        raise BackendError(
            f"API key store failed: {_reason(exc)}", backend=mask_url(db.url)
        ) from exc


def _info(row: RowMapping) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row["key_id"],
        name=row["name"],
        owner=row["owner"],
        scopes=tuple(row["scopes"] or ()),
        created_at=utc(row["created_at"]),
        expires_at=utc(row["expires_at"]),
        last_used_at=utc(row["last_used_at"]),
        revoked_at=utc(row["revoked_at"]),
        overlap_until=utc(row["overlap_until"]),
        replaced_by=row["replaced_by"],
    )


async def insert_key(conn: AsyncConnection, info: ApiKeyInfo, digest: str) -> None:
    values: dict[str, Any] = info.model_dump(exclude={"prefix"})
    values["scopes"] = list(info.scopes)
    await conn.execute(insert(api_keys).values(**values, hmac=digest))


async def fetch(conn: AsyncConnection, key_id: str) -> StoredKey | None:
    result = await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))
    row = result.mappings().one_or_none()
    return None if row is None else StoredKey(_info(row), row["hmac"])


async def fetch_all(
    conn: AsyncConnection, owner: str | None, include_revoked: bool
) -> Sequence[ApiKeyInfo]:
    query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
    if owner is not None:
        query = query.where(api_keys.c.owner == owner)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    result = await conn.execute(query)
    return [_info(row) for row in result.mappings()]


async def mark_revoked(conn: AsyncConnection, key_id: str, now: datetime) -> None:
    await conn.execute(
        update(api_keys)
        .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def mark_replaced(
    conn: AsyncConnection, key_id: str, replaced_by: str, overlap_until: datetime
) -> bool:
    """Point ``key_id`` at its successor unless someone rotated or revoked it first."""
    result = await conn.execute(
        update(api_keys)
        .where(
            api_keys.c.key_id == key_id,
            api_keys.c.replaced_by.is_(None),
            api_keys.c.revoked_at.is_(None),
        )
        .values(replaced_by=replaced_by, overlap_until=overlap_until)
    )
    return bool(result.rowcount)


async def touch(conn: AsyncConnection, key_id: str, now: datetime, since: datetime) -> None:
    """Set ``last_used_at`` unless another process already set it after ``since``."""
    await conn.execute(
        update(api_keys)
        .where(
            api_keys.c.key_id == key_id,
            or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= since),
        )
        .values(last_used_at=now)
    )
