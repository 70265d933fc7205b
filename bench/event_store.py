"""Event store throughput and subscription lag, side by side with the raw drivers.

For SQLite (a temp file, WAL, ``synchronous=NORMAL`` like the hub) and PostgreSQL (a scratch
database migrated with the project's migrations), in one run, interleaved over several
rounds, medians reported:

* **raw floors** (``bench/event_store_floors.py``): the drivers doing the equivalent writes
  by hand -- an events-like table (same columns, unique ``id`` and ``(stream_id, version)``,
  the type index) and a one-row position counter; one transaction per append: ``UPDATE
  counter SET last = last + n RETURNING last``, ``INSERT`` the events, ``COMMIT``.
  ``sqlite3`` runs synchronously in one worker thread (the appenders' appends interleaved on
  its connection), ``aiosqlite`` on one connection shared by the appenders under an
  ``asyncio.Lock`` (one writer at a time, as SQLite allows), ``asyncpg`` with one connection
  per appender;
* **store**: ``create_event_store(url)`` doing the same through ``append`` (an exact
  expected version per append, as an aggregate does).

Workloads: single events from 10 concurrent appenders (each its own stream), batches of 100
(10 appenders), ``read_all`` of everything in pages (the raw floors parse the two JSON
columns; one more row has the raw async driver also build the store's ``RecordedEvent``
values, to separate their cost from the store's; the store's events decode their JSON on
first use, so one more row has the store's reader use every event's data and metadata), and
live subscription lag: a writer appends single events at a modest rate while
``store.subscribe`` (from the head) receives them; lag = time from ``append`` returning to
the subscriber receiving the event. The lag
is measured on the writer's store object (what an in-process subscriber sees) and, for
reference, on a second store object (the path another process takes: LISTEN/NOTIFY on
PostgreSQL, polling on SQLite).

Goals (the issue): the store reaches at least 80 % of the raw async driver (aiosqlite,
asyncpg) on every throughput row; live lag p99 under 5 ms. Stretch: the SQLite store's
single-event rate under 10 appenders is at least half of raw sqlite3's.

    .venv/bin/python bench/event_store.py [--events 10000] [--rounds 3] [--quick]
    .venv/bin/python bench/event_store.py --backends sqlite --uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from event_store_floors import (
    APPENDERS,
    BATCH,
    META,
    TYPE,
    RawAiosqlite,
    RawAsyncpg,
    RawSqlite3,
    Target,
    Typed,
    concurrently,
    data,
)

from medianest.database import Database, upgrade
from medianest.events import ANY, EventStore, NewEvent, create_event_store

SINGLE_GOAL = BATCH_GOAL = READ_GOAL = 0.80
LAG_GOAL_MS = 5.0
STRETCH_GOAL = 0.50


class Store:
    """The MediaNest event store, from ``create_event_store(url)``."""

    name = "MediaNest store"

    def __init__(self, url: str) -> None:
        self.store: EventStore = create_event_store(url)

    async def start(self) -> Store:
        await self.store.start()
        return self

    async def _append(self, stream: str, version: int, size: int) -> None:
        events = [NewEvent(TYPE, data(i), META) for i in range(size)]
        await self.store.append(stream, events, version)

    async def write(self, streams: list[str], appends: int, size: int) -> None:
        await concurrently(streams, appends, size, lambda _i, s, v: self._append(s, v, size))

    async def read_page(self, after: int, limit: int) -> tuple[int, int]:
        found = await self.store.read_all(after, limit=limit)
        return len(found), found[-1].position if found else 0

    async def close(self) -> None:
        await self.store.close()


class Decoded:
    """The store's ``read_all`` pages with every event's ``data`` and ``metadata`` used, as
    the raw floors parse their JSON: the store's events decode on first use, so this row
    shows what a reader that looks at every event's content pays (reads only)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.name = f"{store.name}, data + metadata used"

    async def write(self, streams: list[str], appends: int, size: int) -> None:
        raise NotImplementedError

    async def read_page(self, after: int, limit: int) -> tuple[int, int]:
        found = await self.store.store.read_all(after, limit=limit)
        for event in found:
            event.data  # noqa: B018 (decodes the JSON)
            event.metadata  # noqa: B018
        return len(found), found[-1].position if found else 0

    async def close(self) -> None:
        return None


# -- measurements ----------------------------------------------------------------------------


