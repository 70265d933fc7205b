"""What is specific to the SQL event store: migrations, transactions, the PostgreSQL listener."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select
from sqlalchemy.engine import make_url

from medianest.database import Database, upgrade
from medianest.errors import BackendError, BackendUnavailable, WrongExpectedVersion
from medianest.events import ANY, NO_STREAM, EventMetadata, NewEvent, RecordedEvent
from medianest.events.backends import sql_sqlite, sql_store
from medianest.events.backends.pg_listener import asyncpg_dsn
from medianest.events.backends.sql import SqlEventStore, load_checkpoint, save_checkpoint
from tests.support.event_stores import sql_event_store
from tests.support.waiting import until

DEADLINE = 20.0


async def _migrate(url: str) -> None:
    async with Database(url) as db:
        await upgrade(db)


async def test_a_rolled_back_append_gives_its_positions_back(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _migrate(database_url)

    async def failing_insert(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("crash after the positions were claimed")

    def failing_insert_in_thread(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("crash after the positions were claimed")

    async with sql_event_store(database_url) as store:
        await store.append("s", [NewEvent("A")], NO_STREAM)
        with monkeypatch.context() as patched:  # the async path, and SQLite's writer thread
            patched.setattr(sql_store, "insert_events", failing_insert)
            patched.setattr(sql_sqlite.Transaction, "insert_events", failing_insert_in_thread)
            with pytest.raises(RuntimeError):
                await store.append("s", [NewEvent("B"), NewEvent("C")], 1)
        assert await store.head_position() == 1
        assert await store.stream_version("s") == 1
        result = await store.append("s", [NewEvent("D")], 1)
        assert (result.next_version, result.position) == (2, 2)
        assert [e.position for e in await store.read_all()] == [1, 2]


async def test_a_read_model_keeps_its_checkpoint_in_its_own_transaction(
    database_url: str,
) -> None:
    """Read model rows and the checkpoint commit (or roll back) together."""
    await _migrate(database_url)
    model = Table("request_counts", MetaData(), Column("n", Integer, primary_key=True))
    async with sql_event_store(database_url) as store:
        async with store.database.begin() as conn:
            await conn.run_sync(model.metadata.create_all)
        await store.append("s", [NewEvent("A"), NewEvent("B")], NO_STREAM)
        (first, second) = await store.read_all()

        async def project(position: int, *, crash: bool = False) -> None:
            async with store.database.begin() as conn:
                await conn.execute(insert(model).values(n=position))
                await save_checkpoint(conn, "counts", position)
                if crash:
                    raise RuntimeError("the projection crashed before commit")

        await project(first.position)
        with pytest.raises(RuntimeError):
            await project(second.position, crash=True)
        assert await store.load_checkpoint("counts") == first.position
        async with store.database.connect() as conn:
            assert await load_checkpoint(conn, "counts") == first.position
            rows = (await conn.execute(select(model.c.n))).scalars().all()
        assert rows == [first.position]


async def test_an_unmigrated_database_is_a_clear_error(database_url: str) -> None:
    async with Database(database_url) as db:
        store = SqlEventStore.from_url(database_url, database=db)
        with pytest.raises(BackendError, match="event_position"):
            await store.start()
        await store.close()


def test_repr_masks_the_password() -> None:
    store = SqlEventStore.from_url("postgresql://mn:s3cret@db.example:5432/medianest")
    assert "s3cret" not in repr(store)
    assert "mn:***@db.example" in repr(store)
    assert store.database.url.startswith("postgresql+asyncpg://")


async def test_listener_reconnects_and_live_subscriptions_keep_waking(postgres_db: str) -> None:
    await _migrate(postgres_db)
    async with (
        sql_event_store(postgres_db, poll_interval=60.0) as store,
        sql_event_store(postgres_db, poll_interval=60.0) as peer,
    ):
        subscription = store.subscribe()
        await peer.append("s", [NewEvent("Before")], NO_STREAM)
        async with asyncio.timeout(DEADLINE):
            assert (await anext(subscription)).type == "Before"
        listener = store.listener
        assert listener is not None
        admin = await asyncpg.connect(asyncpg_dsn(postgres_db))
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", listener.backend_pid)
        finally:
            await admin.close()
        async with asyncio.timeout(DEADLINE):
            while listener.reconnections < 1:
                await asyncio.sleep(0.01)
        await peer.append("s", [NewEvent("After")], ANY)
        async with asyncio.timeout(DEADLINE):
            assert (await anext(subscription)).type == "After"
        await subscription.aclose()


async def _terminate(dsn: str, pid: int) -> None:
    """End the server session ``pid`` as an administrator would, and wait until it is gone."""
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)

        async def gone() -> bool:
            query = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
            return not await admin.fetchval(query, pid)

        await until(gone, f"server session {pid} to end")
    finally:
        await admin.close()


async def test_reads_succeed_after_their_connection_was_ended(postgres_db: str) -> None:
    """The store's own read connection skips the pool's pre-ping: when the server ended it
    while it was idle, the next read still answers, in full, on a new connection."""
    await _migrate(postgres_db)
    async with sql_event_store(postgres_db, poll_interval=60.0) as store:
        await store.append("s", [NewEvent("A"), NewEvent("B")], NO_STREAM)
        await store.append("t", [NewEvent("C")], NO_STREAM)
        reads: dict[str, tuple[Callable[[], Awaitable[list[RecordedEvent]]], list[str]]] = {
            "read_all": (store.read_all, ["A", "B", "C"]),
            "read_all from 1": (lambda: store.read_all(1, limit=1), ["B"]),
            "read_stream": (lambda: store.read_stream("s", backwards=True), ["B", "A"]),
        }
        for name, (read, expected) in reads.items():
            assert [e.type for e in await read()] == expected, name
            reader = store._reader.driver
            assert reader is not None
            pid = reader.conn.get_server_pid()
            await _terminate(asyncpg_dsn(postgres_db), pid)
            assert [e.type for e in await read()] == expected, name
            assert store._reader.driver is not None
            assert store._reader.driver.conn.get_server_pid() != pid  # the read did meet the loss
        reader = store._reader.driver
        assert reader is not None
        await _terminate(asyncpg_dsn(postgres_db), reader.conn.get_server_pid())
        assert await store.head_position() == 3
        assert await store.stream_version("s") == 2


async def test_a_read_the_server_cancelled_is_not_run_again(postgres_db: str) -> None:
    """A statement stopped by ``statement_timeout`` did not lose its connection: running it
    again would only take as long, so the caller hears of it at once."""
    await _migrate(postgres_db)
    async with sql_event_store(postgres_db, poll_interval=60.0) as store:
        await store.read_all()  # the kept read connection is open
        kept = store._reader.driver
        assert kept is not None
        await kept.conn.execute("SET statement_timeout = 50")
        runs: list[int] = []

        async def slow(driver: Any) -> None:
            runs.append(driver.conn.get_server_pid())
            await driver.conn.execute("SELECT pg_sleep(5)")

        with pytest.raises(BackendError, match="statement timeout"):
            await store._read(slow)
        assert len(runs) == 1, "a cancelled statement is not retried"
        assert [e.type for e in await store.read_all()] == []


class _Relay:
    """A TCP relay to a server that a test can reset (its connections cut, as a proxy or a
    restart would) and shut (new connections refused too, the server unreachable)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def reset(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        async with asyncio.timeout(DEADLINE):
            while self._tasks:
                await asyncio.wait(set(self._tasks))

    async def shut(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self.reset()
        await self._server.wait_closed()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in (writer, up_writer):
                w.transport.abort()
                self._writers.discard(w)
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


async def test_reads_through_a_lost_network(postgres_db: str) -> None:
    """A reset connection is read again on a new one; an unreachable database is
    :class:`BackendUnavailable` to the caller; reads work again once it is back."""
    await _migrate(postgres_db)
    url = make_url(postgres_db)
    relay = _Relay(url.host or "127.0.0.1", url.port or 5432)
    await relay.open()
    relayed = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    try:
        async with (
            Database(relayed) as db,
            SqlEventStore.from_url(relayed, database=db, listen=False) as store,
        ):
            await store.append("s", [NewEvent("A"), NewEvent("B")], NO_STREAM)
            assert [e.position for e in await store.read_all()] == [1, 2]
            await relay.reset()
            assert [e.position for e in await store.read_all()] == [1, 2]
            await relay.shut()
            with pytest.raises(BackendUnavailable):
                await store.read_all()
            with pytest.raises(BackendUnavailable):
                await store.head_position()
            await relay.open()
            assert [e.position for e in await store.read_all()] == [1, 2]
            assert await store.head_position() == 2
    finally:
        await relay.shut()


async def test_events_read_back_equal_and_typed_as_written(database_url: str) -> None:
    """Events read from the database (decoded on use) are the values the memory store and a
    caller build: same types, equal, same repr."""
    await _migrate(database_url)
    metadata = EventMetadata(correlation_id="c", user="u", extra={"k": "v"})
    async with sql_event_store(database_url) as store:
        await store.append("s", [NewEvent("A", {"n": (1, 2)}, metadata)], NO_STREAM)
        (read,) = await store.read_all()
        (again,) = await store.read_stream("s")
    assert isinstance(read.id, UUID)
    assert read.recorded_at.tzinfo is UTC
    assert read.data == {"n": [1, 2]}
    assert read.metadata == metadata
    built = RecordedEvent(read.id, "s", 1, 1, "A", 1, {"n": [1, 2]}, metadata, read.recorded_at)
    assert read == again == built
    assert repr(again) == repr(built)
    assert dataclasses.replace(read, type="B") == dataclasses.replace(built, type="B")


async def test_sqlite_in_memory_writes_and_reads_through_the_pool() -> None:
    """An in-memory SQLite database has no file for the writer thread or a read connection
    of the store's own: groups commit statement by statement on the pooled connection."""
    async with Database("sqlite+aiosqlite:///:memory:") as db:
        await upgrade(db)
        async with SqlEventStore.from_url("sqlite://", database=db) as store:
            first = NewEvent("A", {"x": 1})
            assert (await store.append("s", [first], NO_STREAM)).position == 1
            assert (await store.append("s", [first], NO_STREAM)).position == 1  # a retry
            with pytest.raises(WrongExpectedVersion):
                await store.append("s", [NewEvent("A")], NO_STREAM)
            await asyncio.gather(*(store.append(f"t{i}", [NewEvent("B")], ANY) for i in range(5)))
            found = await store.read_all()
            assert [e.position for e in found] == [1, 2, 3, 4, 5, 6]
            assert found[0] == (await store.read_stream("s"))[0]
            assert found[0].data == {"x": 1}
            assert await store.head_position() == 6
