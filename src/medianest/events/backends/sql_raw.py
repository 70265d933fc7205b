"""The event store's hot statements, run on the driver connection under SQLAlchemy.

Inserting events and reading them are where an event store spends its time, and there
SQLAlchemy's per-row parameter and result processing (JSON serialised again, datetimes
formatted and parsed, one ``dict`` per row) cost more than the database itself
(``bench/event_store.py``). These statements therefore run on the driver's own connection
(aiosqlite or asyncpg): the pooled one of a SQLAlchemy connection, inside its transaction
(:func:`driver_of`), or a connection the store keeps for its reads. The JSON columns are
written as the text the append's validation produced and read back as text, which
:class:`~medianest.events.model.RecordedEvent` decodes when it is used.

The SQL is the same on both databases but for placeholders (``?`` / ``$n``), how a list
is passed (``IN (?, ?)`` / ``= ANY($1)``), PostgreSQL's ``::text`` for JSON read as text
and one ``INSERT ... SELECT FROM unnest(...)`` for a whole batch of events there (one
statement instead of one execution per row).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.events.appending import PreparedEvent
from medianest.events.model import EventFilter, RecordedEvent

Segment = tuple[str, Sequence[PreparedEvent], int]
"""Events of one append: the stream, the events, the version of the first one."""

_COLUMNS = "position, id, stream_id, version, type, schema_version, {data}, {meta}, recorded_at"
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy stores a ``DateTime`` on SQLite (naive, UTC here); written the same way."""

_PG_CONFLICT: tuple[type[Exception], ...] = ()
_PG_UNAVAILABLE: tuple[type[Exception], ...] = ()
_PG_ERRORS: tuple[type[Exception], ...] = ()
_PG_CANCELLED: tuple[type[Exception], ...] = ()
try:
    import asyncpg
except ImportError:  # without the "postgres" extra there is only SQLite
    pass
else:
    _PG_CONFLICT = (asyncpg.IntegrityConstraintViolationError,)
    _PG_UNAVAILABLE = (
        asyncpg.InterfaceError,
        asyncpg.PostgresConnectionError,
        asyncpg.OperatorInterventionError,
        # a protocol left mid-operation when the server ended the session between reads
        # ("cannot switch to state ...; another operation is in progress")
        asyncpg.exceptions.InternalClientError,
    )
    _PG_ERRORS = (asyncpg.PostgresError,)
    _PG_CANCELLED = (asyncpg.QueryCanceledError,)

CONFLICT_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, *_PG_CONFLICT)
"""Driver errors meaning a unique constraint refused a write."""
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (OSError, *_PG_UNAVAILABLE)
"""Driver errors meaning the connection is gone or unusable, or the server is going (a lost
connection, an administrator's shutdown or ``pg_terminate_backend``)."""
CANCELLED_ERRORS: tuple[type[Exception], ...] = _PG_CANCELLED
"""Unavailable errors that say the statement, not the connection, was stopped (a server
``statement_timeout``, ``pg_cancel_backend``): running it again would only take as long."""
DRIVER_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, *_PG_ERRORS, *UNAVAILABLE_ERRORS)
"""Every error a driver statement may raise."""


