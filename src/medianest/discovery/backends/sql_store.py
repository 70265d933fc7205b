"""The SQL behind :class:`~medianest.discovery.backends.sql.SqlRegistry`.

Two tables (:mod:`medianest.database.schema`): ``service_instances`` holds one row per
instance with its definition as JSON, and ``service_changes`` is the change log watchers
poll, written in the same transaction as the change it describes.

Every writing transaction starts with :func:`begin_write`: on PostgreSQL it takes a
transaction-scoped advisory lock so that writers commit one at a time and ``seq`` values
become visible in increasing order (a poller reading ``seq > cursor`` can then never skip a
change committed late); on SQLite its first statement is a write, so the database lock is
taken before anything is read. It then purges registrations past their TTL and logs one
``expired`` change for each: the ``DELETE`` decides who reports an expiry, so two processes
never both report the same one.

Times are aware UTC datetimes; SQLite hands them back naive, :func:`utc` puts UTC back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, or_, select, text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.database.schema import service_changes, service_instances
from medianest.discovery.base import Change, ChangeKind, HealthState, Registration, ServiceInstance

WRITERS_LOCK_KEY = 0x6D6E646973  # "mndis": registry writers of one database, one at a time

_I = service_instances.c
_C = service_changes.c


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def alive(now: datetime) -> ColumnElement[bool]:
    """Rows whose TTL has not run out at ``now`` (expired rows are invisible to reads)."""
    return or_(_I.expires_at.is_(None), _I.expires_at > now)


def expiry(registration: Registration) -> datetime | None:
    if registration.ttl is None:
        return None
    return registration.renewed_at + timedelta(seconds=registration.ttl)


def row_values(registration: Registration) -> dict[str, Any]:
    """The ``service_instances`` columns of ``registration`` (all but ``revision``)."""
    instance = registration.instance
    return {
        "id": instance.id,
        "name": instance.name,
        "definition": instance.model_dump(mode="json"),
        "state": registration.state.value,
        "reason": registration.reason,
        "registered_at": registration.registered_at,
        "renewed_at": registration.renewed_at,
        "ttl": registration.ttl,
        "expires_at": expiry(registration),
    }


def from_row(row: RowMapping) -> Registration:
    return Registration(
        instance=ServiceInstance.model_validate(row["definition"]),
        state=HealthState(row["state"]),
        reason=row["reason"],
        registered_at=utc(row["registered_at"]),
        renewed_at=utc(row["renewed_at"]),
        ttl=row["ttl"],
    )


async def begin_write(conn: AsyncConnection, now: datetime) -> list[int]:
    """Serialise writers (see the module docstring) and purge expired rows.

    Returns the ``seq`` of each ``expired`` change logged.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITERS_LOCK_KEY})
    result = await conn.execute(
        delete(service_instances)
        .where(_I.expires_at.is_not(None), _I.expires_at <= now)
        .returning(*service_instances.c)
    )
    gone = sorted((from_row(row) for row in result.mappings()), key=lambda r: r.instance.id)
    return [await log_change(conn, "expired", registration, now) for registration in gone]


async def log_change(
    conn: AsyncConnection, kind: ChangeKind, registration: Registration, now: datetime
) -> int:
    """Append a change to the log; returns its ``seq``."""
    instance = registration.instance
    result = await conn.execute(
        insert(service_changes).values(
            instance_id=instance.id,
            name=instance.name,
            kind=kind,
            registration=registration.model_dump(mode="json"),
            at=now,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def fetch(conn: AsyncConnection, instance_id: str, now: datetime) -> RowMapping | None:
    result = await conn.execute(select(service_instances).where(_I.id == instance_id, alive(now)))
    return result.mappings().one_or_none()


async def fetch_all(conn: AsyncConnection, name: str | None, now: datetime) -> list[Registration]:
    query = select(service_instances).where(alive(now)).order_by(_I.name, _I.id)
    if name is not None:
        query = query.where(_I.name == name)
    result = await conn.execute(query)
    return [from_row(row) for row in result.mappings()]


async def any_expired(conn: AsyncConnection, now: datetime) -> bool:
    result = await conn.execute(
        select(_I.id).where(_I.expires_at.is_not(None), _I.expires_at <= now).limit(1)
    )
    return result.first() is not None


async def last_seq(conn: AsyncConnection) -> int:
    result = await conn.execute(select(func.max(_C.seq)))
    return int(result.scalar_one_or_none() or 0)


async def changes_after(
    conn: AsyncConnection, seq: int, limit: int = 500
) -> Sequence[tuple[int, Change]]:
    result = await conn.execute(
        select(service_changes).where(_C.seq > seq).order_by(_C.seq).limit(limit)
    )
    out: list[tuple[int, Change]] = []
    for row in result.mappings():
        data = row["registration"]
        registration = Registration.model_validate(data) if data is not None else None
        change = Change(row["kind"], row["instance_id"], row["name"], registration)
        out.append((int(row["seq"]), change))
    return out


async def prune_changes(conn: AsyncConnection, before: datetime) -> None:
    """Forget changes older than ``before`` (watchers poll far more often than that)."""
    await conn.execute(delete(service_changes).where(_C.at < before))
