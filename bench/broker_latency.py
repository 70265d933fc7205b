"""Broker latency and burst throughput per backend, side by side with each raw client floor.

For every backend (memory, sqlite, redis, amqp, nats) two targets run in one process,
interleaved over several rounds: the MediaNest broker (``create_broker``: publish, one
subscription, the handler; every measurement with a group and a topic of its own, so that
no earlier group receives copies) and the raw client floor of ``bench/broker_floors.py`` doing the
same with the server's own client library. Both are measured the same way:

* **idle ping-pong**: publish one message, wait until the handler has it, let everything
  go quiet for 1 ms (so that the next message finds its consumer idle, waiting in its
  read, as a lone event does), repeat; the publish→handler latency of every round trip
  (p50, p99 over all rounds);
* **windowed burst**: publish N messages one after another (each publish waits for the
  server's acknowledgement), never more than W published but not yet handled; messages per
  second (median of the rounds). The broker subscribes with ``concurrency = W``, the floors
  read W at a time (COUNT, prefetch, fetch batch).

Goals (the "Message broker" issue): the broker adds at most 0.3 ms to each p99 floor and
reaches at least 70 % of each burst floor.

    .venv/bin/python bench/broker_latency.py [--round-trips 1000] [--messages 3000]
        [--window 32] [--rounds 3] [--backends memory,sqlite,redis,amqp,nats]
        [--idle-gap-ms 1] [--uvloop]

Servers: ``MEDIANEST_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``),
``MEDIANEST_TEST_AMQP_URL`` (``amqp://guest:guest@127.0.0.1:5672/``),
``MEDIANEST_TEST_NATS_URL`` (``nats://127.0.0.1:4222``); a backend whose server is down, or
whose module is missing, is skipped with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import broker_floors
from broker_floors import (
    AmqpFloor,
    MemoryFloor,
    Meter,
    NatsFloor,
    RedisFloor,
    SqliteFloor,
    Target,
)

from medianest.messaging import Broker, Message, create_broker

URLS = {
    "redis": os.environ.get("MEDIANEST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    "amqp": os.environ.get("MEDIANEST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    "nats": os.environ.get("MEDIANEST_TEST_NATS_URL", "nats://127.0.0.1:4222"),
}
P99_GOAL_MS = 0.3
BURST_GOAL = 0.70


class BrokerTarget:
    """The MediaNest broker of one backend, measured like a floor."""

    def __init__(self, url: str, **options: Any) -> None:
        self.name = "MediaNest broker"
        self.url, self.options = url, options
        self.group = 0

    async def setup(self) -> None:
        self.broker: Broker = create_broker(self.url, **self.options)
        await self.broker.start()

    async def _measure(self, topic: str, concurrency: int, run: Any) -> Any:
        """One measurement with a group of its own on a topic of its own: a group lives on
        after its subscription closes (a durable queue), so a topic shared with earlier
        measurements would copy every message to their groups too -- work the floor, one
        queue, does not do."""
        meter = Meter()
        self.group += 1
        topic = f"{topic}.m{self.group}"

        async def handler(message: Message) -> None:
            meter.seen()

        subscription = await self.broker.subscribe(
            topic, f"bench{self.group}", handler, concurrency=concurrency
        )

        async def publish(i: int) -> None:
            await self.broker.publish(Message(topic, {"n": i, "title": "A movie", "year": 2001}))

        try:
            return await run(meter, publish)
        finally:
            await subscription.close()

    async def ping_pong(self, n: int) -> list[float]:
        latencies: list[float] = await self._measure(
            "bench.ping", 1, lambda meter, publish: meter.ping_pong(publish, n)
        )
        return latencies

    async def burst(self, n: int, window: int) -> float:
        rate: float = await self._measure(
            "bench.burst", window, lambda meter, publish: meter.burst(publish, n, window)
        )
        return rate

    async def teardown(self) -> None:
        await self.broker.close()


def targets(backend: str, prefix: str, directory: Path) -> tuple[Target, BrokerTarget]:
    """The raw floor and the broker of ``backend``."""
    if backend == "memory":
        return MemoryFloor(), BrokerTarget("memory://")
    if backend == "sqlite":
        from medianest.messaging.backends import sqlite  # noqa: F401  (missing: skipped)

        url = f"sqlite:///{directory / 'broker.db'}"
        return SqliteFloor(directory / "raw.db"), BrokerTarget(url)
    url = URLS[backend]
    floor: Target = {"redis": RedisFloor, "amqp": AmqpFloor, "nats": NatsFloor}[backend](
        url, prefix
    )
    return floor, BrokerTarget(url, prefix=prefix)


async def cleanup(backend: str, prefix: str, broker: BrokerTarget) -> None:
    """Delete what the broker created on a shared server."""
    if backend == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(URLS["redis"])
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    elif backend == "amqp":
        import aio_pika

        connection = await aio_pika.connect(URLS["amqp"])
        channel = await connection.channel()
        for queue in sorted(getattr(broker.broker, "declared", ())):
            await channel.queue_delete(queue)
        for exchange in (prefix, f"{prefix}.dlx"):
            await channel.exchange_delete(exchange)
        await connection.close()
    elif backend == "nats":
        import nats

        nc = await nats.connect(URLS["nats"])
        js = nc.jetstream()
        for stream in (prefix, f"{prefix}-dlq"):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
        await nc.close()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(backend: str, args: argparse.Namespace) -> dict[str, Any] | None:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as directory:
        try:
            floor, broker = targets(backend, prefix, Path(directory))
            await floor.setup()
        except Exception as exc:
            print(f"skipping {backend}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return None
        latencies: dict[str, list[float]] = {"floor": [], "broker": []}
        rates: dict[str, list[float]] = {"floor": [], "broker": []}
        try:
            await broker.setup()
            pair: dict[str, Any] = {"floor": floor, "broker": broker}
            for target in pair.values():  # warm up connections, caches, code paths
                await target.ping_pong(min(100, args.round_trips))
                await target.burst(min(500, args.messages), args.window)
            for round_ in range(args.rounds):
                order = ["floor", "broker"] if round_ % 2 == 0 else ["broker", "floor"]
                for name in order:
                    latencies[name] += await pair[name].ping_pong(args.round_trips)
                for name in order:
                    rates[name].append(await pair[name].burst(args.messages, args.window))
        finally:
            await floor.teardown()
            with contextlib.suppress(Exception):
                await broker.teardown()
            with contextlib.suppress(Exception):
                await cleanup(backend, prefix, broker)
    result: dict[str, Any] = {"backend": backend, "floor_name": floor.name}
    for name in ("floor", "broker"):
        result[f"{name}_p50"] = percentile(latencies[name], 0.50) * 1000
        result[f"{name}_p99"] = percentile(latencies[name], 0.99) * 1000
        result[f"{name}_rate"] = statistics.median(rates[name])
    return result


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| backend | raw floor | floor p50 / p99 ms | broker p50 / p99 ms | + p99 ms "
        "| floor burst msg/s | broker burst msg/s | burst ratio | + p99 ≤ 0.3 ms "
        "| burst ≥ 70 % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        extra = r["broker_p99"] - r["floor_p99"]
        ratio = r["broker_rate"] / r["floor_rate"]
        lines.append(
            f"| {r['backend']} | {r['floor_name']} "
            f"| {r['floor_p50']:.3f} / {r['floor_p99']:.3f} "
            f"| {r['broker_p50']:.3f} / {r['broker_p99']:.3f} | {extra:+.3f} "
            f"| {r['floor_rate']:,.0f} | {r['broker_rate']:,.0f} | {ratio:.0%} "
            f"| {verdict(extra <= P99_GOAL_MS)} | {verdict(ratio >= BURST_GOAL)} |"
        )
    loop = "uvloop" if args.uvloop else "asyncio"
    head = (
        f"{args.rounds} rounds x {args.round_trips} round trips and {args.messages} messages "
        f"(window {args.window}), idle gap {args.idle_gap_ms:g} ms, event loop: {loop}, "
        f"Python {sys.version.split()[0]}"
    )
    return head + "\n\n" + "\n".join(lines)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for backend in args.backends.split(","):
        started = time.perf_counter()
        result = await measure(backend, args)
        if result is not None:
            results.append(result)
            took = time.perf_counter() - started
            print(f"measured {backend} in {took:.0f} s", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=1000, help="ping-pongs per round")
    parser.add_argument("--messages", type=int, default=3000, help="burst messages per round")
    parser.add_argument("--window", type=int, default=32, help="burst messages in flight")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--backends", default="memory,sqlite,redis,amqp,nats")
    parser.add_argument(
        "--idle-gap-ms", type=float, default=1.0, help="quiet before each ping-pong round trip"
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    broker_floors.IDLE_GAP = args.idle_gap_ms / 1000
    if args.uvloop:
        import uvloop

        uvloop.install()
    results = asyncio.run(run(args))
    print(table(results, args))


if __name__ == "__main__":
    main()
