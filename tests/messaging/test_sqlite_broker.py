"""What is specific to the SQLite broker: its file survives restarts and is shared by processes.

The contract itself is checked by ``tests/contracts/test_messaging.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from medianest.errors import ConfigurationError
from medianest.messaging import Message, RetryPolicy, create_broker
from medianest.messaging.backends.sqlite import SqliteBroker, sqlite_path
from tests.support.brokers import Inbox, dead_letters_of, eventually

DEADLINE = 30.0
ONCE = RetryPolicy(max_attempts=1)

PUBLISHER = textwrap.dedent(
    """
    import asyncio, sys
    from medianest.messaging import Message
    from medianest.messaging.backends.sqlite import SqliteBroker

    async def main() -> None:
        async with SqliteBroker(sys.argv[1]) as broker:
            for n in range(int(sys.argv[2])):
                await broker.publish(Message("remote.made", {"n": n}, key="k"))
        print("published", flush=True)

    asyncio.run(main())
    """
)

DOOMED_CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    from medianest.messaging.backends.sqlite import SqliteBroker

    async def main() -> None:
        broker = SqliteBroker(sys.argv[1], lease=float(sys.argv[2]), poll_interval=0.05)
        await broker.start()

        async def handler(message):
            print("handling", message.id, message.attempt, flush=True)
            await asyncio.Event().wait()

        await broker.subscribe("work.*", "crashers", handler)
        print("subscribed", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@contextlib.asynccontextmanager
async def broker_at(path: Path, **options: Any) -> AsyncIterator[SqliteBroker]:
    options.setdefault("poll_interval", 0.05)
    options.setdefault("drain_timeout", 1.0)
    async with SqliteBroker(str(path), **options) as broker:
        yield broker


async def child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "MEDIANEST_CONFIG": ""},
    )


async def read_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(DEADLINE):
        return (await process.stdout.readline()).decode().strip()


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


async def test_messages_and_dead_letters_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    sent = [Message("keep.this", {"n": n}, headers={"x-n": str(n)}) for n in range(3)]
    async with broker_at(path) as broker:
        await (await broker.subscribe("keep.*", "keepers", Inbox())).close()
        failing = await broker.subscribe("doom.*", "doomed", _fail, retry=ONCE)
        for message in sent:
            await broker.publish(message)
        await broker.publish(Message("doom.now", {"n": 0}))
        [letter] = await dead_letters_of(broker, 1)
        await failing.close()

    async with broker_at(path) as broker:
        assert [d.id for d in await broker.dead_letters()] == [letter.id]
        inbox = Inbox()
        subscription = await broker.subscribe("keep.*", "keepers", inbox)
        got = await inbox.wait_count(3)
        assert sorted(m.id for m in got) == sorted(m.id for m in sent)
        assert {m.headers["x-n"] for m in got} == {"0", "1", "2"}
        assert all(m.attempt == 1 for m in got)
        await subscription.close()


async def _fail(message: Message) -> None:
    raise RuntimeError("always")


async def test_another_process_publishes_and_polling_delivers(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    async with broker_at(path) as broker:
        inbox = Inbox()
        subscription = await broker.subscribe("remote.*", "listeners", inbox)
        publisher = await child(PUBLISHER, str(path), "20")
        assert await read_line(publisher) == "published"
        assert await publisher.wait() == 0
        got = await inbox.wait_count(20)
        assert [m.payload["n"] for m in got] == list(range(20))  # one key: in order
        await subscription.close()


async def test_two_brokers_on_one_file_share_groups(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    async with broker_at(path) as one, broker_at(path) as two:
        split: dict[str, list[str]] = {"one": [], "two": []}
        done = Inbox()

        def consumer(name: str) -> Any:
            async def handle(message: Message) -> None:
                split[name].append(message.id)
                await done(message)

            return handle

        subscriptions = [
            await one.subscribe("shared.*", "pool", consumer("one")),
            await two.subscribe("shared.*", "pool", consumer("two")),
        ]
        others = Inbox()
        subscriptions.append(await two.subscribe("shared.#", "audit", others))
        sent = [Message("shared.job", {"n": n}) for n in range(30)]
        for message in sent:
            await one.publish(message)
        await done.wait_count(30)
        await others.wait_count(30)
        assert sorted(split["one"] + split["two"]) == sorted(m.id for m in sent)
        assert sorted(m.id for m in others.messages) == sorted(m.id for m in sent)
        for subscription in subscriptions:
            await subscription.close()


async def test_a_killed_consumer_loses_its_lease_and_the_message_comes_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "broker.db"
    doomed = await child(DOOMED_CONSUMER, str(path), "1.0")
    try:
        assert await read_line(doomed) == "subscribed"
        async with broker_at(path) as broker:
            sent = Message("work.item", {"n": 1})
            await broker.publish(sent)
            assert (await read_line(doomed)).split() == ["handling", sent.id, "1"]
            doomed.send_signal(signal.SIGKILL)
            assert await doomed.wait() == -signal.SIGKILL

            inbox = Inbox()
            subscription = await broker.subscribe("work.*", "crashers", inbox)
            [got] = await inbox.wait_count(1)
            assert (got.id, got.attempt) == (sent.id, 2)
            await subscription.close()
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()


async def test_close_sends_acks_whose_sender_it_had_to_cancel(tmp_path: Path) -> None:
    """A handler returns while another statement of this process holds a transaction, so
    its ack waits; ``close`` gives up on the task sending it after ``drain_timeout`` and
    cancels it -- and still acks the message before returning: it does not come back."""
    path = tmp_path / "broker.db"
    async with broker_at(path, drain_timeout=0.2, lease=1.0) as broker:
        started, release = asyncio.Event(), asyncio.Event()
        handled: list[str] = []

        async def handler(message: Message) -> None:
            started.set()
            await release.wait()
            handled.append(message.id)

        subscription = await broker.subscribe("acked.*", "finishers", handler)
        first = Message("acked.job", {"n": 1}, key="k")
        await broker.publish(first)
        async with asyncio.timeout(DEADLINE):
            await started.wait()
        async with broker.store.transaction():
            release.set()  # the handler returns; its ack waits for the transaction
            closing = asyncio.create_task(subscription.close())

            async def sender_cancelled() -> bool:
                return subscription.in_flight == 0

            await eventually(sender_cancelled)
        async with asyncio.timeout(DEADLINE):
            await closing
        assert handled == [first.id]
        assert await asyncio.to_thread(rows, path, "SELECT COUNT(*) FROM deliveries") == [(0,)]

        inbox = Inbox()
        second = Message("acked.job", {"n": 2}, key="k")
        await broker.publish(second)
        successor = await broker.subscribe("acked.*", "finishers", inbox)
        [got] = await inbox.wait_count(1)
        assert got.id == second.id  # the first one was acked: it does not come back
        await successor.close()


async def test_an_unreadable_envelope_is_dead_lettered(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    async with broker_at(path) as broker:
        inbox = Inbox()
        subscription = await broker.subscribe("odd.*", "readers", inbox)

        def insert_garbage() -> None:
            with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
                conn.execute(
                    "INSERT INTO messages (id, topic, envelope, published_at, groups, "
                    "bindings_version) VALUES ('x-1', 'odd.thing', '{\"v\": 99}', 0, "
                    "'[\"readers\"]', (SELECT value FROM broker_meta WHERE key = "
                    "'bindings_version'))"
                )

        await asyncio.to_thread(insert_garbage)
        [letter] = await dead_letters_of(broker, 1)
        assert letter.group == "readers"
        assert "unreadable envelope" in letter.error
        assert "99" in letter.error
        assert inbox.messages == []
        await subscription.close()


async def test_delivered_messages_are_pruned_and_lag_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    async with broker_at(path, prune_interval=0.05, lag_interval=0.05) as broker:
        await (await broker.subscribe("lag.*", "slowpokes", Inbox())).close()
        for n in range(4):
            await broker.publish(Message("lag.item", {"n": n}))

        async def lag_seen() -> bool:
            return broker.lag().get("slowpokes") == 4

        await eventually(lag_seen)
        inbox = Inbox()
        subscription = await broker.subscribe("lag.*", "slowpokes", inbox)
        await inbox.wait_count(4)

        async def pruned() -> bool:
            left = await asyncio.to_thread(rows, path, "SELECT COUNT(*) FROM messages")
            return broker.lag().get("slowpokes") == 0 and left == [(0,)]

        await eventually(pruned)
        await subscription.close()


async def test_publishing_a_stored_message_again_does_nothing(tmp_path: Path) -> None:
    async with broker_at(tmp_path / "broker.db") as broker:
        inbox = Inbox()
        subscription = await broker.subscribe("once.*", "readers", inbox)
        sent = Message("once.only", {})
        await broker.publish(sent)
        await broker.publish(sent)
        await broker.publish(Message("once.more", {}))
        got = await inbox.wait_count(2)
        assert [m.topic for m in got] == ["once.only", "once.more"]
        await subscription.close()


def test_urls_name_the_file_like_sqlalchemy() -> None:
    assert sqlite_path("sqlite:///data/broker.db") == "data/broker.db"
    assert sqlite_path("sqlite:////var/lib/mn/broker.db") == "/var/lib/mn/broker.db"
    assert sqlite_path("sqlite+aiosqlite:///b.db?x=1") == "b.db"
    for bad in ("sqlite://", "sqlite:///", "sqlite://host/b.db"):
        with pytest.raises(ConfigurationError):
            sqlite_path(bad)


async def test_create_broker_makes_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "broker.db"
    async with create_broker(f"sqlite:///{path}") as broker:
        await broker.ping()
    assert path.exists()
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]


async def test_a_group_subscribed_in_another_process_gets_the_next_publish(
    tmp_path: Path,
) -> None:
    path = tmp_path / "broker.db"
    async with broker_at(path) as publisher, broker_at(path) as other:
        early = Inbox()
        first = await publisher.subscribe("news.*", "early", early)
        await publisher.publish(Message("news.one", {}))  # routes cached: only "early"
        await early.wait_count(1)
        late = Inbox()
        second = await other.subscribe("news.#", "late", late)
        sent = Message("news.two", {})
        await publisher.publish(sent)  # stale routes: reloaded, then published
        [got] = await late.wait_count(1)
        assert got.id == sent.id
        await early.wait_count(2)
        await first.close()
        await second.close()
