"""The SQL behind :class:`~medianest.events.backends.sql.SqlEventStore`.

Tables (:mod:`medianest.database.schema`, migration ``0006``): ``events`` (the log),
``event_streams`` (each stream's version), ``event_position`` (one row: the last position
handed out), ``event_snapshots`` and ``event_checkpoints``.

**Positions.** An append's transaction (a group of appends, see
:mod:`~medianest.events.backends.sql`) runs, in this order: :func:`begin_write`, lock and read
its streams' rows (:func:`stream_versions`), check the expected versions (the event ids
are looked up, :func:`events_by_ids`, only when one does not fit or after the unique ``id``
refused a write: then an append may be a retry), write the stream rows, then
:func:`claim_positions` -- ``UPDATE event_position SET last = last + n RETURNING last``, with
``pg_notify`` on PostgreSQL -- and insert the events. The counter row stays locked until the
transaction ends, so the next appender's ``UPDATE`` waits for this commit and only then gets
the following positions: positions are handed out in commit order, and a rolled-back append
gives its positions back (no gaps, unlike a sequence, whose values are taken at ``nextval``
time, in no particular commit order, and lost on rollback). PostgreSQL makes a commit
visible before it releases the transaction's locks, so when the next appender holds the
row, every smaller position is already visible.

The price: transactions serialise on that row for their tail (event inserts, commit and its
WAL flush), so one database takes about one transaction per commit latency. A store object
puts all its concurrent appends into one transaction (group commit), and batching events
into one append amortises it too; the stream checks run before the row is taken, in
parallel across processes.

On SQLite there is one writer at a time anyway: :func:`begin_write` makes the first
statement a write so the database lock is taken before anything is read (a deferred
transaction that reads first could not upgrade to a writer once another one committed).
On a database file the store runs these statements, in this order, in its SQLite writer
thread instead (:mod:`.sql_sqlite`, ``BEGIN IMMEDIATE``); the functions here serve
PostgreSQL and SQLite in memory.

Times are aware UTC datetimes; SQLite hands them back naive, :func:`utc` puts UTC back.
Inserting and reading events runs on the driver connection (:mod:`.sql_raw`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Text, bindparam, cast, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.database.schema import (
    event_checkpoints,
    event_position,
    event_snapshots,
    event_streams,
    events,
)
from medianest.errors import BackendError
from medianest.events.backends.sql_raw import Segment, driver_of
from medianest.events.model import RecordedEvent, Snapshot

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


async def stream_versions(conn: AsyncConnection, stream_ids: Iterable[str]) -> dict[str, int]:
    """The versions of the streams that exist among ``stream_ids``, their rows locked until
    the transaction ends (in one order, so that two appenders cannot deadlock)."""
    query = (
        select(_S.stream_id, _S.version)
        .where(_S.stream_id.in_(sorted(set(stream_ids))))
        .order_by(_S.stream_id)
        .with_for_update()
    )
    return {stream_id: int(version) for stream_id, version in await conn.execute(query)}


async def set_stream_versions(
    conn: AsyncConnection, created: dict[str, int], moved: dict[str, int]
) -> None:
    """Create the ``created`` stream rows and move the ``moved`` ones to their new versions.

    Creating a row another transaction is creating too raises ``IntegrityError`` (after
    that one commits): the caller retries and sees the stream as it now is.
    """
    if created:
        rows = [{"stream_id": s, "version": v} for s, v in created.items()]
        await conn.execute(insert(event_streams), rows)
    if moved:
        await conn.execute(
            update(event_streams)
            .where(_S.stream_id == bindparam("sid"))
            .values(version=bindparam("v")),
            [{"sid": s, "v": v} for s, v in moved.items()],
        )


async def claim_positions(conn: AsyncConnection, count: int) -> int:
    """Reserve ``count`` positions; returns the first. Holds the counter row until commit.

    On PostgreSQL the same statement calls ``pg_notify`` (delivered to listeners at commit,
    payload: the last position), which saves a round trip per append.
    """
    claim = update(event_position).where(_P.id == 1).values(last=_P.last + count)
    if conn.dialect.name == "postgresql":
        claim = claim.returning(_P.last, func.pg_notify(CHANNEL, cast(_P.last, Text)))
    else:
        claim = claim.returning(_P.last)
    last = (await conn.execute(claim)).scalar_one_or_none()
    if last is None:
        raise BackendError("event_position has no row: run the migrations (medianest migrate)")
    return int(last) - count + 1


async def insert_events(
    conn: AsyncConnection, segments: Sequence[Segment], first_position: int, now: datetime
) -> None:
    """Insert the segments' events at consecutive positions from ``first_position``, in
    ``conn``'s transaction, on its driver connection (:mod:`.sql_raw`)."""
    await (await driver_of(conn)).insert_events(segments, first_position, now)


async def events_by_ids(conn: AsyncConnection, ids: Sequence[UUID]) -> dict[UUID, RecordedEvent]:
    """The stored events among ``ids``, in ``conn``'s transaction."""
    found = await (await driver_of(conn)).events_by_ids(ids)
    return {event.id: event for event in found}


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
