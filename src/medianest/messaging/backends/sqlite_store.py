"""The SQL behind :class:`~medianest.messaging.backends.sqlite.SqliteBroker`.

The broker has a file of its own, with tables the backend creates itself on start
(``CREATE ... IF NOT EXISTS``, its version in ``broker_meta``): the file belongs to the broker
alone, so it has no place in the hub's Alembic history, and a deployment that moves to
another broker simply deletes it.

``messages``
    one row per published message: ``seq`` (AUTOINCREMENT: never reused, so it orders
    publications), the unique ``id``, ``topic``, ``key``, the JSON ``envelope`` and the JSON
    list of ``groups`` it was routed to.
``bindings``
    ``(grp, pattern)`` for every pattern a group ever subscribed with; each new one bumps
    ``bindings_version`` in ``broker_meta``.
``deliveries``
    one row per (group, message) not yet acked: ``attempt`` (deliveries made so far),
    ``visible_at`` (Unix seconds: when it may be claimed -- while leased, the end of the
    lease), ``lease_owner`` (the subscription holding it) and the previous ``last_error``.
``dead_letters``
    messages given up on, with their envelope, the error and the attempt count.

**Publish is one statement.** The publisher matches the topic against the bindings it has
cached (Python, :func:`~medianest.messaging.base.topic_matches`) and inserts the message with
the groups and the ``bindings_version`` it matched against. A ``BEFORE INSERT`` trigger
aborts the insert when another subscription added a binding since (the publisher reloads
and tries again: :class:`StaleBindings`); an ``AFTER INSERT`` trigger inserts one delivery
per group. All of it is the statement's own transaction, and no Python runs inside SQLite.
**A claim is one statement** too (``UPDATE ... RETURNING`` with the envelope), and so is an
ack. Constant SQL strings hit the statement cache of :mod:`sqlite3`: nothing is re-prepared.

All statements of a broker go through one aiosqlite connection (one thread, in order) in
autocommit mode; multi-statement changes (dead-lettering, replay) take an asyncio lock so no
other statement of this process lands inside their ``BEGIN IMMEDIATE`` ... ``COMMIT``. A
second connection only checkpoints the WAL, in the background (:meth:`SqliteStore.checkpoint`):
the writing connection never does it itself, so no publish waits for the checkpoint's fsync.
Driver errors become :class:`~medianest.errors.BackendError` here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from medianest.errors import BackendError, BackendUnavailable, NotFoundError
from medianest.messaging.base import DeadLetter, Message
from medianest.messaging.wire import decode, encode

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS broker_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO broker_meta (key, value) VALUES ('bindings_version', '0');
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    key TEXT,
    envelope TEXT NOT NULL,
    published_at REAL NOT NULL,
    groups TEXT NOT NULL DEFAULT '[]',
    bindings_version INTEGER,
    routed INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS bindings (
    grp TEXT NOT NULL,
    pattern TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (grp, pattern)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    grp TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    key TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL,
    lease_owner TEXT,
    last_error TEXT,
    UNIQUE (grp, seq)
);
CREATE INDEX IF NOT EXISTS deliveries_key ON deliveries (grp, key, seq) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    message_id TEXT NOT NULL,
    envelope TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_topic ON dead_letters (topic, grp);
CREATE TRIGGER IF NOT EXISTS bindings_bump AFTER INSERT ON bindings
BEGIN
    UPDATE broker_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'bindings_version';
END;
CREATE TRIGGER IF NOT EXISTS messages_fresh BEFORE INSERT ON messages
WHEN NEW.routed = 1 AND NEW.bindings_version IS NOT (
    SELECT CAST(value AS INTEGER) FROM broker_meta WHERE key = 'bindings_version')
BEGIN
    SELECT RAISE(ABORT, 'mn: stale bindings');
END;
CREATE TRIGGER IF NOT EXISTS messages_route AFTER INSERT ON messages WHEN NEW.routed = 1
BEGIN
    INSERT INTO deliveries (grp, seq, topic, key, visible_at)
    SELECT value, NEW.seq, NEW.topic, NEW.key, NEW.published_at FROM json_each(NEW.groups);
END;
"""

