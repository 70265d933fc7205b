"""The SQLite writer: a whole group commit in one hand-off to a thread.

Through SQLAlchemy's aiosqlite adapter, every statement of a group's transaction is three or
four hand-offs to aiosqlite's thread (cursor, execute, fetch, close): about twenty per group,
which capped the store far below what SQLite itself does (``bench/event_store.py``). On a
database file (SQLite has one writer at a time anyway) the store therefore writes through
this class instead: its own ``sqlite3`` connection, used only by one worker thread, which
runs a group's whole transaction -- ``BEGIN IMMEDIATE``, the stream rows, the plan, the
position counter, the events, ``COMMIT`` -- as one synchronous call. The event loop hands a
group over once and gets the answers back once.

The statements and their order are those of :mod:`~medianest.events.backends.sql_store`
(see there why positions stay gap-free and in commit order); ``BEGIN IMMEDIATE`` takes the
database's write lock up front, as :func:`~.sql_store.begin_write` does for the async path.
The work run in the thread is :func:`~.sql_groups.commit_sync` (bound to its group with
``functools.partial``), which plans the group with the same functions as the async path, so
both paths decide alike.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from uuid import UUID

from medianest.events.backends import sql_raw
from medianest.events.model import RecordedEvent

T = TypeVar("T")

PRAGMAS = ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=30000", "synchronous=NORMAL")
"""As :mod:`medianest.database.engine` sets them on every connection."""


class SqliteWriter:
    """A ``sqlite3`` connection and the one thread that uses it (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="event-store-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def run(self, work: Callable[[Transaction], T]) -> T:
        """``work(transaction)`` in the writer's thread, inside one write transaction
        (committed when it returns, rolled back when it raises)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, work)

    def _transaction(self, work: Callable[[Transaction], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(Transaction(conn))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                for pragma in PRAGMAS:
                    conn.execute(f"PRAGMA {pragma}")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        """Close the connection once the group in progress (if any) is done."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Transaction:
    """The statements of a group's transaction on the writer's connection (synchronous)."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def stream_versions(self, stream_ids: Sequence[str]) -> dict[str, int]:
        unique = sorted(set(stream_ids))
        marks = ", ".join("?" * len(unique))
        rows = self.conn.execute(
            f"SELECT stream_id, version FROM event_streams WHERE stream_id IN ({marks})",  # noqa: S608 (placeholders only)
            unique,
        )
        return {stream_id: int(version) for stream_id, version in rows}

    def events_by_ids(self, ids: Sequence[UUID]) -> dict[UUID, RecordedEvent]:
        texts = [str(i) for i in ids]
        sql = sql_raw.select_sql(False, f"id IN ({', '.join('?' * len(texts))})", "position", False)
        found = map(RecordedEvent.from_stored, self.conn.execute(sql, texts))
        return {event.id: event for event in found}

    def set_stream_versions(self, created: dict[str, int], moved: dict[str, int]) -> None:
        if created:
            self.conn.executemany(
                "INSERT INTO event_streams (stream_id, version) VALUES (?, ?)", created.items()
            )
        if moved:
            self.conn.executemany(
                "UPDATE event_streams SET version = ? WHERE stream_id = ?",
                [(v, s) for s, v in moved.items()],
            )

    def claim_positions(self, count: int) -> int:
        """Reserve ``count`` positions; returns the first (sql_store.claim_positions)."""
        row = self.conn.execute(
            "UPDATE event_position SET last = last + ? WHERE id = 1 RETURNING last", (count,)
        ).fetchone()
        if row is None:
            from medianest.errors import BackendError

            raise BackendError("event_position has no row: run the migrations (medianest migrate)")
        return int(row[0]) - count + 1

    def insert_events(
        self, segments: Sequence[sql_raw.Segment], first_position: int, now: datetime
    ) -> None:
        self.conn.executemany(
            sql_raw.SQLITE_INSERT, sql_raw.sqlite_rows(segments, first_position, now)
        )
