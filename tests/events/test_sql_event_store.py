"""What is specific to the SQL event store: migrations, transactions, the PostgreSQL listener."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select

from medianest.database import Database, upgrade
from medianest.errors import BackendError
from medianest.events import ANY, NO_STREAM, NewEvent
from medianest.events.backends import sql_store
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
    real_insert = sql_store.insert_events

    async def failing_insert(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("crash after the positions were claimed")

    async with sql_event_store(database_url) as store:
        await store.append("s", [NewEvent("A")], NO_STREAM)
        monkeypatch.setattr(sql_store, "insert_events", failing_insert)
        with pytest.raises(RuntimeError):
            await store.append("s", [NewEvent("B"), NewEvent("C")], 1)
        monkeypatch.setattr(sql_store, "insert_events", real_insert)
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
