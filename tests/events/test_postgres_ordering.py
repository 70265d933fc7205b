"""PostgreSQL: global positions are gap-free and in commit order under concurrent writers.

The property readers rely on: having read up to position ``N``, a reader never later finds a
newly committed event below ``N``, so a single number is a complete checkpoint. A plain
``bigserial`` does not give it (second test): values are taken at ``INSERT`` time, commits
happen in another order, and a reader that already passed a late-committing value skips it
for ever. The store hands positions out under the ``event_position`` row lock held to commit
(third test shows a second appender waiting for the first's commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import asyncpg
import pytest

from medianest.database import Database, upgrade
from medianest.events import ANY, NO_STREAM, NewEvent, RecordedEvent
from medianest.events.backends.pg_listener import asyncpg_dsn
from tests.support.event_stores import sql_event_store

WRITERS = 8
APPENDS_PER_WRITER = 30
DEADLINE = 120.0


@pytest.fixture
async def migrated(postgres_db: str) -> str:
    async with Database(postgres_db) as db:
        await upgrade(db)
    return postgres_db


async def _writer(url: str, index: int, seed: int) -> int:
    """One writer with its own connections: appends of 1-3 events to its own streams."""
    rng = random.Random(seed)
    written = 0
    async with sql_event_store(url) as store:
        for n in range(APPENDS_PER_WRITER):
            size = rng.randint(1, 3)
            stream = f"writer-{index}-{rng.randint(0, 3)}"
            events = [NewEvent("Tick", {"writer": index, "n": n, "i": i}) for i in range(size)]
            await store.append(stream, events, ANY)
            written += size
            if rng.random() < 0.3:
                await asyncio.sleep(0)  # let the others interleave differently
    return written


async def test_concurrent_writers_and_a_tailing_reader(migrated: str) -> None:
    seen: list[int] = []
    async with sql_event_store(migrated, poll_interval=60.0) as reader:
        subscription = reader.subscribe(batch_size=17)
        writers = asyncio.gather(
            *(_writer(migrated, index, seed=1000 + index) for index in range(WRITERS))
        )
        last = 0
        try:
            async with asyncio.timeout(DEADLINE):
                while True:
                    done = writers.done()
                    batch = await reader.read_all(last, limit=50)
                    for event in batch:
                        assert event.position > last, f"saw {event.position} after {last}"
                        assert event.position == last + 1, f"gap: {last} then {event.position}"
                        last = event.position
                        seen.append(event.position)
                    if done and not batch:
                        break
                total = sum(await writers)
                assert await reader.head_position() == total
                streamed: list[RecordedEvent] = []
                while len(streamed) < total:
                    streamed.append(await anext(subscription))
        finally:
            writers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writers
        await subscription.aclose()
    assert seen == list(range(1, total + 1))
    assert [e.position for e in streamed] == seen
    assert total >= WRITERS * APPENDS_PER_WRITER


async def test_a_plain_sequence_lets_a_reader_skip_an_event(postgres_db: str) -> None:
    """Why the store does not use ``bigserial`` for positions (deterministic, no timing)."""
    dsn = asyncpg_dsn(postgres_db)
    slow, fast, reader = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        await reader.execute("CREATE TABLE naive_log (position bigserial PRIMARY KEY, body text)")
        in_flight = slow.transaction()
        await in_flight.start()
        early = await slow.fetchval(
            "INSERT INTO naive_log (body) VALUES ('slow') RETURNING position"
        )
        late = await fast.fetchval(
            "INSERT INTO naive_log (body) VALUES ('fast') RETURNING position"
        )
        assert early < late
        seen = [r["position"] for r in await reader.fetch("SELECT position FROM naive_log")]
        assert seen == [late]
        checkpoint = max(seen)
        await in_flight.commit()
        after = "SELECT position FROM naive_log WHERE position > $1 ORDER BY position"
        assert await reader.fetch(after, checkpoint) == []
        everything = [r["position"] for r in await reader.fetch("SELECT position FROM naive_log")]
        assert early in everything  # committed, below the checkpoint: that reader never sees it
    finally:
        for conn in (slow, fast, reader):
            await conn.close()


async def test_an_appender_waits_for_the_commit_before_it(migrated: str) -> None:
    """An append in flight (here: a raw transaction holding the counter) makes the next
    appender wait; positions then follow commit order and a reader never skips one."""
    dsn = asyncpg_dsn(migrated)
    slow, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        async with sql_event_store(migrated) as store:
            in_flight = slow.transaction()
            await in_flight.start()
            first = await slow.fetchval(
                "UPDATE event_position SET last = last + 1 WHERE id = 1 RETURNING last"
            )
            assert first == 1
            second = asyncio.ensure_future(store.append("fast", [NewEvent("Fast")], NO_STREAM))
            async with asyncio.timeout(DEADLINE):
                while not await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ):
                    await asyncio.sleep(0.01)
            assert not second.done()
            assert await store.read_all() == []
            await slow.execute(
                "INSERT INTO events (position, id, stream_id, version, type, schema_version, "
                "data, metadata, recorded_at) VALUES (1, gen_random_uuid()::text, 'slow', 1, "
                "'Slow', 1, '{}', '{}', now())"
            )
            await slow.execute("INSERT INTO event_streams (stream_id, version) VALUES ('slow', 1)")
            await in_flight.commit()
            result = await asyncio.wait_for(second, DEADLINE)
            assert result.position == 2
            assert [(e.position, e.type) for e in await store.read_all()] == [
                (1, "Slow"),
                (2, "Fast"),
            ]
    finally:
        await slow.close()
        await watcher.close()
