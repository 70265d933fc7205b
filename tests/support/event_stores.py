"""Every event store backend under test, as a table of factories (one row per backend).

``tests/contracts/test_event_store.py`` runs on every row. A row's ``make(tmp_path,
upcasters)`` is an async context manager yielding a :class:`StoreUnderTest`: a **started**
store over empty storage, and, for backends that several processes share, ``open_peer`` --
another store object on the same storage, standing for another hub process (its appends
reach the first store only through the backend's own cross-process channel).

PostgreSQL rows poll only every 60 s, so a live subscription that sees a peer's append in
time was woken by ``LISTEN/NOTIFY``; SQLite rows poll every 50 ms (that is their channel).

Adding a backend is adding a row::

    @contextlib.asynccontextmanager
    async def _eventstoredb(tmp_path, upcasters):
        async with EsdbEventStore.from_url(URL, upcasters=upcasters) as store:
            yield StoreUnderTest(store, None)

    ROWS["eventstoredb"] = EventStoreRow(_eventstoredb)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from medianest.database import Database, upgrade
from medianest.events import EventStore, Upcasters
from medianest.events.backends.memory import MemoryEventStore
from medianest.events.backends.sql import SqlEventStore
from tests.support.postgres import fresh_database
from tests.support.services import require_service

PeerFactory = Callable[[], AbstractAsyncContextManager[EventStore]]


@dataclass(frozen=True)
class StoreUnderTest:
    store: EventStore
    open_peer: PeerFactory | None


EventStoreFactory = Callable[[Path, Upcasters | None], AbstractAsyncContextManager[StoreUnderTest]]


@dataclass(frozen=True)
class EventStoreRow:
    make: EventStoreFactory


@contextlib.asynccontextmanager
async def _memory(tmp_path: Path, upcasters: Upcasters | None) -> AsyncIterator[StoreUnderTest]:
    async with MemoryEventStore(upcasters=upcasters) as store:
        yield StoreUnderTest(store, None)


@contextlib.asynccontextmanager
async def sql_event_store(
    url: str, upcasters: Upcasters | None = None, *, poll_interval: float | None = None
) -> AsyncIterator[SqlEventStore]:
    """A started SqlEventStore with its own Database on the (migrated) database at ``url``."""
    async with (
        Database(url) as db,
        SqlEventStore.from_url(
            url, database=db, upcasters=upcasters, poll_interval=poll_interval
        ) as store,
    ):
        yield store


@contextlib.asynccontextmanager
async def _sql(
    url: str, upcasters: Upcasters | None, poll_interval: float
) -> AsyncIterator[StoreUnderTest]:
    async with Database(url) as db:
        await upgrade(db)

    def peer() -> AbstractAsyncContextManager[EventStore]:
        return sql_event_store(url, upcasters, poll_interval=poll_interval)

    async with sql_event_store(url, upcasters, poll_interval=poll_interval) as store:
        yield StoreUnderTest(store, peer)


@contextlib.asynccontextmanager
async def _sql_sqlite(tmp_path: Path, upcasters: Upcasters | None) -> AsyncIterator[StoreUnderTest]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    async with _sql(url, upcasters, poll_interval=0.05) as subject:
        yield subject


@contextlib.asynccontextmanager
async def _sql_postgresql(
    tmp_path: Path, upcasters: Upcasters | None
) -> AsyncIterator[StoreUnderTest]:
    async with (
        fresh_database(require_service("postgres")) as url,
        _sql(url, upcasters, poll_interval=60.0) as subject,
    ):
        yield subject


ROWS: dict[str, EventStoreRow] = {
    "memory": EventStoreRow(_memory),
    "sql-sqlite": EventStoreRow(_sql_sqlite),
    "sql-postgresql": EventStoreRow(_sql_postgresql),
}
"""Backend name → row; the conformance suite is parametrized over these names."""
