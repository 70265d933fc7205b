"""The server-backed brokers under test: Redis Streams, RabbitMQ and NATS JetStream.

Each factory has the shape of a row of :mod:`tests.support.brokers` — ``make(tmp_path,
name)``, an async context manager yielding a **started** broker built with its
``TEST_OPTIONS`` and closed on exit — and puts everything it creates on the shared server
under ``name`` (Redis keys ``name:*``; exchanges and queues ``name``, ``name.*``; streams
``name`` and ``name-dlq``), which it deletes afterwards. A server that is down skips the
test (or fails it under ``MEDIANEST_REQUIRE_SERVICES=1``).

The visibility timeout (ack wait) is short, so that a message whose consumer was killed
comes back within seconds; rows in :mod:`tests.support.brokers`::

    ROWS["redis"] = BrokerRow(redis_broker)
    ROWS["amqp"] = BrokerRow(amqp_broker)
    ROWS["nats"] = BrokerRow(nats_broker)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from medianest.messaging import Broker, create_broker
from tests.support.services import require_service

VISIBILITY_TIMEOUT = 2.0
"""Seconds before another consumer gets a message whose consumer died (tests only)."""

SERVER_OPTIONS: dict[str, dict[str, Any]] = {
    "redis": {"visibility_timeout": VISIBILITY_TIMEOUT, "block": 0.2, "retry_poll": 0.1},
    "rabbitmq": {"reconnect_interval": 0.5},
    "nats": {"visibility_timeout": VISIBILITY_TIMEOUT, "heartbeat": 1.0},
}
"""Options of each server's broker in tests, besides the suite's ``TEST_OPTIONS``."""


def _test_options() -> dict[str, Any]:
    from tests.support.brokers import TEST_OPTIONS  # here: that module imports this one

    return dict(TEST_OPTIONS)


def server_url(service: str) -> str:
    """The broker URL of ``service`` (``redis``, ``rabbitmq``, ``nats``), or skip."""
    return require_service(service)


@contextlib.asynccontextmanager
async def redis_broker(tmp_path: Path, name: str, **options: Any) -> AsyncIterator[Broker]:
    url = server_url("redis")
    try:
        merged = {**_test_options(), **SERVER_OPTIONS["redis"], **options}
        async with create_broker(url, prefix=name, **merged) as broker:
            yield broker
    finally:
        await delete_redis(url, name)


@contextlib.asynccontextmanager
async def amqp_broker(tmp_path: Path, name: str, **options: Any) -> AsyncIterator[Broker]:
    url = server_url("rabbitmq")
    declared: set[str] = set()
    try:
        merged = {**_test_options(), **SERVER_OPTIONS["rabbitmq"], **options}
        async with create_broker(url, prefix=name, **merged) as broker:
            try:
                yield broker
            finally:
                declared = set(getattr(broker, "declared", ()))
    finally:
        await delete_amqp(url, name, declared)


@contextlib.asynccontextmanager
async def nats_broker(tmp_path: Path, name: str, **options: Any) -> AsyncIterator[Broker]:
    url = server_url("nats")
    try:
        merged = {**_test_options(), **SERVER_OPTIONS["nats"], **options}
        async with create_broker(url, prefix=name, **merged) as broker:
            yield broker
    finally:
        await delete_nats(url, name)


async def delete_redis(url: str, name: str) -> None:
    """Delete every key under the prefix ``name``."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(f"{name}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


async def delete_amqp(url: str, name: str, queues: set[str]) -> None:
    """Delete the exchanges of the prefix ``name`` and the queues ``queues``."""
    import aio_pika

    connection = await aio_pika.connect(url, timeout=5)
    try:
        channel = await connection.channel()
        for queue in sorted(queues | {f"{name}.dead-letters"}):
            await channel.queue_delete(queue)
        for exchange in (name, f"{name}.dlx"):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


async def delete_nats(url: str, name: str) -> None:
    """Delete the two streams of the prefix ``name`` (their consumers go with them)."""
    import nats
    from nats.js.errors import NotFoundError

    client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = client.jetstream()
        for stream in (name, f"{name}-dlq"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
    finally:
        await client.close()