async def write_rate(target: Target, tag: str, events: int, size: int) -> float:
    appends = max(1, events // (APPENDERS * size))
    streams = [f"{tag}-{i}" for i in range(APPENDERS)]
    started = time.perf_counter()
    await target.write(streams, appends, size)
    return appends * APPENDERS * size / (time.perf_counter() - started)


async def read_rate(target: Target, page: int) -> float:
    started = time.perf_counter()
    total, after = 0, 0
    while True:
        count, last = await target.read_page(after, page)
        if not count:
            break
        total, after = total + count, last
    return total / (time.perf_counter() - started)


async def lag_ms(
    writer: EventStore, reader: EventStore, rate: float, seconds: float
) -> list[float]:
    """Append single events at ``rate``/s on ``writer``; ms until ``reader``'s subscription
    hands each one out, counted from ``append`` returning."""
    count = max(1, int(rate * seconds))
    subscription = reader.subscribe(await reader.head_position())
    returned: dict[int, float] = {}
    received: dict[int, float] = {}

    async def consume() -> None:
        async for event in subscription:
            received[event.position] = time.perf_counter()
            if len(received) >= count:
                return

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.1)  # the subscription reads the head and goes live
    stream = f"lag-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    for n in range(count):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        result = await writer.append(stream, [NewEvent(TYPE, data(n), META)], ANY)
        returned[result.position] = time.perf_counter()
    async with asyncio.timeout(30):
        await consumer
    await subscription.aclose()
    return [max(0.0, received[p] - t) * 1000 for p, t in returned.items()]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Results:
    backend: str
    async_floor: str
    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    lags: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, workload: str, target: str, rate: float) -> None:
        self.rates.setdefault((workload, target), []).append(rate)


async def measure(
    backend: str, targets: list[Target], stores: tuple[EventStore, EventStore], args: Any
) -> Results:
    results = Results(backend, targets[-2].name)
    workloads = (("single", 1, args.events), ("batch", BATCH, args.events * args.batch_factor))
    for target in targets:  # warm up connections, caches and code paths
        await write_rate(target, "warm", APPENDERS * 20, 1)
        await write_rate(target, "warm-b", APPENDERS * BATCH, BATCH)
    for round_ in range(args.rounds):
        order = targets if round_ % 2 == 0 else targets[::-1]
        for workload, size, events in workloads:
            for target in order:
                rate = await write_rate(target, f"{workload}-{round_}", events, size)
                results.add(workload, target.name, rate)
        print(f"  {backend}: write round {round_ + 1} done", file=sys.stderr)
    store = targets[-1]
    assert isinstance(store, Store)
    readers = [*targets[:-1], Typed(targets[-2]), store, Decoded(store)]
    for round_ in range(args.rounds):
        for target in readers if round_ % 2 == 0 else readers[::-1]:
            results.add("read_all", target.name, await read_rate(target, args.page))
    writer, peer = stores
    results.lags["same store object"] = await lag_ms(
        writer, writer, args.lag_rate, args.lag_seconds
    )
    results.lags["other store object"] = await lag_ms(writer, peer, args.lag_rate, args.lag_seconds)
    return results


@contextlib.asynccontextmanager
async def sqlite_targets(directory: Path) -> AsyncIterator[tuple[list[Target], list[EventStore]]]:
    url = f"sqlite:///{directory / 'store.db'}"
    async with Database(f"sqlite+aiosqlite:///{directory / 'store.db'}") as db:
        await upgrade(db)
    raw = RawSqlite3(directory / "raw-sqlite3.db")
    raw_async = await RawAiosqlite(directory / "raw-aiosqlite.db").start()
    store = await Store(url).start()
    peer = create_event_store(url)
    await peer.start()
    try:
        yield [raw, raw_async, store], [store.store, peer]
    finally:
        for closing in (peer, store, raw_async, raw):
            await closing.close()


