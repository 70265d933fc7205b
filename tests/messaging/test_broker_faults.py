"""Faults against the real servers: Redis Streams, RabbitMQ and NATS JetStream.

* a consumer process killed (SIGKILL) in the middle of its handler, before its ack: the
  message goes to another consumer of the group, counted as a second attempt;
* the server restarted while a publisher publishes and a consumer consumes: publishes made
  while it is down raise :class:`~medianest.errors.BackendUnavailable` (the publisher here
  backs off and goes on, as a caller's retry policy would), the consumer comes back without
  help, and every message whose publish returned arrives — each id is counted end to end.

Redis and NATS are restarted as private instances of the machine's own servers
(:mod:`tests.support.broker_servers`), RabbitMQ as the shared server's application.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from medianest.errors import BackendUnavailable
from medianest.messaging import Broker, Message, RetryPolicy, create_broker
from tests.support.broker_servers import (
    PrivateServer,
    SharedRabbit,
    private_nats,
    private_redis,
    shared_rabbitmq,
)
from tests.support.brokers import DRAIN_TIMEOUT, Inbox
from tests.support.server_brokers import (
    SERVER_OPTIONS,
    amqp_broker,
    delete_amqp,
    nats_broker,
    redis_broker,
    server_url,
)

ROOT = Path(__file__).resolve().parents[2]
FACTORIES: dict[str, Callable[[Path, str], AbstractAsyncContextManager[Broker]]] = {
    "redis": redis_broker,
    "rabbitmq": amqp_broker,
    "nats": nats_broker,
}
RESTART_DEADLINE = 90.0
"""Seconds a restart test may take before it fails (RabbitMQ takes a few to come back)."""


def unique_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


# -- a consumer killed before its ack ----------------------------------------------------


@contextlib.asynccontextmanager
async def consumer_process(
    url: str, options: dict[str, Any], pattern: str, group: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.messaging.consumer_process",
        url,
        json.dumps(options),
        pattern,
        group,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(30):
        line = await process.stdout.readline()
    assert line, "the consumer process ended"
    return line.decode().strip()


@pytest.mark.parametrize("service", sorted(FACTORIES))
async def test_a_consumer_killed_before_its_ack_hands_the_message_to_another(
    service: str, tmp_path: Path
) -> None:
    name = unique_name()
    async with FACTORIES[service](tmp_path, name) as broker:
        options = {"prefix": name, "drain_timeout": DRAIN_TIMEOUT, **SERVER_OPTIONS[service]}
        async with consumer_process(server_url(service), options, "jobs.*", "workers") as child:
            assert await read_line(child) == "ready"
            sent = Message("jobs.encode", {"file": "movie.mkv"})
            await broker.publish(sent)
            assert await read_line(child) == f"got {sent.id} 1"
            child.kill()  # SIGKILL in the middle of the handler: no ack, no goodbye
            await child.wait()

        inbox = Inbox()
        survivor = await broker.subscribe("jobs.*", "workers", inbox)
        [got] = await inbox.wait_count(1)
        assert (got.id, got.attempt, got.payload) == (sent.id, 2, {"file": "movie.mkv"})
        await survivor.close()


# -- the server restarted mid-stream -----------------------------------------------------


class Load:
    """Publishes numbered messages one after another, recording the ids whose publish
    returned (acknowledged) and the errors of those that did not."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.acknowledged: list[str] = []
        self.refused: list[BackendUnavailable] = []
        self.stop = asyncio.Event()
        self._changed = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            message = Message("load.item", {"n": n})
            n += 1
            try:
                await self.broker.publish(message)
            except BackendUnavailable as exc:
                self.refused.append(exc)
                await asyncio.sleep(0.05)  # the publisher's own back-off before the next one
            else:
                self.acknowledged.append(message.id)
                await asyncio.sleep(0.005)  # a steady stream, not a flood
            self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(RESTART_DEADLINE):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


async def publish_through_a_restart(
    server: PrivateServer | SharedRabbit, publisher: Broker, consumer: Broker
) -> None:
    """Publish while ``server`` stops and starts again; check every acknowledged id."""
    received: set[str] = set()
    arrived = asyncio.Event()

    async def count(message: Message) -> None:
        received.add(message.id)
        arrived.set()

    subscription = await consumer.subscribe(
        "load.*", "counters", count, retry=RetryPolicy(max_attempts=100), concurrency=8
    )
    load = Load(publisher)
    task = asyncio.create_task(load.run())
    try:
        await load.wait_for(lambda: len(load.acknowledged) >= 50)
        await server.stop()
        await load.wait_for(lambda: len(load.refused) >= 3)  # publishes met the outage
        await server.start()
        after = len(load.acknowledged)
        await load.wait_for(lambda: len(load.acknowledged) >= after + 50)  # publishing again
    finally:
        load.stop.set()
        await task
    async with asyncio.timeout(RESTART_DEADLINE):
        while missing := set(load.acknowledged) - received:
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await arrived.wait()
    assert not missing
    assert all("unreachable" in str(e) or "down" in str(e) for e in load.refused)
    await subscription.close()


async def test_redis_restarted_mid_stream_loses_no_acknowledged_publish(tmp_path: Path) -> None:
    async with private_redis(tmp_path) as server:
        options = {"prefix": unique_name(), **SERVER_OPTIONS["redis"]}
        async with (
            create_broker(server.url, **options) as publisher,
            create_broker(server.url, **options) as consumer,
        ):
            await publish_through_a_restart(server, publisher, consumer)


async def test_nats_restarted_mid_stream_loses_no_acknowledged_publish(tmp_path: Path) -> None:
    async with private_nats(tmp_path) as server:
        options = {"prefix": unique_name(), **SERVER_OPTIONS["nats"]}
        async with (
            create_broker(server.url, **options) as publisher,
            create_broker(server.url, **options) as consumer,
        ):
            await publish_through_a_restart(server, publisher, consumer)


async def test_rabbitmq_restarted_mid_stream_loses_no_acknowledged_publish() -> None:
    name = unique_name()
    declared: set[str] = set()
    async with shared_rabbitmq() as server:
        options = {"prefix": name, **SERVER_OPTIONS["rabbitmq"]}
        try:
            async with (
                create_broker(server.url, **options) as publisher,
                create_broker(server.url, **options) as consumer,
            ):
                await publish_through_a_restart(server, publisher, consumer)
                declared = set(getattr(consumer, "declared", ()))
        finally:
            await server.start()
            await delete_amqp(server.url, name, declared)
