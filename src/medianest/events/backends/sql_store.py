"""The SQL behind :class:`~medianest.events.backends.sql.SqlEventStore`.

Tables (:mod:`medianest.database.schema`, migration ``0006``): ``events`` (the log),
``event_streams`` (each stream's version), ``event_position`` (one row: the last position
handed out), ``event_snapshots`` and ``event_checkpoints``.

**Positions.** An append's transaction runs, in this order: :func:`begin_write`, lock and
read its stream's row (:func:`stream_version`), look up its event ids, check the expected
version, write the stream row, then :func:`claim_positions` -- ``UPDATE event_position SET
last = last + n RETURNING last`` -- insert the events and (PostgreSQL) ``pg_notify``. The
counter row stays locked until the transaction ends, so the next appender's ``UPDATE`` waits
for this commit and only then gets the following positions: positions are handed out in
commit order, and a rolled-back append gives its positions back (no gaps, unlike a
sequence, whose values are taken at ``nextval`` time, in no particular commit order, and
lost on rollback). PostgreSQL makes a commit visible before it releases the transaction's
locks, so when the next appender holds the row, every smaller position is already visible.

The price: appends to *different* streams serialise on that row for the tail of their
transaction (event inserts, notify, commit and its WAL flush), so one database takes about
one append per commit latency -- a few thousand appends per second on a local SSD, fewer
over a network. Batching events into one append amortises it; the stream checks and id
lookups run before the row is taken, in parallel across streams.

On SQLite there is one writer at a time anyway: :func:`begin_write` makes the first
statement a write so the database lock is taken before anything is read (a deferred
transaction that reads first could not upgrade to a writer once another one committed).

Times are aware UTC datetimes; SQLite hands them back naive, :func:`utc` puts UTC back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.database.schema import (
    event_checkpoints,
    event_position,
    event_snapshots,
    event_streams,
    events,
)
from medianest.errors import BackendError
from medianest.events.appending import PreparedEvent
from medianest.events.model import EventFilter, EventMetadata, RecordedEvent, Snapshot

CHANNEL = "medianest_events"
"""The PostgreSQL ``NOTIFY`` channel appends signal on (payload: the last position)."""

_E = events.c
_S = event_streams.c
_P = event_position.c
_N = event_snapshots.c
_C = event_checkpoints.c


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _upsert(conn: AsyncConnection, table: Any) -> Any:
    """The dialect's ``INSERT`` with ``ON CONFLICT`` support (PostgreSQL and SQLite spell it
    the same way)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


async def ensure_counter(conn: AsyncConnection) -> None:
    """Create the ``event_position`` row if missing (tables made without the migration)."""
    await conn.execute(_upsert(conn, event_position).values(id=1, last=0).on_conflict_do_nothing())


async def begin_write(conn: AsyncConnection) -> None:
    """On SQLite, take the database's write lock with the first statement (module doc)."""
    if conn.dialect.name == "sqlite":
        await conn.execute(update(event_position).where(_P.id == 1).values(last=_P.last))


async def stream_version(conn: AsyncConnection, stream_id: str, *, lock: bool = False) -> int:
    """The stream's version (0 = none); ``lock`` holds its row until the transaction ends."""
    query = select(_S.version).where(_S.stream_id == stream_id)
    if lock:
        query = query.with_for_update()
    found = (await conn.execute(query)).scalar_one_or_none()
    return int(found or 0)


async def set_stream_version(
    conn: AsyncConnection, stream_id: str, current: int, version: int
) -> None:
    """Move the stream row from ``current`` (0: create it) to ``version``.

    Creating a row another transaction is creating too raises ``IntegrityError`` (after
    that one commits): the caller retries and sees the stream as it now is.
    """
    if current == 0:
        await conn.execute(insert(event_streams).values(stream_id=stream_id, version=version))
    else:
        await conn.execute(
            update(event_streams).where(_S.stream_id == stream_id).values(version=version)
        )


async def claim_positions(conn: AsyncConnection, count: int) -> int:
    """Reserve ``count`` positions; returns the first. Holds the counter row until commit."""
    result = await conn.execute(
        update(event_position).where(_P.id == 1).values(last=_P.last + count).returning(_P.last)
    )
    last = result.scalar_one_or_none()
    if last is None:
        raise BackendError("event_position has no row: run the migrations (medianest migrate)")
    return int(last) - count + 1


async def insert_events(
    conn: AsyncConnection,
    stream_id: str,
    batch: Sequence[PreparedEvent],
    first_version: int,
    first_position: int,
    now: datetime,
) -> None:
    rows = [
        {
            "position": first_position + offset,
            "id": str(item.event.id),
            "stream_id": stream_id,
            "version": first_version + offset,
            "type": item.event.type,
            "schema_version": item.event.schema_version,
            "data": item.data,
            "metadata": item.metadata,
            "recorded_at": now,
        }
        for offset, item in enumerate(batch)
    ]
    await conn.execute(insert(events), rows)


