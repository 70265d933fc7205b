"""Idempotent consumers: one effect per message id and group, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.database import Database, upgrade
from medianest.database.schema import instance_metadata, processed_messages
from medianest.errors import ValidationError
from medianest.messaging import Message
from medianest.messaging.backends.memory import MemoryBroker
from medianest.messaging.idempotency import IdempotentConsumer, idempotent, takes_connection
from tests.support.brokers import DEADLINE, TEST_RETRY, Inbox


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with Database(database_url) as database:
        await upgrade(database)
        yield database


async def effects(db: Database) -> list[str]:
    """Keys the test handlers wrote (``instance_metadata`` rows ``effect:<message id>``)."""
    async with db.connect() as conn:
        result = await conn.execute(
            select(instance_metadata.c.key)
            .where(instance_metadata.c.key.like("effect:%"))
            .order_by(instance_metadata.c.key)
        )
        return [row[0] for row in result]


async def records(db: Database) -> int:
    async with db.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(processed_messages))).scalar_one()
        )


async def write_effect(message: Message, conn: AsyncConnection) -> None:
    await conn.execute(insert(instance_metadata).values(key=f"effect:{message.id}", value="1"))


async def test_a_transactional_handler_takes_effect_once(db: Database) -> None:
    consumer = IdempotentConsumer(db, "catalog")
    message = Message("media.added", {"n": 1})
    assert await consumer.handle_in_transaction(message, write_effect) is True
    assert await consumer.handle_in_transaction(message, write_effect) is False
    assert await effects(db) == [f"effect:{message.id}"]
    assert await consumer.processed(message.id)
    other_group = IdempotentConsumer(db, "auditor")
    assert not await other_group.processed(message.id)


async def test_a_failing_transactional_handler_leaves_no_trace(db: Database) -> None:
    consumer = IdempotentConsumer(db, "catalog")
    message = Message("media.added", {"n": 1})

    async def half_done(message: Message, conn: AsyncConnection) -> None:
        await write_effect(message, conn)
        raise RuntimeError("failed after writing")

    with pytest.raises(RuntimeError):
        await consumer.handle_in_transaction(message, half_done)
    assert await effects(db) == []
    assert not await consumer.processed(message.id)
    assert await consumer.handle_in_transaction(message, write_effect) is True
    assert await effects(db) == [f"effect:{message.id}"]


async def test_concurrent_duplicates_take_effect_once(db: Database) -> None:
    consumer = IdempotentConsumer(db, "catalog")
    message = Message("media.added", {"n": 1})
    entered, gate = asyncio.Event(), asyncio.Event()
    runs = 0

    async def slow(message: Message, conn: AsyncConnection) -> None:
        nonlocal runs
        runs += 1
        entered.set()
        await gate.wait()
        await write_effect(message, conn)

    first = asyncio.create_task(consumer.handle_in_transaction(message, slow))
    async with asyncio.timeout(DEADLINE):
        await entered.wait()
    second = asyncio.create_task(consumer.handle_in_transaction(message, slow))
    done, _ = await asyncio.wait({second}, timeout=0.1)
    assert not done  # waits for the first one's record
    gate.set()
    async with asyncio.timeout(DEADLINE):
        outcomes = await asyncio.gather(first, second)
    assert outcomes == [True, False]
    assert runs == 1
    assert await effects(db) == [f"effect:{message.id}"]


async def test_a_plain_handler_is_skipped_once_recorded(db: Database) -> None:
    consumer = IdempotentConsumer(db, "notifier")
    calls: list[int] = []
    message = Message("requests.approved", {"n": 1})

    async def notify(message: Message) -> None:
        calls.append(message.attempt)
        if len(calls) == 1:
            raise RuntimeError("first try fails: not recorded")

    with pytest.raises(RuntimeError):
        await consumer.handle(message, notify)
    assert await consumer.handle(message, notify) is True
    assert await consumer.handle(message, notify) is False
    assert calls == [1, 1]
    assert await records(db) == 1


async def test_expired_records_are_pruned(db: Database) -> None:
    now = [datetime.now(UTC)]
    consumer = IdempotentConsumer(db, "catalog", ttl=60, clock=lambda: now[0])
    old, fresh = Message("a.b", {}), Message("a.b", {})
    await consumer.handle(old, Inbox())
    now[0] += timedelta(seconds=30)
    await consumer.handle(fresh, Inbox())
    now[0] += timedelta(seconds=31)
    assert await consumer.prune() == 1
    assert not await consumer.processed(old.id)
    assert await consumer.processed(fresh.id)


async def test_wrapped_handlers_under_redelivery(db: Database) -> None:
    """Through a broker: a duplicate publish and a retry after a late failure."""
    async with MemoryBroker(retry=TEST_RETRY, drain_timeout=1.0) as broker:
        done = Inbox()

        @idempotent(db, "catalog")
        async def store(message: Message, conn: AsyncConnection) -> None:
            await write_effect(message, conn)
            if message.attempt == 1 and message.payload["fail"]:
                raise RuntimeError("failed after writing: rolled back, retried")
            await done(message)

        subscription = await broker.subscribe("media.*", "catalog", store)
        twice = Message("media.added", {"fail": False})
        retried = Message("media.added", {"fail": True})
        for message in (twice, twice, retried):
            await broker.publish(message)
        await done.wait_for(lambda got: retried.id in {m.id for m in got})
        await subscription.close()
    assert sorted(await effects(db)) == sorted(f"effect:{m.id}" for m in (twice, retried))
    assert [m.id for m in done.messages].count(twice.id) == 1


def test_handler_kinds_are_told_apart() -> None:
    async def plain(message: Message) -> None: ...

    async def transactional(message: Message, conn: AsyncConnection) -> None: ...

    async def with_default(message: Message, extra: int = 1) -> None: ...

    assert not takes_connection(plain)
    assert takes_connection(transactional)
    assert not takes_connection(with_default)


def test_bad_options_are_refused() -> None:
    database = Database("sqlite+aiosqlite:///:memory:")
    with pytest.raises(ValidationError):
        IdempotentConsumer(database, "Bad Group")
    with pytest.raises(ValidationError):
        IdempotentConsumer(database, "ok", ttl=0)
