"""What is specific to the database registry: several processes sharing one registry.

The contract itself is checked by ``tests/contracts/test_discovery.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from medianest.database import Database, upgrade
from medianest.database.schema import service_changes
from medianest.discovery import Change, Criteria, HealthState, ServiceInstance, create_registry
from medianest.discovery.backends.sql import SqlRegistry
from medianest.errors import BackendError, BackendUnavailable
from tests.support.registries import FakeWallClock

DEADLINE = 30.0

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from medianest.discovery import ServiceInstance
    from medianest.discovery.backends.sql import SqlRegistry

    async def main() -> None:
        registry = SqlRegistry.from_url(sys.argv[1], poll_interval=5)
        await registry.start()
        instance = ServiceInstance(
            id="worker-1", name="doomed", endpoints=("http://127.0.0.1:9",)
        )
        await registry.register(instance, ttl=float(sys.argv[2]))
        print("registered", flush=True)
        while True:
            await asyncio.sleep(0.2)
            await registry.heartbeat("worker-1")
            print("beat", flush=True)

    asyncio.run(main())
    """
)


@pytest.fixture
async def migrated(database_url: str) -> str:
    async with Database(database_url) as db:
        await upgrade(db)
    return database_url


@contextlib.asynccontextmanager
async def registry_at(url: str, **options: object) -> AsyncIterator[SqlRegistry]:
    registry = SqlRegistry.from_url(url, poll_interval=0.05, **options)  # type: ignore[arg-type]
    async with registry:
        yield registry


async def next_change(watch: object) -> Change:
    async with asyncio.timeout(DEADLINE):
        return await anext(watch)  # type: ignore[call-overload, no-any-return]


async def test_a_killed_process_disappears_after_its_ttl(migrated: str) -> None:
    async with registry_at(migrated) as registry:
        watch = registry.watch("doomed")
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            migrated,
            "2",
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "MEDIANEST_CONFIG": ""},
        )
        try:
            assert child.stdout is not None
            async with asyncio.timeout(DEADLINE):
                lines = [await child.stdout.readline() for _ in range(3)]
            assert lines == [b"registered\n", b"beat\n", b"beat\n"]
            registered = await next_change(watch)
            assert (registered.kind, registered.instance_id) == ("registered", "worker-1")
            assert [r.instance.id for r in await registry.discover()] == ["worker-1"]
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        assert child.returncode == -signal.SIGKILL

        expired = await next_change(watch)
        assert (expired.kind, expired.instance_id, expired.name) == (
            "expired",
            "worker-1",
            "doomed",
        )
        assert expired.registration is not None
        assert expired.registration.ttl == 2
        assert await registry.discover(Criteria(name="doomed")) == []
        await watch.aclose()


async def test_two_registries_see_each_others_changes(migrated: str) -> None:
    async with registry_at(migrated) as one, registry_at(migrated) as two:
        watch_one, watch_two = one.watch(), two.watch()
        instance = ServiceInstance(id="api-1", name="api", endpoints=("http://10.0.0.9:80",))
        await one.register(instance)
        seen = await next_change(watch_two)
        assert (seen.kind, seen.instance_id) == ("registered", "api-1")
        assert await two.health("api-1") is not None

        assert await two.set_health("api-1", HealthState.HEALTHY) is True
        assert await two.deregister("api-1") is True
        kinds = [(await next_change(watch_one)).kind for _ in range(3)]
        assert kinds == ["registered", "health", "deregistered"]
        kinds = [(await next_change(watch_two)).kind for _ in range(2)]
        assert kinds == ["health", "deregistered"]
        await watch_one.aclose()
        await watch_two.aclose()


async def test_an_expiry_is_reported_once_by_competing_sweepers(migrated: str) -> None:
    clock = FakeWallClock()
    async with (
        registry_at(migrated, clock=clock) as one,
        registry_at(migrated, clock=clock) as two,
    ):
        watch_one, watch_two = one.watch(), two.watch()
        instance = ServiceInstance(id="gone-1", name="api", endpoints=("http://10.0.0.9:80",))
        await one.register(instance, ttl=5)
        clock.advance(6)
        assert await one.health("gone-1") is None
        # Both writers purge before they write: only one may log the expiry.
        await asyncio.gather(*(r.deregister("unknown") for r in (one, two, one, two)))
        for watch in (watch_one, watch_two):
            kinds = [(await next_change(watch)).kind for _ in range(2)]
            assert kinds == ["registered", "expired"]
        async with Database(migrated) as db, db.connect() as conn:
            count = await conn.execute(
                select(func.count()).where(service_changes.c.kind == "expired")
            )
            assert count.scalar_one() == 1


async def test_old_changes_are_pruned(migrated: str) -> None:
    clock = FakeWallClock()
    async with registry_at(migrated, clock=clock, change_retention=60, prune_interval=0) as reg:
        watch = reg.watch()
        await reg.register(ServiceInstance(id="a", name="api", endpoints=("http://a:1",)))
        assert (await next_change(watch)).kind == "registered"
        clock.advance(120)
        await reg.register(ServiceInstance(id="b", name="api", endpoints=("http://b:1",)))
        assert (await next_change(watch)).instance_id == "b"
        async with Database(migrated) as db:

            async def logged() -> list[str]:
                async with db.connect() as conn:
                    rows = await conn.execute(select(service_changes.c.instance_id))
                    return sorted(row[0] for row in rows)

            async with asyncio.timeout(DEADLINE):
                while await logged() != ["b"]:
                    await asyncio.sleep(0.02)
        await watch.aclose()


async def test_uses_the_hubs_database_without_closing_it(sqlite_url: str) -> None:
    async with Database(sqlite_url) as db:
        await upgrade(db)
        registry = create_registry(sqlite_url, database=db)
        assert isinstance(registry, SqlRegistry)
        async with registry:
            await registry.register(ServiceInstance(id="a", name="api", endpoints=("http://a:1",)))
        await db.ping()


def test_plain_database_urls_get_the_async_driver(tmp_path: Path) -> None:
    registry = create_registry(f"sqlite:///{tmp_path / 'r.db'}")
    assert isinstance(registry, SqlRegistry)
    assert registry.database.url.startswith("sqlite+aiosqlite:///")
    postgres = create_registry("postgresql://mn:s3cret@db.lan/medianest")
    assert isinstance(postgres, SqlRegistry)
    assert postgres.database.url.startswith("postgresql+asyncpg://")
    assert "s3cret" not in repr(postgres)


async def test_unreachable_database_is_backend_unavailable() -> None:
    registry = create_registry("postgresql://mn:pa55word@127.0.0.1:1/none")
    with pytest.raises(BackendUnavailable) as info:
        await registry.start()
    try:
        with pytest.raises(BackendUnavailable) as pinged:
            await registry.ping()
    finally:
        await registry.close()
    for error in (info.value, pinged.value):
        assert "pa55word" not in str(error) + error.backend
        assert "mn:***@127.0.0.1:1" in error.backend


async def test_missing_tables_are_reported_with_the_reason(sqlite_url: str) -> None:
    registry = create_registry(sqlite_url)
    try:
        with pytest.raises(BackendError, match="no such table: service_changes"):
            await registry.start()
        with pytest.raises(BackendUnavailable, match="no such table: service_instances"):
            await registry.ping()
    finally:
        await registry.close()
