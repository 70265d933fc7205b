"""Every message broker backend under test, as a table of factories (one row per backend).

``tests/contracts/test_messaging.py`` runs every test on every row. A row is a
:class:`BrokerRow` whose ``make(tmp_path, name)`` is an async context manager yielding a
**started** broker, closed on exit:

* ``tmp_path`` is the test's own directory: embedded backends keep their files there;
* ``name`` is a prefix unique to the test (``t`` + 10 hex digits): a server-backed row
  must build its broker so that streams, exchanges, queues or subjects carry it, so that
  tests never see each other's messages, groups or dead letters on a shared server;
* the broker must be built with :data:`TEST_OPTIONS` (a short ``drain_timeout``, a fast
  default retry policy): the suite relies on them;
* a row whose server is absent calls :func:`~tests.support.services.require_service`, which
  skips (or fails under ``MEDIANEST_REQUIRE_SERVICES=1``).

``ordered_keys`` says whether the backend promises per-key ordering; the suite checks that
the broker says the same (:attr:`~medianest.messaging.base.Broker.ordered_keys`) and runs
the ordering test on those rows only.

Adding a backend is adding a row::

    @contextlib.asynccontextmanager
    async def _redis(tmp_path: Path, name: str) -> AsyncIterator[Broker]:
        url = require_service("redis")
        async with create_broker(f"{url}?prefix={name}", **TEST_OPTIONS) as broker:
            yield broker

    ROWS["redis"] = BrokerRow(_redis)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medianest.messaging import Broker, DeadLetter, Message, RetryPolicy, create_broker

DEADLINE = 20.0
"""Seconds a test waits for a condition before it fails."""

DRAIN_TIMEOUT = 1.0
"""Seconds ``close`` gives running handlers in tests (the production default is 10)."""

TEST_RETRY = RetryPolicy(max_attempts=3, initial=0.05, multiplier=2.0, maximum=1.0)

TEST_OPTIONS: dict[str, Any] = {"drain_timeout": DRAIN_TIMEOUT, "retry": TEST_RETRY}
"""Options every row passes to its broker."""

BrokerFactory = Callable[[Path, str], AbstractAsyncContextManager[Broker]]


@dataclass(frozen=True)
class BrokerRow:
    """How to build one backend, and what it promises beyond the common contract."""

    make: BrokerFactory
    ordered_keys: bool = False


@contextlib.asynccontextmanager
async def _memory(tmp_path: Path, name: str) -> AsyncIterator[Broker]:
    async with create_broker("memory://", **TEST_OPTIONS) as broker:
        yield broker


@contextlib.asynccontextmanager
async def _sqlite(tmp_path: Path, name: str) -> AsyncIterator[Broker]:
    url = f"sqlite:///{tmp_path / f'{name}-broker.db'}"
    async with create_broker(url, poll_interval=0.05, **TEST_OPTIONS) as broker:
        yield broker


def _server_row(kind: str) -> BrokerFactory:
    def make(tmp_path: Path, name: str) -> AbstractAsyncContextManager[Broker]:
        from tests.support import server_brokers

        factory: Any = getattr(server_brokers, f"{kind}_broker")
        made: AbstractAsyncContextManager[Broker] = factory(tmp_path, name)
        return made

    return make


ROWS: dict[str, BrokerRow] = {
    "memory": BrokerRow(_memory, ordered_keys=True),
    "sqlite": BrokerRow(_sqlite, ordered_keys=True),
    "redis": BrokerRow(_server_row("redis")),
    "amqp": BrokerRow(_server_row("amqp")),
    "nats": BrokerRow(_server_row("nats")),
}
"""Backend name → row; the conformance suite is parametrized over these names."""


# -- helpers of the suites -------------------------------------------------------------------


class Inbox:
    """A handler that keeps what it gets and lets a test wait for a condition on it."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[list[Message]], bool]) -> list[Message]:
        async with asyncio.timeout(DEADLINE):
            while not predicate(self.messages):
                self._changed.clear()
                await self._changed.wait()
        return self.messages

    async def wait_count(self, count: int) -> list[Message]:
        return await self.wait_for(lambda got: len(got) >= count)

    @property
    def topics(self) -> set[str]:
        return {m.topic for m in self.messages}


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(DEADLINE):
        while not await check():
            await asyncio.sleep(0.02)


async def dead_letters_of(broker: Broker, count: int, **filters: Any) -> list[DeadLetter]:
    """Wait until the broker lists ``count`` dead letters (with ``filters``)."""
    found: list[DeadLetter] = []

    async def enough() -> bool:
        nonlocal found
        found = await broker.dead_letters(**filters)
        return len(found) >= count

    await eventually(enough)
    return found


async def unacked_messages_count_as_lag(
    broker: Any, settled: Callable[[], Awaitable[bool]] | None = None
) -> None:
    """For brokers whose lag counts delivered but unacknowledged messages (Redis, NATS):
    five messages held by handlers show as a lag of 5, then 0 once they are acked (and
    ``settled`` holds: the server's own view, when a test checks it)."""
    release = asyncio.Event()
    done = Inbox()

    async def handler(message: Message) -> None:
        await release.wait()
        await done(message)

    subscription = await broker.subscribe("lag.*", "counted", handler, concurrency=2)
    for n in range(5):
        await broker.publish(Message("lag.item", {"n": n}))

    async def five() -> bool:
        return bool((await broker.refresh_lag()) == {"counted": 5})

    await eventually(five)
    release.set()
    await done.wait_count(5)

    async def none() -> bool:
        zero = (await broker.refresh_lag()) == {"counted": 0}
        return bool(zero and (settled is None or await settled()))

    await eventually(none)
    assert broker.lag() == {"counted": 0}
    await subscription.close()