PUBLISH = (
    "INSERT OR IGNORE INTO messages (id, topic, key, envelope, published_at, groups, "
    "bindings_version) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
BINDINGS = """
SELECT CAST(value AS INTEGER), NULL, NULL FROM broker_meta WHERE key = 'bindings_version'
UNION ALL SELECT NULL, grp, pattern FROM bindings
"""
BIND = "INSERT OR IGNORE INTO bindings (grp, pattern, created_at) VALUES (?, ?, ?)"
CLAIM = """
UPDATE deliveries SET attempt = attempt + 1, lease_owner = :owner, visible_at = :until
WHERE id IN (
    SELECT d.id FROM deliveries AS d
    WHERE d.grp = :grp AND d.visible_at <= :now
      AND (d.key IS NULL OR NOT EXISTS (
          SELECT 1 FROM deliveries AS e WHERE e.grp = d.grp AND e.key = d.key AND e.seq < d.seq))
    ORDER BY d.seq LIMIT :limit)
RETURNING id, seq, topic, attempt, last_error,
    (SELECT envelope FROM messages WHERE messages.seq = deliveries.seq)
"""
ACK = "DELETE FROM deliveries WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))"
RETRY = (
    "UPDATE deliveries SET visible_at = ?, lease_owner = NULL, last_error = ? "
    "WHERE id = ? AND lease_owner = ?"
)
RELEASE = (
    "UPDATE deliveries SET visible_at = ?, lease_owner = NULL WHERE id = ? AND lease_owner = ?"
)
RENEW = "UPDATE deliveries SET visible_at = ? WHERE lease_owner = ?"
TAKE_FOR_DEAD = "DELETE FROM deliveries WHERE id = ? AND lease_owner = ? RETURNING grp, topic"
ADD_DEAD = (
    "INSERT INTO dead_letters (id, grp, topic, message_id, envelope, error, attempts, failed_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
LIST_DEAD = """
SELECT id, grp, envelope, error, attempts, failed_at FROM dead_letters
WHERE (:topic IS NULL OR topic = :topic) AND (:grp IS NULL OR grp = :grp)
ORDER BY id LIMIT :limit
"""
GET_DEAD = "SELECT id, grp, envelope, error, attempts, failed_at FROM dead_letters WHERE id = ?"
PURGE_DEAD = """
DELETE FROM dead_letters
WHERE (:topic IS NULL OR topic = :topic) AND (:grp IS NULL OR grp = :grp)
RETURNING id
"""
LAG = """
SELECT g.grp, (SELECT COUNT(*) FROM deliveries AS d WHERE d.grp = g.grp)
FROM (SELECT DISTINCT grp FROM bindings) AS g
"""
PRUNE = """
DELETE FROM messages WHERE seq < COALESCE(
    (SELECT MIN(seq) FROM deliveries), (SELECT MAX(seq) + 1 FROM messages))
"""

Row = Sequence[Any]


def dead_letter(row: Row) -> DeadLetter:
    """A ``dead_letters`` row (the columns of :data:`GET_DEAD`) as a :class:`DeadLetter`."""
    letter_id, group, envelope, error, attempts, failed_at = row[:6]
    return DeadLetter(
        id=letter_id,
        message=decode(envelope),
        group=group,
        error=error,
        attempts=int(attempts),
        failed_at=datetime.fromtimestamp(failed_at, UTC),
    )


async def replay(store: SqliteStore, dead_letter_id: str) -> tuple[str, Message]:
    """Move a dead letter back to its group as a new delivery (attempt 1), in one
    transaction: its group and the message. The message row is reused while it is still
    stored, else stored again unrouted (``routed = 0``: for that group only)."""
    async with store.transaction() as tx:
        rows = await tx.statement(GET_DEAD, (dead_letter_id,))
        if not rows:
            raise NotFoundError(f"no dead letter {dead_letter_id!r}")
        letter = dead_letter(rows[0])
        message, text = encode(letter.message)
        found = await tx.statement("SELECT seq FROM messages WHERE id = ?", (message.id,))
        if found:
            seq = found[0][0]
        else:
            inserted = await tx.statement(
                "INSERT INTO messages (id, topic, key, envelope, published_at, routed) "
                "VALUES (?, ?, ?, ?, ?, 0) RETURNING seq",
                (message.id, message.topic, message.key, text, time.time()),
            )
            seq = inserted[0][0]
        await tx.statement(
            "INSERT OR IGNORE INTO deliveries (grp, seq, topic, key, visible_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (letter.group, seq, message.topic, message.key, time.time()),
        )
        await tx.statement("DELETE FROM dead_letters WHERE id = ?", (dead_letter_id,))
    return letter.group, message


class StaleBindings(BackendError):
    """A publish matched against bindings that changed since: reload them and publish again."""


class SqliteStore:
    """One connection to the broker file, with errors translated (module docstring)."""

    def __init__(self, path: str, *, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.lock = asyncio.Lock()
        self._conn: aiosqlite.Connection | None = None
        self._checkpointer: aiosqlite.Connection | None = None

    @property
    def backend(self) -> str:
        return f"sqlite:///{self.path}"

    async def open(self) -> None:
        if self._conn is not None:
            return
        if self.path != ":memory:":
            await _mkdir(Path(self.path).parent)
        try:
            self._conn = await self._connect()
            await self._conn.execute_fetchall("PRAGMA journal_mode=WAL")
            await self._conn.executescript(SCHEMA)
            await self._conn.execute_fetchall(
                "INSERT OR IGNORE INTO broker_meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            self._checkpointer = await self._connect()
        except sqlite3.Error as exc:
            await self.close()
            raise self._error(exc) from exc

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        for pragma in (
            "PRAGMA synchronous=NORMAL",
            f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}",
            "PRAGMA wal_autocheckpoint=0",
            "PRAGMA journal_size_limit=67108864",
        ):
            await conn.execute_fetchall(pragma)
        return conn

    async def close(self) -> None:
        for conn in (self._conn, self._checkpointer):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await conn.close()
        self._conn = self._checkpointer = None

    async def checkpoint(self) -> None:
        """Copy the WAL into the database file (``PASSIVE``: never blocks the writers)."""
        conn = self._checkpointer
        if conn is None:
            return
        try:
            await conn.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    async def run(self, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[Row]:
        """One statement in its own (autocommit) transaction; its rows.

        It waits only while a :meth:`transaction` holds the lock: otherwise it goes straight
        into the connection's queue (in order), so a publish, a claim and an ack of this
        process are queued back to back instead of each waiting for the previous one."""
        if self.lock.locked():
            async with self.lock:
                return await self._run(sql, params)
        return await self._run(sql, params)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteStore]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error); statements inside go
        through :meth:`statement`."""
        async with self.lock:
            await self._run("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                with contextlib.suppress(BackendError):
                    await self._run("ROLLBACK")
                raise
            await self._run("COMMIT")

    async def statement(self, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[Row]:
        """A statement inside :meth:`transaction` (the lock is already held)."""
        return await self._run(sql, params)

    async def _run(self, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[Row]:
        conn = self._conn
        if conn is None:
            raise BackendError("the SQLite broker is not started", backend=self.backend)
        try:
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        except ValueError as exc:  # aiosqlite: "Connection closed"
            raise BackendError(f"SQLite broker: {exc}", backend=self.backend) from exc

    def _error(self, exc: sqlite3.Error) -> BackendError:
        text = f"{type(exc).__name__}: {exc}"
        if "mn: stale bindings" in str(exc):
            return StaleBindings(text, backend=self.backend)
        unavailable = isinstance(exc, sqlite3.OperationalError) and any(
            phrase in str(exc) for phrase in ("unable to open", "disk I/O")
        )
        error = BackendUnavailable if unavailable else BackendError
        return error(f"SQLite broker failed: {text}", backend=self.backend)


async def _mkdir(path: Path) -> None:
    await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
