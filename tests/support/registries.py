"""Every service registry backend under test, as a table of factories (one row per backend).

``tests/contracts/test_discovery.py`` runs its read half on every row and its write half on
the ``rw`` rows. A row is a :class:`RegistryRow`: ``make(tmp_path, seed, clock)`` is an
async context manager yielding a **started** registry that already holds ``seed``:

* a read-write row registers the seed itself (:func:`register_all`) after starting;
* a read-only row builds its source from the seed (static configuration, DNS records...).

``clock`` is a :class:`FakeWallClock`. A row whose backend takes its time from it says
``fake_time=True`` and the suite moves TTLs forward with ``clock.advance``; a backend with
real time only (etcd leases) says ``fake_time=False`` and the suite uses short real TTLs,
waiting on conditions with a deadline.

Adding a backend is adding a row::

    @contextlib.asynccontextmanager
    async def _etcd(tmp_path, seed, clock):
        async with etcd_server(tmp_path) as etcd, create_registry(etcd.registry_url()) as r:
            await register_all(r, seed)
            yield r

    ROWS["etcd"] = RegistryRow(_etcd, "rw", fake_time=False)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from medianest.database import Database, upgrade
from medianest.discovery import ServiceInstance, ServiceRegistry
from medianest.discovery.backends.memory import MemoryRegistry
from medianest.discovery.backends.sql import SqlRegistry
from medianest.discovery.backends.static import StaticRegistry
from tests.support.postgres import fresh_database
from tests.support.services import require_service
from tests.support.wallclock import Clock


class FakeWallClock(Clock):
    """The shared settable clock, starting at the real time (registry TTLs are compared
    with timestamps other processes write)."""

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__(start or datetime.now(UTC))


RegistryFactory = Callable[
    [Path, Sequence[ServiceInstance], FakeWallClock], AbstractAsyncContextManager[ServiceRegistry]
]


@dataclass(frozen=True)
class RegistryRow:
    """How to build one backend, whether it is writable, and whether it obeys ``clock``."""

    make: RegistryFactory
    mode: Literal["rw", "ro"]
    fake_time: bool = True


async def register_all(registry: ServiceRegistry, seed: Sequence[ServiceInstance]) -> None:
    """Seed a read-write registry (no TTL)."""
    for instance in seed:
        await registry.register(instance)


@contextlib.asynccontextmanager
async def _memory(
    tmp_path: Path, seed: Sequence[ServiceInstance], clock: FakeWallClock
) -> AsyncIterator[ServiceRegistry]:
    async with MemoryRegistry(clock=clock, sweep_interval=0.05) as registry:
        await register_all(registry, seed)
        yield registry


@contextlib.asynccontextmanager
async def sql_registry(
    url: str, seed: Sequence[ServiceInstance], clock: FakeWallClock
) -> AsyncIterator[SqlRegistry]:
    """A started SqlRegistry on a migrated database at ``url`` (the test owns the database)."""
    async with Database(url) as db:
        await upgrade(db)
        async with SqlRegistry.from_url(
            url, database=db, clock=clock, poll_interval=0.05
        ) as registry:
            await register_all(registry, seed)
            yield registry


@contextlib.asynccontextmanager
async def _sql_sqlite(
    tmp_path: Path, seed: Sequence[ServiceInstance], clock: FakeWallClock
) -> AsyncIterator[ServiceRegistry]:
    async with sql_registry(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}", seed, clock) as r:
        yield r


@contextlib.asynccontextmanager
async def _sql_postgresql(
    tmp_path: Path, seed: Sequence[ServiceInstance], clock: FakeWallClock
) -> AsyncIterator[ServiceRegistry]:
    async with (
        fresh_database(require_service("postgres")) as url,
        sql_registry(url, seed, clock) as registry,
    ):
        yield registry


@contextlib.asynccontextmanager
async def _static(
    tmp_path: Path, seed: Sequence[ServiceInstance], clock: FakeWallClock
) -> AsyncIterator[ServiceRegistry]:
    async with StaticRegistry.from_url("static://", instances=seed, clock=clock) as registry:
        yield registry


@contextlib.asynccontextmanager
async def _etcd(
    tmp_path: Path, seed: Sequence[ServiceInstance], clock: FakeWallClock
) -> AsyncIterator[ServiceRegistry]:
    from medianest.discovery import create_registry
    from tests.support.etcd import etcd_server

    async with (
        etcd_server(tmp_path) as etcd,
        create_registry(etcd.registry_url("/conformance")) as registry,
    ):
        await register_all(registry, seed)
        yield registry


ROWS: dict[str, RegistryRow] = {
    "memory": RegistryRow(_memory, "rw"),
    "etcd": RegistryRow(_etcd, "rw", fake_time=False),
    "sql-sqlite": RegistryRow(_sql_sqlite, "rw"),
    "sql-postgresql": RegistryRow(_sql_postgresql, "rw"),
    "static": RegistryRow(_static, "ro"),
}
"""Backend name → row; the conformance suite is parametrized over these names.

``dns+srv://`` has no row: SRV and A/AAAA records cannot carry the seed's versions, tags,
metadata and health URLs, so it is covered by ``tests/discovery/test_dns_registry.py``."""