async def notify(conn: AsyncConnection, position: int) -> None:
    """PostgreSQL: tell listeners at commit that the log grew (nothing on SQLite)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": str(position)},
        )


def from_row(row: RowMapping) -> RecordedEvent:
    return RecordedEvent(
        id=UUID(row["id"]),
        stream_id=row["stream_id"],
        version=int(row["version"]),
        position=int(row["position"]),
        type=row["type"],
        schema_version=int(row["schema_version"]),
        data=row["data"],
        metadata=EventMetadata.from_json(row["metadata"]),
        recorded_at=utc(row["recorded_at"]),
    )


async def events_by_ids(conn: AsyncConnection, ids: Sequence[UUID]) -> dict[UUID, RecordedEvent]:
    result = await conn.execute(select(events).where(_E.id.in_([str(i) for i in ids])))
    return {event.id: event for event in map(from_row, result.mappings())}


async def read_stream(
    conn: AsyncConnection,
    stream_id: str,
    from_version: int | None,
    limit: int | None,
    backwards: bool,
) -> list[RecordedEvent]:
    query = select(events).where(_E.stream_id == stream_id)
    if backwards:
        if from_version is not None:
            query = query.where(_E.version <= from_version)
        query = query.order_by(_E.version.desc())
    else:
        query = query.where(_E.version >= (from_version or 1)).order_by(_E.version)
    if limit is not None:
        query = query.limit(limit)
    result = await conn.execute(query)
    return [from_row(row) for row in result.mappings()]


async def read_all(
    conn: AsyncConnection, from_position: int, limit: int | None, event_filter: EventFilter
) -> list[RecordedEvent]:
    query = select(events).where(_E.position > from_position).order_by(_E.position)
    if event_filter.types:
        query = query.where(_E.type.in_(event_filter.types))
    if event_filter.stream_prefix:
        query = query.where(_E.stream_id.startswith(event_filter.stream_prefix, autoescape=True))
    if limit is not None:
        query = query.limit(limit)
    result = await conn.execute(query)
    return [from_row(row) for row in result.mappings()]


async def head_position(conn: AsyncConnection) -> int:
    """The last committed position: the counter, as committed (0 when nothing was written)."""
    found = (await conn.execute(select(_P.last).where(_P.id == 1))).scalar_one_or_none()
    if found is None:
        found = (await conn.execute(select(func.max(_E.position)))).scalar_one_or_none()
    return int(found or 0)


async def save_snapshot(conn: AsyncConnection, snapshot: Snapshot) -> None:
    """Upsert the stream's snapshot unless a newer version is stored already."""
    values = {
        "stream_id": snapshot.stream_id,
        "version": snapshot.version,
        "schema_version": snapshot.schema_version,
        "state": snapshot.state,
        "taken_at": snapshot.taken_at,
    }
    statement = _upsert(conn, event_snapshots).values(**values)
    excluded = statement.excluded
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[_N.stream_id],
            set_={k: excluded[k] for k in values if k != "stream_id"},
            where=_N.version <= excluded["version"],
        )
    )


async def load_snapshot(conn: AsyncConnection, stream_id: str) -> Snapshot | None:
    result = await conn.execute(select(event_snapshots).where(_N.stream_id == stream_id))
    row = result.mappings().one_or_none()
    if row is None:
        return None
    return Snapshot(
        stream_id=row["stream_id"],
        version=int(row["version"]),
        schema_version=int(row["schema_version"]),
        state=row["state"],
        taken_at=utc(row["taken_at"]),
    )


async def save_checkpoint(conn: AsyncConnection, name: str, position: int) -> None:
    """Store subscriber ``name``'s checkpoint on ``conn``, in the caller's transaction.

    A read model in the same database calls this in the transaction that updates it, so the
    model and its checkpoint move together: after a crash it resumes exactly where its last
    committed update left it, neither skipping nor applying an event twice.
    """
    statement = _upsert(conn, event_checkpoints).values(
        name=name, position=position, updated_at=datetime.now(UTC)
    )
    excluded = statement.excluded
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[_C.name],
            set_={"position": excluded["position"], "updated_at": excluded["updated_at"]},
        )
    )


async def load_checkpoint(conn: AsyncConnection, name: str) -> int:
    """Subscriber ``name``'s checkpoint (0 when it has none)."""
    found = (await conn.execute(select(_C.position).where(_C.name == name))).scalar_one_or_none()
    return int(found or 0)