@contextlib.asynccontextmanager
async def postgres_targets(server: str) -> AsyncIterator[tuple[list[Target], list[EventStore]]]:
    name = f"mn_bench_{uuid.uuid4().hex[:10]}"
    base = server.rsplit("/", 1)[0]
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        async with Database(f"{base.replace('postgresql:', 'postgresql+asyncpg:')}/{name}") as db:
            await upgrade(db)
        raw = await RawAsyncpg(f"{base}/{name}").start()
        store = await Store(f"{base}/{name}").start()
        peer = create_event_store(f"{base}/{name}")
        await peer.start()
        try:
            yield [raw, store], [store.store, peer]
        finally:
            for closing in (peer, store, raw):
                await closing.close()
    finally:
        admin = await asyncpg.connect(f"{base}/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# -- the report ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def ratios(results: Results, workload: str, target: str, floor: str) -> float:
    """Median over rounds of the per-round ratio (both measured back to back)."""
    mine, theirs = results.rates[(workload, target)], results.rates[(workload, floor)]
    return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))


def table(results: Results) -> str:
    floor = results.async_floor
    lines = [
        f"### {results.backend}",
        "",
        f"| workload | target | events/s | spread | x {floor} | goal | verdict |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    goals = {"single": SINGLE_GOAL, "batch": BATCH_GOAL, "read_all": READ_GOAL}
    labels = {
        "single": f"single events, {APPENDERS} appenders",
        "batch": f"batches of {BATCH}, {APPENDERS} appenders",
        "read_all": "read_all, pages",
    }
    for workload, goal in goals.items():
        for (kind, target), samples in results.rates.items():
            if kind != workload:
                continue
            ratio = ratios(results, workload, target, floor)
            spread = f"{min(samples):,.0f}-{max(samples):,.0f}"
            is_store = target == Store.name
            goal_text = f"≥ {goal:.0%}" if is_store else ""
            lines.append(
                f"| {labels[workload]} | {target} | {statistics.median(samples):,.0f} | {spread} "
                f"| {ratio:.2f} | {goal_text} | {verdict(ratio >= goal) if is_store else ''} |"
            )
    if results.backend == "SQLite":
        stretch = ratios(results, "single", Store.name, RawSqlite3.name)
        lines.append(
            f"| stretch: store single ÷ raw sqlite3 single | | | | {stretch:.2f} "
            f"| ≥ {STRETCH_GOAL:.0%} | {verdict(stretch >= STRETCH_GOAL)} |"
        )
    lines += [
        "",
        "| live subscription lag | events | p50 ms | p99 ms | max ms | goal p99 | verdict |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for where, samples in results.lags.items():
        p99 = percentile(samples, 0.99)
        ours = where == "same store object"
        lines.append(
            f"| subscriber on the {where} | {len(samples)} | {percentile(samples, 0.5):.2f} "
            f"| {p99:.2f} | {max(samples):.2f} | {f'< {LAG_GOAL_MS:g} ms' if ours else 'info'} "
            f"| {verdict(p99 < LAG_GOAL_MS) if ours else ''} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Results]:
    out = []
    for backend in args.backends.split(","):
        started = time.perf_counter()
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as directory:
                async with sqlite_targets(Path(directory)) as (targets, stores):
                    out.append(await measure("SQLite", targets, (stores[0], stores[1]), args))
        elif backend == "postgresql":
            try:
                opened = postgres_targets(args.pg_url)
                async with opened as (targets, stores):
                    out.append(await measure("PostgreSQL", targets, (stores[0], stores[1]), args))
            except OSError as exc:
                print(f"skipping postgresql: {exc}", file=sys.stderr)
        else:
            raise SystemExit(f"unknown backend {backend!r}")
        print(f"measured {backend} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per single-event run")
    parser.add_argument(
        "--batch-factor", type=int, default=5, help="batched runs write this many times --events"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--page", type=int, default=1000, help="read_all page size")
    parser.add_argument("--lag-rate", type=float, default=200.0, help="appends/s for the lag")
    parser.add_argument("--lag-seconds", type=float, default=5.0, help="seconds of lag writes")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--pg-url", default="postgresql://postgres@127.0.0.1:5432/test", help="PostgreSQL server"
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round, fewer events")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds, args.lag_seconds = min(args.events, 2000), 1, 1.0
    if args.uvloop:
        import uvloop

        uvloop.install()
    results = asyncio.run(run(args))
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"{args.rounds} rounds, {args.events} single events and {args.events * args.batch_factor} "
        f"batched events per target per round, pages of {args.page}; lag at "
        f"{args.lag_rate:g}/s for {args.lag_seconds:g} s; event loop: {loop}, "
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}\n"
    )
    for result in results:
        print(table(result) + "\n")


if __name__ == "__main__":
    main()
