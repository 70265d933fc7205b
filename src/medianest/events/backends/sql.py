"""Event store in the main database (``sqlite:///...``, the embedded default, or
``postgresql://`` through asyncpg).

Every hub process of a deployment shares the store through the database. How positions stay
gap-free and in commit order, and what that costs, is explained in
:mod:`~medianest.events.backends.sql_store`. Live subscriptions are woken

* in this process, by this object's appends, at once;
* in other processes, on PostgreSQL by ``LISTEN/NOTIFY`` (:mod:`.pg_listener`, a dedicated
  asyncpg connection; ``poll_interval`` -- 5 s by default -- is then only a safety net);
* on SQLite by polling every ``poll_interval`` seconds (0.5 by default).

The database is the hub's own :class:`~medianest.database.Database` when the caller passes
it (``database=``), else one created from the URL and owned by the store. Tables come from
migration ``0006``: run ``medianest migrate`` (or start the hub) first. A read model in the
same database keeps its checkpoint in its own transaction with
:func:`~medianest.events.backends.sql_store.save_checkpoint` (re-exported here).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.backends import mask_url
from medianest.database import Database
from medianest.database.engine import _reason
from medianest.errors import BackendError, BackendUnavailable
from medianest.events.appending import PreparedEvent, prepare, replayed
from medianest.events.backends import sql_store as store
from medianest.events.backends.sql_store import load_checkpoint, save_checkpoint
from medianest.events.base import EventStore, check_limit, check_position
from medianest.events.model import (
    AppendResult,
    EventFilter,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
    check_expected,
    check_name,
)
from medianest.events.upcasting import Upcasters

__all__ = ["SqlEventStore", "async_url", "load_checkpoint", "save_checkpoint"]

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
}
_APPEND_ATTEMPTS = 5


def async_url(url: str) -> str:
    """``url`` with the async driver SQLAlchemy needs (``sqlite://`` → ``sqlite+aiosqlite://``)."""
    scheme, sep, rest = url.partition("://")
    driver = _ASYNC_DRIVERS.get(scheme.lower())
    return f"{driver}{sep}{rest}" if driver else url


class _Conflict(BackendError):
    """A unique constraint refused a write: another appender got there first; retry."""


class _Replayed(Exception):
    """Raised inside an append's transaction to roll it back and return ``result``."""

    def __init__(self, result: AppendResult) -> None:
        super().__init__()
        self.result = result


class SqlEventStore(EventStore):
    """The store over the ``events`` tables of the main database (module docstring)."""

    def __init__(
        self,
        database: Database,
        *,
        owns_database: bool = False,
        upcasters: Upcasters | None = None,
        poll_interval: float | None = None,
        listen: bool = True,
    ) -> None:
        super().__init__(upcasters=upcasters)
        self.database = database
        self._owns_database = owns_database
        self._listen = listen and database.dialect == "postgresql"
        self.poll_interval = (
            poll_interval if poll_interval is not None else (5.0 if self._listen else 0.5)
        )
        self.listener: Any = None
        self._started = False

    @classmethod
    def from_url(
        cls, url: str, *, database: Database | None = None, **options: Any
    ) -> SqlEventStore:
        """``database`` is the hub's own; without it the store opens (and closes) one."""
        if database is not None:
            return cls(database, **options)
        return cls(Database(async_url(url)), owns_database=True, **options)

    def __repr__(self) -> str:
        return f"SqlEventStore({self._backend!r})"

    @property
    def _backend(self) -> str:
        return mask_url(self.database.url)

    async def start(self) -> None:
        if self._started:
            return
        if self._owns_database:
            await self.database.start()
        try:
            async with self._connection(write=True) as conn:
                await store.ensure_counter(conn)
            if self._listen:
                from medianest.events.backends.pg_listener import PgListener, asyncpg_dsn

                self.listener = PgListener(
                    asyncpg_dsn(self.database.url),
                    store.CHANNEL,
                    self._signal.notify,
                    backend=self._backend,
                )
                await self.listener.start()
        except BaseException:
            await self._release()
            raise
        self._signal.reopen()
        self._started = True

    async def close(self) -> None:
        self._started = False
        self._signal.close()
        await self._release()

    async def _release(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            await listener.close()
        if self._owns_database:
            await self.database.close()

    async def ping(self) -> None:
        async with self._connection() as conn:
            await store.head_position(conn)

    def _check_open(self) -> None:
        if not self._started:
            raise BackendError("the event store is not started", backend=self._backend)

    # -- appends --------------------------------------------------------------------------

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        batch = prepare(stream_id, events, expected_version)
        for _ in range(_APPEND_ATTEMPTS):
            try:
                result = await self._append_once(stream_id, batch, expected_version)
            except _Replayed as replay:
                return replay.result
            except _Conflict:
                continue
            self._signal.notify()
            return result
        raise BackendError(
            f"append to {stream_id!r} kept conflicting with other writers", backend=self._backend
        )

    async def _append_once(
        self, stream_id: str, batch: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult:
        """One transaction (order explained in :mod:`.sql_store`)."""
        async with self._connection(write=True) as conn:
            await store.begin_write(conn)
            current = await store.stream_version(conn, stream_id, lock=True)
            stored = await store.events_by_ids(conn, [item.event.id for item in batch])
            if stored:
                raise _Replayed(replayed(stream_id, batch, expected, stored, current))
            check_expected(stream_id, expected, current)
            version = current + len(batch)
            await store.set_stream_version(conn, stream_id, current, version)
            first = await store.claim_positions(conn, len(batch))
            now = datetime.now(UTC)
            await store.insert_events(conn, stream_id, batch, current + 1, first, now)
            last = first + len(batch) - 1
            await store.notify(conn, last)
        return AppendResult(next_version=version, position=last)

    # -- reads ----------------------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        from_version: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        check_name("stream_id", stream_id)
        check_position("from_version", from_version, optional=True)
        limit = check_limit(limit)
        async with self._connection() as conn:
            found = await store.read_stream(conn, stream_id, from_version, limit, backwards)
        return [self.upcasters.apply(event) for event in found]

    async def read_all(
        self,
        from_position: int = 0,
        limit: int | None = None,
        filter: EventFilter | None = None,
    ) -> list[RecordedEvent]:
        check_position("from_position", from_position)
        limit = check_limit(limit)
        async with self._connection() as conn:
            found = await store.read_all(conn, from_position, limit, filter or EventFilter())
        return [self.upcasters.apply(event) for event in found]

    async def head_position(self) -> int:
        async with self._connection() as conn:
            return await store.head_position(conn)

    async def stream_version(self, stream_id: str) -> int:
        check_name("stream_id", stream_id)
        async with self._connection() as conn:
            return await store.stream_version(conn, stream_id)

    # -- snapshots and checkpoints --------------------------------------------------------

    async def save_snapshot(
        self, stream_id: str, version: int, schema_version: int, state: dict[str, object]
    ) -> None:
        copied = self._check_snapshot(stream_id, version, schema_version, state)
        snapshot = Snapshot(stream_id, version, schema_version, copied, datetime.now(UTC))
        async with self._connection(write=True) as conn:
            await store.save_snapshot(conn, snapshot)

    async def load_snapshot(
        self, stream_id: str, schema_version: int | None = None
    ) -> Snapshot | None:
        check_name("stream_id", stream_id)
        async with self._connection() as conn:
            snapshot = await store.load_snapshot(conn, stream_id)
        if snapshot is None or (
            schema_version is not None and snapshot.schema_version != schema_version
        ):
            return None
        return snapshot

    async def save_checkpoint(self, name: str, position: int) -> None:
        check_name("name", name)
        check_position("position", position)
        async with self._connection(write=True) as conn:
            await save_checkpoint(conn, name, position)

    async def load_checkpoint(self, name: str) -> int:
        check_name("name", name)
        async with self._connection() as conn:
            return await load_checkpoint(conn, name)

    # -- the one place driver errors are translated ---------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection (a committed-on-exit transaction when ``write``). Driver errors
        become :class:`BackendUnavailable`, :class:`BackendError`, or ``_Conflict`` for a
        unique constraint."""
        try:
            async with self.database.begin() if write else self.database.connect() as conn:
                yield conn
        except IntegrityError as exc:
            raise _Conflict(
                f"event store write conflicted: {_reason(exc)}", backend=self._backend
            ) from exc
        except (SQLAlchemyError, OSError) as exc:
            unavailable = isinstance(exc, OSError | InterfaceError) or (
                isinstance(exc, DBAPIError) and exc.connection_invalidated
            )
            error = BackendUnavailable if unavailable else BackendError
            raise error(f"event store failed: {_reason(exc)}", backend=self._backend) from exc
