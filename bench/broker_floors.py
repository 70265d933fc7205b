"""The raw client floors of ``bench/broker_latency.py``: each server's own client library doing
the least a consumer group needs, measured exactly like the broker.

* memory: an :class:`asyncio.Queue` (put, get);
* sqlite: aiosqlite, WAL: INSERT + COMMIT, then the consumer's SELECT of new rows and its
  DELETE + COMMIT (the ack), woken by an :class:`asyncio.Event`;
* redis: redis-py (no socket timeout), XADD; XREADGROUP ... BLOCK (COUNT = window) and one
  XACK per batch;
* amqp: aio-pika, a durable queue, persistent messages published with publisher confirms,
  consumed with prefetch = window, each acked;
* nats: nats-py JetStream, publish (acknowledged); a durable pull consumer, ``fetch(1)``
  (ping-pong) or ``fetch(window)`` (burst), each message acked.

A floor is a :class:`Target`, like the broker: ``ping_pong(n)`` returns publish→handler
latencies in seconds, ``burst(n, window)`` messages per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

BODY = json.dumps(
    {
        "v": 1,
        "id": "01a20c3c-22ac-7001-b362-30e1907268dd",
        "topic": "bench.item",
        "payload": {"n": 0, "title": "A movie", "year": 2001},
        "timestamp": "2026-11-24T06:26:37.356583Z",
        "headers": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
        "attempt": 1,
    }
)
"""A body the size of a broker envelope, for the raw clients."""


class Target(Protocol):
    name: str

    async def setup(self) -> None: ...

    async def ping_pong(self, n: int) -> list[float]: ...

    async def burst(self, n: int, window: int) -> float: ...

    async def teardown(self) -> None: ...


Publish = Callable[[int], Awaitable[None]]
IDLE_GAP = 0.001
"""Seconds of quiet before each ping-pong round trip (outside the timed part)."""


class Meter:
    """The two measurements, around a ``publish(i)`` and a consumer calling :meth:`seen`."""

    def __init__(self) -> None:
        self._waiter: asyncio.Future[float] | None = None
        self._window: asyncio.Semaphore | None = None
        self._count, self._goal = 0, 0
        self._done = asyncio.Event()

    def seen(self) -> None:
        """The handler ran for one message."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(time.perf_counter())
        if self._window is not None:
            self._count += 1
            self._window.release()
            if self._count >= self._goal:
                self._done.set()

    async def ping_pong(self, publish: Publish, n: int) -> list[float]:
        """Publish→handler latencies of ``n`` round trips, each one after ``IDLE_GAP``
        seconds of quiet, so that every message finds its consumer idle (waiting in its
        read), as a lone event does, rather than still busy with the previous one."""
        loop = asyncio.get_running_loop()
        latencies = []
        for i in range(n):
            if IDLE_GAP > 0:
                await asyncio.sleep(IDLE_GAP)
            self._waiter = loop.create_future()
            started = time.perf_counter()
            await publish(i)
            latencies.append(await asyncio.wait_for(self._waiter, 30) - started)
        self._waiter = None
        return latencies

    async def burst(self, publish: Publish, n: int, window: int) -> float:
        self._window, self._count, self._goal = asyncio.Semaphore(window), 0, n
        self._done.clear()
        started = time.perf_counter()
        for i in range(n):
            await self._window.acquire()
            await publish(i)
        await asyncio.wait_for(self._done.wait(), 120)
        elapsed = time.perf_counter() - started
        self._window = None
        return n / elapsed