class Driver:
    """A driver connection (``aiosqlite.Connection`` or ``asyncpg.Connection``) and the
    dialect's spelling of the store's statements."""

    __slots__ = ("conn", "postgres")

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.postgres = dialect == "postgresql"

    async def fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """All rows of one query, in one call to the driver."""
        if self.postgres:
            return await self.conn.fetch(sql, *params)  # type: ignore[no-any-return]
        return await self.conn.execute_fetchall(sql, params)  # type: ignore[no-any-return]

    # -- reads ----------------------------------------------------------------------------

    async def read_all(
        self, from_position: int, limit: int | None, event_filter: EventFilter
    ) -> list[RecordedEvent]:
        where = ["position > ?"]
        params: list[Any] = [from_position]
        if event_filter.types:
            where.append(self._in("type", len(event_filter.types)))
            params.extend(self._list(event_filter.types))
        if event_filter.stream_prefix:
            where.append("stream_id LIKE ? ESCAPE '/'")
            params.append(_like_prefix(event_filter.stream_prefix))
        return await self._events(where, "position", limit, params)

    async def read_stream(
        self, stream_id: str, from_version: int | None, limit: int | None, backwards: bool
    ) -> list[RecordedEvent]:
        where = ["stream_id = ?"]
        params: list[Any] = [stream_id]
        if backwards:
            if from_version is not None:
                where.append("version <= ?")
                params.append(from_version)
        else:
            where.append("version >= ?")
            params.append(from_version or 1)
        order = "version DESC" if backwards else "version"
        return await self._events(where, order, limit, params)

    async def events_by_ids(self, ids: Sequence[object]) -> list[RecordedEvent]:
        texts = [str(i) for i in ids]
        return await self._events([self._in("id", len(texts))], "position", None, self._list(texts))

    async def head_position(self) -> int:
        """The last committed position (0 when nothing was written)."""
        rows = await self.fetch("SELECT last FROM event_position WHERE id = 1", ())
        if rows:
            return int(rows[0][0])
        rows = await self.fetch("SELECT max(position) FROM events", ())
        return int(rows[0][0] or 0)

    async def stream_version(self, stream_id: str) -> int:
        rows = await self.fetch(
            _spelled(self.postgres, "SELECT version FROM event_streams WHERE stream_id = ?"),
            (stream_id,),
        )
        return int(rows[0][0]) if rows else 0

    async def _events(
        self, where: list[str], order: str, limit: int | None, params: list[Any]
    ) -> list[RecordedEvent]:
        if limit is not None:
            params.append(limit)
        sql = select_sql(self.postgres, " AND ".join(where), order, limit is not None)
        return list(map(RecordedEvent.from_stored, await self.fetch(sql, params)))

    def _in(self, column: str, count: int) -> str:
        if self.postgres:
            return f"{column} = ANY(?::varchar[])"
        return f"{column} IN ({', '.join('?' * count)})"

    def _list(self, values: Sequence[str]) -> list[Any]:
        return [list(values)] if self.postgres else list(values)

    # -- the insert -----------------------------------------------------------------------

    async def insert_events(
        self, segments: Sequence[Segment], first_position: int, now: datetime
    ) -> None:
        """Insert the segments' events at consecutive positions from ``first_position``, in
        the connection's transaction, the JSON columns as the prepared text."""
        position = first_position
        if self.postgres:
            columns: list[list[Any]] = [[] for _ in range(8)]
            positions, ids, streams, versions, types, schemas, datas, metas = columns
            for stream_id, batch, first_version in segments:
                version = first_version
                for item in batch:
                    event = item.event
                    positions.append(position)
                    ids.append(str(event.id))
                    streams.append(stream_id)
                    versions.append(version)
                    types.append(event.type)
                    schemas.append(event.schema_version)
                    datas.append(item.data_json)
                    metas.append(item.metadata_json)
                    position += 1
                    version += 1
            await self.conn.execute(_PG_INSERT, *columns, now)
            return
        await self.conn.executemany(SQLITE_INSERT, sqlite_rows(segments, position, now))


def sqlite_rows(
    segments: Sequence[Segment], first_position: int, now: datetime
) -> list[tuple[Any, ...]]:
    """The ``events`` rows of ``segments`` for :data:`SQLITE_INSERT`."""
    at = now.astimezone(UTC).strftime(_SQLITE_TIME)
    rows = []
    position = first_position
    for stream_id, batch, first_version in segments:
        version = first_version
        for item in batch:
            event = item.event
            rows.append(
                (
                    position,
                    str(event.id),
                    stream_id,
                    version,
                    event.type,
                    event.schema_version,
                    item.data_json,
                    item.metadata_json,
                    at,
                )
            )
            position += 1
            version += 1
    return rows


async def driver_of(conn: AsyncConnection) -> Driver:
    """The driver connection under ``conn`` (in ``conn``'s transaction, if one is open)."""
    raw = await conn.get_raw_connection()
    return Driver(raw.driver_connection, conn.dialect.name)


SQLITE_INSERT = (
    "INSERT INTO events (position, id, stream_id, version, type, schema_version, data, "
    "metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_PG_INSERT = (
    "INSERT INTO events (position, id, stream_id, version, type, schema_version, data, "
    "metadata, recorded_at) SELECT p, i, s, v, t, sv, d::json, m::json, $9::timestamptz "
    "FROM unnest($1::bigint[], $2::varchar[], $3::varchar[], $4::int[], $5::varchar[], "
    "$6::int[], $7::text[], $8::text[]) AS e(p, i, s, v, t, sv, d, m)"
)


@lru_cache(maxsize=256)
def select_sql(postgres: bool, where: str, order: str, limited: bool) -> str:
    if postgres:
        columns = _COLUMNS.format(data="data::text", meta="metadata::text")
    else:
        columns = _COLUMNS.format(data="data", meta="metadata")
    sql = f"SELECT {columns} FROM events WHERE {where} ORDER BY {order}"  # noqa: S608 (fixed fragments; values are bound)
    return _spelled(postgres, sql + " LIMIT ?" if limited else sql)


@lru_cache(maxsize=256)
def _spelled(postgres: bool, sql: str) -> str:
    """``sql`` with PostgreSQL's numbered placeholders instead of ``?`` when ``postgres``."""
    if not postgres:
        return sql
    parts = sql.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]


def _like_prefix(prefix: str) -> str:
    """A ``LIKE`` pattern for ids starting with ``prefix`` (``/`` escapes, as SQLAlchemy's
    ``startswith(autoescape=True)`` does)."""
    escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return escaped + "%"
