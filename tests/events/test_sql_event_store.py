"""What is specific to the SQL event store: migrations, transactions, the PostgreSQL listener."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select

from medianest.database import Database, upgrade
from medianest.errors import BackendError, BackendUnavailable, WrongExpectedVersion
from medianest.events import ANY, NO_STREAM, EventMetadata, NewEvent, RecordedEvent
from medianest.events.backends import sql_sqlite, sql_store
from medianest.events.backends.pg_listener import asyncpg_dsn
from medianest.events.backends.sql import SqlEventStore, load_checkpoint, save_checkpoint
from tests.support.event_stores import sql_event_store

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


async def test_reads_recover_after_their_connection_is_lost(postgres_db: str) -> None:
    """The store's own read connection is dropped when it fails; the next read opens one."""
    await _migrate(postgres_db)
    async with sql_event_store(postgres_db, poll_interval=60.0) as store:
        await store.append("s", [NewEvent("A")], NO_STREAM)
        assert [e.type for e in await store.read_all()] == ["A"]
        reader = store._reader
        assert reader is not None
        pid = reader.conn.get_server_pid()
        admin = await asyncpg.connect(asyncpg_dsn(postgres_db))
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            async with asyncio.timeout(DEADLINE):
                while await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
                ):
                    await asyncio.sleep(0.01)
        finally:
            await admin.close()
        with pytest.raises(BackendUnavailable):
            await store.read_all()
        assert [e.type for e in await store.read_all()] == ["A"]
        assert await store.head_position() == 1


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
