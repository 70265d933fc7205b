"""Event store in the main database (``sqlite:///...``, the embedded default, or
``postgresql://`` through asyncpg).

Every hub process of a deployment shares the store through the database. How positions stay
gap-free and in commit order, and what that costs, is explained in
:mod:`~medianest.events.backends.sql_store`.

**Group commit.** A store object writes through one writer task: ``append`` checks its
arguments, queues the append and waits for its answer; the writer takes every queued append
(up to 1,000 events) into one transaction, checks each against the streams as the ones
before it in the group left them, writes those that fit and commits once. Concurrent
appenders thus share the transaction's round trips, the position counter's lock and the
commit (one WAL flush), which is where an append's time goes (``bench/event_store.py``);
an append alone is a group of one. Each append still succeeds or fails on its own: an
append whose expected version does not fit gets its
:class:`~medianest.errors.WrongExpectedVersion` and is not written, and a database error
that the group may owe to one append is retried one append at a time. An append cancelled
before the writer takes it is not written; one cancelled later may be (as before: retry it
with the same ids). The writer keeps its connection while appends keep coming. How a group
is planned is in :mod:`.sql_groups`; on a SQLite file the whole transaction runs as one call
in a writer thread with its own ``sqlite3`` connection (:mod:`.sql_sqlite`), elsewhere
statement by statement on a pooled connection, the events inserted in one driver call
(:mod:`.sql_raw`).

**Reads** run on the driver connection (:mod:`.sql_raw`) the store keeps for them: one
driver call per read, no pool checkout, ``BEGIN`` or rollback, and events that decode their
JSON, id and time only when used (:class:`~medianest.events.model.RecordedEvent`). That
connection skips the pool's pre-ping, so a read that finds it lost is run once more on a new
one (:mod:`.sql_reader`).

Live subscriptions are woken

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

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.backends import mask_url
from medianest.database import Database
from medianest.database.engine import _reason
from medianest.errors import BackendError, BackendUnavailable
from medianest.events.appending import prepare
from medianest.events.backends import sql_raw, sql_sqlite
from medianest.events.backends import sql_store as store
from medianest.events.backends.sql_groups import (
    Commit,
    Outcome,
    Pending,
    Plan,
    answer_written,
    commit_sync,
    make_plan,
    segments,
    stream_changes,
    written_count,
)
from medianest.events.backends.sql_raw import Driver
from medianest.events.backends.sql_reader import KeptReader
from medianest.events.backends.sql_store import load_checkpoint, save_checkpoint
from medianest.events.base import EventStore, check_limit, check_position
from medianest.events.model import (
    AppendResult,
    EventFilter,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
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
_GROUP = 1000
"""Most events in one group commit (one append larger than that is a group of its own)."""


P = ParamSpec("P")
T = TypeVar("T")

_CONFLICTS: tuple[type[Exception], ...] = (IntegrityError, *sql_raw.CONFLICT_ERRORS)
"""A unique constraint refused a write (through SQLAlchemy or on the driver connection)."""


def async_url(url: str) -> str:
    """``url`` with the async driver SQLAlchemy needs (``sqlite://`` → ``sqlite+aiosqlite://``)."""
    scheme, sep, rest = url.partition("://")
    driver = _ASYNC_DRIVERS.get(scheme.lower())
    return f"{driver}{sep}{rest}" if driver else url


class _Conflict(BackendError):
    """A unique constraint refused a write: another appender got there first; retry."""


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
        self._pending: deque[Pending] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._reader = KeptReader(database, lambda: self._started)
        self._sqlite: sql_sqlite.SqliteWriter | None = None

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
            path = self.database.sqlite_path
            if path is not None:
                self._sqlite = sql_sqlite.SqliteWriter(path)
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
        """Refuse new appends, let the queued ones finish (10 s at most), release."""
        self._started = False
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            await asyncio.wait([writer], timeout=10)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        self._signal.close()
        await self._release()

    async def _release(self) -> None:
        await self._reader.drop()
        sqlite, self._sqlite = self._sqlite, None
        if sqlite is not None:
            await sqlite.close()
        listener, self.listener = self.listener, None
        if listener is not None:
            await listener.close()
        if self._owns_database:
            await self.database.close()

    async def ping(self) -> None:
        async with self._reading() as conn:
            await store.head_position(conn)

    def _check_open(self) -> None:
        if not self._started:
            raise BackendError("the event store is not started", backend=self._backend)

    # -- appends --------------------------------------------------------------------------

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        """Queue the append for the store's writer (group commit, module docstring)."""
        batch = prepare(stream_id, events, expected_version)
        self._check_open()
        pending = Pending(stream_id, batch, expected_version)
        self._pending.append(pending)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name="event-store-writer")
        return await pending.future

    async def _write_pending(self) -> None:
        """Commit queued appends, a group per transaction, until the queue is empty, on one
        connection while it works (a fresh one after a failure)."""
        while self._pending:
            try:
                async with self._committer() as commit:
                    while self._pending:
                        group = self._next_group()
                        if group and not await self._commit_group(commit, group):
                            break
            except Exception as exc:  # no connection: every queued append fails alike
                while self._pending:
                    self._pending.popleft().settle(exc)

    def _next_group(self) -> list[Pending]:
        group: list[Pending] = []
        size = 0
        while self._pending and (not group or size + len(self._pending[0].batch) <= _GROUP):
            item = self._pending.popleft()
            if not item.future.done():  # its caller was cancelled before it was written
                group.append(item)
                size += len(item.batch)
        return group

    @contextlib.asynccontextmanager
    async def _committer(self) -> AsyncIterator[Commit]:
        """How this store commits a group: in the SQLite writer's thread (a database file,
        :mod:`.sql_sqlite`) or on a pooled connection, kept while appends keep coming."""
        if self._sqlite is not None:
            yield self._commit_in_thread
            return
        async with self._connection() as conn:
            yield functools.partial(self._commit_once, conn)

    async def _commit_group(self, commit: Commit, group: list[Pending]) -> bool:
        """Commit ``group`` and answer each caller (False after a failure). A failure the
        group may owe to one of its appends is retried one append at a time, so that only
        that caller sees it."""
        try:
            for attempt in range(_APPEND_ATTEMPTS):
                try:
                    outcomes, deferred = await commit(group, attempt > 0)
                except _Conflict:
                    continue
                self._pending.extendleft(reversed(deferred))
                for item, outcome in outcomes:
                    item.settle(outcome)
                self._signal.notify()
                return True
            error: BaseException = BackendError(
                "append kept conflicting with other writers", backend=self._backend
            )
        except Exception as exc:
            if len(group) > 1 and not isinstance(exc, BackendUnavailable):
                for item in group:
                    await self._commit_group(commit, [item])
                return False
            error = exc
        except BaseException:  # cancelled (the store closes): nobody waits for ever
            for item in group:
                item.settle(BackendError("the event store closed", backend=self._backend))
            raise
        for item in group:
            item.settle(error)
        return False

    async def _commit_once(
        self, conn: AsyncConnection, group: list[Pending], look_up_ids: bool
    ) -> tuple[list[tuple[Pending, Outcome]], list[Pending]]:
        """One transaction for ``group``; the answers and the appends left for the next one.

        The event ids are looked up only when ``look_up_ids`` or when an expected version
        does not fit: a retry of an append that went through and fits again breaks the
        unique ``id`` constraint instead, and the group runs again with the lookup."""
        with self._translated():
            async with conn.begin():
                await store.begin_write(conn)
                versions = await store.stream_versions(conn, (item.stream_id for item in group))
                plan = None if look_up_ids else make_plan(group, versions, None)
                if plan is None:
                    ids = [prepared.event.id for item in group for prepared in item.batch]
                    plan = make_plan(group, versions, await store.events_by_ids(conn, ids))
                    assert plan is not None
                if plan.written:
                    await self._write(conn, plan, existing=set(versions))
        return plan.answered, plan.deferred

    @staticmethod
    async def _write(conn: AsyncConnection, plan: Plan, *, existing: set[str]) -> None:
        """Write the plan's appends (stream rows, positions, events); answer them."""
        await store.set_stream_versions(conn, *stream_changes(plan, existing))
        position = await store.claim_positions(conn, written_count(plan))
        await store.insert_events(conn, segments(plan), position, datetime.now(UTC))
        answer_written(plan, position)

    async def _commit_in_thread(
        self, group: list[Pending], look_up_ids: bool
    ) -> tuple[list[tuple[Pending, Outcome]], list[Pending]]:
        """:meth:`_commit_once` as one call to the SQLite writer's thread."""
        assert self._sqlite is not None
        with self._translated():
            plan = await self._sqlite.run(functools.partial(commit_sync, group, look_up_ids))
        return plan.answered, plan.deferred

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
        found = await self._read(Driver.read_stream, stream_id, from_version, limit, backwards)
        return self._upcast(found)

    async def read_all(
        self,
        from_position: int = 0,
        limit: int | None = None,
        filter: EventFilter | None = None,
    ) -> list[RecordedEvent]:
        check_position("from_position", from_position)
        limit = check_limit(limit)
        found = await self._read(Driver.read_all, from_position, limit, filter or EventFilter())
        return self._upcast(found)

    def _upcast(self, found: list[RecordedEvent]) -> list[RecordedEvent]:
        if not len(self.upcasters):
            return found
        return [self.upcasters.apply(event) for event in found]

    async def head_position(self) -> int:
        return await self._read(Driver.head_position)

    async def stream_version(self, stream_id: str) -> int:
        check_name("stream_id", stream_id)
        return await self._read(Driver.stream_version, stream_id)

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
        async with self._reading() as conn:
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
        async with self._reading() as conn:
            return await load_checkpoint(conn, name)

    # -- the one place driver errors are translated ---------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection (a committed-on-exit transaction when ``write``), errors translated."""
        with self._translated():
            async with self.database.begin() if write else self.database.connect() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads. On PostgreSQL each statement runs alone (autocommit),
        which saves the ``BEGIN`` and ``ROLLBACK`` round trips around a one-statement read
        (a live subscription's lag is mostly its read)."""
        async with self._connection() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    async def _read(
        self,
        read: Callable[Concatenate[Driver, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``read(driver, ...)`` on the store's kept read connection (:mod:`.sql_reader`:
        once more on a new connection when it was lost), errors translated."""
        with self._translated():
            return await self._reader.read(read, *args, **kwargs)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Driver errors become :class:`BackendUnavailable`, :class:`BackendError`, or
        ``_Conflict`` for a unique constraint."""
        try:
            yield
        except _CONFLICTS as exc:
            raise _Conflict(
                f"event store write conflicted: {_reason(exc)}", backend=self._backend
            ) from exc
        except sql_raw.DRIVER_ERRORS as exc:  # the driver's own: a statement or a connect
            unavailable = isinstance(exc, sql_raw.UNAVAILABLE_ERRORS)
            error = BackendUnavailable if unavailable else BackendError
            raise error(f"event store failed: {_reason(exc)}", backend=self._backend) from exc
        except SQLAlchemyError as exc:
            unavailable = isinstance(exc, InterfaceError) or (
                isinstance(exc, DBAPIError) and exc.connection_invalidated
            )
            error = BackendUnavailable if unavailable else BackendError
            raise error(f"event store failed: {_reason(exc)}", backend=self._backend) from exc
