"""The raw driver floors of ``bench/event_store.py``: the drivers doing by hand what an
append and a page of ``read_all`` do, on an events-like table (the store's columns, unique
``id`` and ``(stream_id, version)``, the type index) and a one-row position counter.

One transaction per append: ``UPDATE counter SET last = last + n RETURNING last``, ``INSERT``
the events, ``COMMIT``.

* ``RawSqlite3``: ``sqlite3``, synchronous, the whole run in one worker thread (the
  appenders' appends interleaved on its connection): the ceiling of SQLite from Python;
* ``RawAiosqlite``: one connection; the appenders take turns under an ``asyncio.Lock`` (one
  SQLite writer at a time; ten connections would sleep in SQLite's busy handler);
* ``RawAsyncpg``: one connection per appender (a pool's release runs a reset query);
* ``Typed``: a raw async floor's pages turned into the store's ``RecordedEvent`` values.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import aiosqlite
import asyncpg

from medianest.events import EventMetadata, RecordedEvent

APPENDERS = 10
BATCH = 100
TYPE = "MediaRequested"
META = EventMetadata(
    correlation_id="6f1c2f0e-33a1-4d57-9b52-2c1f4c1f2e10",
    traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    user="alice",
)
META_JSON = META.to_json()


def data(n: int) -> dict[str, Any]:
    """An event body the size of a media request."""
    return {"n": n, "tmdb_id": 603, "media_type": "movie", "title": "The Matrix", "year": 1999}


# -- the raw floors --------------------------------------------------------------------------

SQLITE_DDL = """
CREATE TABLE events (
    position INTEGER NOT NULL PRIMARY KEY,
    id VARCHAR(36) NOT NULL UNIQUE,
    stream_id VARCHAR(200) NOT NULL,
    version INTEGER NOT NULL,
    type VARCHAR(200) NOT NULL,
    schema_version INTEGER NOT NULL,
    data JSON NOT NULL,
    metadata JSON NOT NULL,
    recorded_at DATETIME NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE INDEX ix_events_type ON events (type);
CREATE TABLE event_position (id INTEGER NOT NULL PRIMARY KEY, last BIGINT NOT NULL);
INSERT INTO event_position VALUES (1, 0);
"""
PG_DDL = """
CREATE TABLE raw_events (
    position BIGINT NOT NULL PRIMARY KEY,
    id VARCHAR(36) NOT NULL UNIQUE,
    stream_id VARCHAR(200) NOT NULL,
    version INTEGER NOT NULL,
    type VARCHAR(200) NOT NULL,
    schema_version INTEGER NOT NULL,
    data JSON NOT NULL,
    metadata JSON NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE INDEX ix_raw_events_type ON raw_events (type);
CREATE TABLE raw_position (id INTEGER NOT NULL PRIMARY KEY, last BIGINT NOT NULL);
INSERT INTO raw_position VALUES (1, 0);
"""
CLAIM = "UPDATE event_position SET last = last + ? WHERE id = 1 RETURNING last"
INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)"
READ = (
    "SELECT position, id, stream_id, version, type, schema_version, data, metadata, "
    "recorded_at FROM events WHERE position > ? ORDER BY position LIMIT ?"
)
PG_CLAIM = "UPDATE raw_position SET last = last + $1 WHERE id = 1 RETURNING last"
PG_INSERT = "INSERT INTO raw_events VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8)"
PG_READ = READ.replace("FROM events", "FROM raw_events").replace("?", "$1", 1).replace("?", "$2")


def sqlite_rows(stream: str, version: int, count: int, last: int) -> list[tuple[Any, ...]]:
    """Rows for ``count`` events at versions ``version + 1...`` ending at position ``last``."""
    now = datetime.now(UTC).isoformat(" ")
    meta = json.dumps(META_JSON)
    first = last - count + 1
    return [
        (
            first + i,
            str(uuid.uuid4()),
            stream,
            version + 1 + i,
            TYPE,
            json.dumps(data(i)),
            meta,
            now,
        )
        for i in range(count)
    ]


def decode(rows: list[Any]) -> int:
    """What any reader does with a page: parse the JSON columns."""
    for row in rows:
        json.loads(row[6])
        json.loads(row[7])
    return int(rows[-1][0]) if rows else 0


def recorded(rows: list[Any]) -> list[RecordedEvent]:
    """What the store hands out for a page: typed events (UUID, aware time, metadata)."""
    out = []
    for position, id_, stream_id, version, type_, schema, data_, meta, at in rows:
        when = datetime.fromisoformat(at) if isinstance(at, str) else at
        out.append(
            RecordedEvent(
                UUID(id_),
                stream_id,
                version,
                position,
                type_,
                schema,
                json.loads(data_),
                EventMetadata.from_json(json.loads(meta)),
                when if when.tzinfo else when.replace(tzinfo=UTC),
            )
        )
    return out


class Target(Protocol):
    name: str

    async def write(self, streams: list[str], appends: int, size: int) -> None:
        """Each stream gets ``appends`` appends of ``size`` events, streams concurrently."""

    async def read_page(self, after: int, limit: int) -> tuple[int, int]:
        """(events read, last position) of the page after position ``after``."""

    async def close(self) -> None: ...


async def concurrently(
    streams: list[str], appends: int, size: int, append: Callable[[int, str, int], Any]
) -> None:
    """One task per stream appending ``appends`` times (``append(index, stream, version)``)."""

    async def appender(index: int, stream: str) -> None:
        for k in range(appends):
            await append(index, stream, k * size)

    await asyncio.gather(*(appender(i, s) for i, s in enumerate(streams)))


class RawSqlite3:
    """sqlite3, synchronous, in one worker thread: the ceiling of SQLite from Python."""

    name = "raw sqlite3 (thread)"

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.executescript(SQLITE_DDL)

    def _append(self, stream: str, version: int, size: int) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        (last,) = conn.execute(CLAIM, (size,)).fetchone()
        conn.executemany(INSERT, sqlite_rows(stream, version, size, last))
        conn.execute("COMMIT")

    def _write(self, streams: list[str], appends: int, size: int) -> None:
        for k in range(appends):  # the appenders' appends, interleaved
            for stream in streams:
                self._append(stream, k * size, size)

    async def write(self, streams: list[str], appends: int, size: int) -> None:
        await asyncio.to_thread(self._write, streams, appends, size)

    def _read(self, after: int, limit: int) -> tuple[int, int]:
        rows = self.conn.execute(READ, (after, limit)).fetchall()
        return len(rows), decode(rows)

    async def read_page(self, after: int, limit: int) -> tuple[int, int]:
        return await asyncio.to_thread(self._read, after, limit)

    async def close(self) -> None:
        self.conn.close()


class RawAiosqlite:
    """aiosqlite on one connection; the appenders take turns (one SQLite writer at a time)."""

    name = "raw aiosqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: aiosqlite.Connection | None = None
        self.lock = asyncio.Lock()

    async def start(self) -> RawAiosqlite:
        self.conn = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
            await self.conn.execute(f"PRAGMA {pragma}")
        await self.conn.executescript(SQLITE_DDL)
        return self

    async def _append(self, _index: int, stream: str, version: int, size: int) -> None:
        assert self.conn is not None
        async with self.lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            async with self.conn.execute(CLAIM, (size,)) as cursor:
                (last,) = await cursor.fetchone()  # type: ignore[misc]
            await self.conn.executemany(INSERT, sqlite_rows(stream, version, size, last))
            await self.conn.execute("COMMIT")

    async def write(self, streams: list[str], appends: int, size: int) -> None:
        await concurrently(streams, appends, size, lambda i, s, v: self._append(i, s, v, size))

    async def rows(self, after: int, limit: int) -> list[Any]:
        assert self.conn is not None
        async with self.conn.execute(READ, (after, limit)) as cursor:
            return list(await cursor.fetchall())

    async def read_page(self, after: int, limit: int) -> tuple[int, int]:
        rows = await self.rows(after, limit)
        return len(rows), decode(rows)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class RawAsyncpg:
    """asyncpg, one connection per appender (no pool reset between appends)."""

    name = "raw asyncpg"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conns: list[Any] = []

    async def start(self) -> RawAsyncpg:
        self.conns = [await asyncpg.connect(self.dsn) for _ in range(APPENDERS)]
        await self.conns[0].execute(PG_DDL)
        return self

    async def _append(self, index: int, stream: str, version: int, size: int) -> None:
        conn = self.conns[index]
        now = datetime.now(UTC)
        meta = json.dumps(META_JSON)
        async with conn.transaction():
            last = await conn.fetchval(PG_CLAIM, size)
            first = last - size + 1
            rows = [
                (first + i, str(uuid.uuid4()), stream, version + 1 + i, TYPE,
                 json.dumps(data(i)), meta, now)
                for i in range(size)
            ]  # fmt: skip
            if size == 1:
                await conn.execute(PG_INSERT, *rows[0])
            else:
                await conn.executemany(PG_INSERT, rows)

    async def write(self, streams: list[str], appends: int, size: int) -> None:
        await concurrently(streams, appends, size, lambda i, s, v: self._append(i, s, v, size))

    async def rows(self, after: int, limit: int) -> list[Any]:
        return list(await self.conns[0].fetch(PG_READ, after, limit))

    async def read_page(self, after: int, limit: int) -> tuple[int, int]:
        rows = await self.rows(after, limit)
        return len(rows), decode(rows)

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()


class Typed:
    """A raw async floor that also builds the store's :class:`RecordedEvent` values: reads
    only, to show how much of the store's read time is the values themselves."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.name = f"{raw.name} + RecordedEvent"

    async def write(self, streams: list[str], appends: int, size: int) -> None:
        raise NotImplementedError

    async def read_page(self, after: int, limit: int) -> tuple[int, int]:
        found = recorded(await self.raw.rows(after, limit))
        return len(found), found[-1].position if found else 0

    async def close(self) -> None:
        return None