class MemoryFloor:
    name = "asyncio.Queue"

    async def setup(self) -> None:
        self.meter, self.queue = Meter(), asyncio.Queue[str]()
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            await self.queue.get()
            self.meter.seen()

    async def _publish(self, i: int) -> None:
        await self.queue.put(BODY)

    async def ping_pong(self, n: int) -> list[float]:
        return await self.meter.ping_pong(self._publish, n)

    async def burst(self, n: int, window: int) -> float:
        return await self.meter.burst(self._publish, n, window)

    async def teardown(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class SqliteFloor:
    name = "aiosqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def setup(self) -> None:
        import aiosqlite

        self.meter, self.wake, self.batch = Meter(), asyncio.Event(), 1
        self.writer = await aiosqlite.connect(self.path)
        self.reader = await aiosqlite.connect(self.path)
        for db in (self.writer, self.reader):
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
        await self.writer.execute(
            "CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, body TEXT)"
        )
        await self.writer.commit()
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while True:
                cursor = await self.reader.execute(
                    "SELECT id, body FROM q ORDER BY id LIMIT ?", (self.batch,)
                )
                rows = list(await cursor.fetchall())
                if not rows:
                    break
                for _row in rows:
                    self.meter.seen()
                await self.reader.execute("DELETE FROM q WHERE id <= ?", (rows[-1][0],))
                await self.reader.commit()

    async def _publish(self, i: int) -> None:
        await self.writer.execute("INSERT INTO q (body) VALUES (?)", (BODY,))
        await self.writer.commit()
        self.wake.set()

    async def ping_pong(self, n: int) -> list[float]:
        self.batch = 1
        return await self.meter.ping_pong(self._publish, n)

    async def burst(self, n: int, window: int) -> float:
        self.batch = window
        return await self.meter.burst(self._publish, n, window)

    async def teardown(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.writer.close()
        await self.reader.close()


class RedisFloor:
    name = "redis-py XADD/XREADGROUP"

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.stream = url, f"{prefix}:raw"

    async def setup(self) -> None:
        import redis.asyncio as aioredis

        self.meter, self.count = Meter(), 1
        # No socket timeout, like the broker: redis-py's default (5 s) runs every command
        # through asyncio.wait_for, which costs about as much as the command itself.
        self.client = aioredis.Redis.from_url(self.url, socket_timeout=None)
        await self.client.xgroup_create(self.stream, "g", "$", mkstream=True)
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            reply: Any = await self.client.xreadgroup(
                "g", "c", {self.stream: ">"}, count=self.count, block=1000
            )
            for _stream, entries in reply or ():
                for _entry in entries:
                    self.meter.seen()
                await self.client.xack(self.stream, "g", *[e[0] for e in entries])

    async def _publish(self, i: int) -> None:
        await self.client.xadd(self.stream, {"m": BODY})

    async def ping_pong(self, n: int) -> list[float]:
        self.count = 1
        return await self.meter.ping_pong(self._publish, n)

    async def burst(self, n: int, window: int) -> float:
        self.count = window
        return await self.meter.burst(self._publish, n, window)

    async def teardown(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.delete(self.stream)
        await self.client.aclose()


class AmqpFloor:
    name = "aio-pika, confirms"

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.queue_name = url, f"{prefix}.raw"

    async def setup(self) -> None:
        import aio_pika

        self.meter = Meter()
        self.connection = await aio_pika.connect(self.url)
        self.publisher = await self.connection.channel(publisher_confirms=True)
        await self.publisher.declare_queue(self.queue_name, durable=True)
        self.consumer = None
        self.tag: str | None = None

    async def _consume(self, prefetch: int) -> None:
        if self.consumer is not None:
            await self.consumer.close()
        self.consumer = await self.connection.channel()
        await self.consumer.set_qos(prefetch_count=prefetch)
        queue = await self.consumer.declare_queue(self.queue_name, durable=True)

        async def on_message(message: Any) -> None:
            self.meter.seen()
            await message.ack()

        await queue.consume(on_message)

    async def _publish(self, i: int) -> None:
        import aio_pika

        body = aio_pika.Message(BODY.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await self.publisher.default_exchange.publish(body, self.queue_name)

    async def ping_pong(self, n: int) -> list[float]:
        await self._consume(1)
        return await self.meter.ping_pong(self._publish, n)

    async def burst(self, n: int, window: int) -> float:
        await self._consume(window)
        return await self.meter.burst(self._publish, n, window)

    async def teardown(self) -> None:
        await self.publisher.queue_delete(self.queue_name)
        await self.connection.close()


class NatsFloor:
    name = "nats-py JetStream pull"

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.stream = url, f"{prefix}raw"

    async def setup(self) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

        self.meter, self.batch = Meter(), 1
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        await self.js.add_stream(StreamConfig(name=self.stream, subjects=[f"{self.stream}.>"]))
        await self.js.add_consumer(
            self.stream,
            ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1),
        )
        self.pull = await self.js.pull_subscribe_bind("c", self.stream)
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            try:
                messages = await self.pull.fetch(self.batch, timeout=1.0)
            except TimeoutError:
                continue
            for message in messages:
                self.meter.seen()
                await message.ack()

    async def _publish(self, i: int) -> None:
        await self.js.publish(f"{self.stream}.item", BODY.encode())

    async def ping_pong(self, n: int) -> list[float]:
        self.batch = 1
        return await self.meter.ping_pong(self._publish, n)

    async def burst(self, n: int, window: int) -> float:
        self.batch = window
        return await self.meter.burst(self._publish, n, window)

    async def teardown(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.js.delete_stream(self.stream)
        await self.nc.close()
