"""Conformance suite of the main database, run on every engine the hub supports.

A new engine is a new parameter of the ``database_url`` fixture, not new tests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from medianest.database import Database, head, status, upgrade
from medianest.errors import BackendUnavailable


async def test_fresh_database_has_every_migration_pending(database_url: str) -> None:
    async with Database(database_url) as db:
        state = await status(db)
    assert state.current is None
    assert state.pending[-1] == head()
    assert not state.up_to_date


async def test_upgrade_applies_all_and_is_idempotent(database_url: str) -> None:
    async with Database(database_url) as db:
        before = await status(db)
        first = await upgrade(db)
        second = await upgrade(db)
    assert first.current == head()
    assert first.up_to_date
    assert first.applied == before.pending
    assert second.applied == ()
    assert second.current == first.current


async def test_concurrent_upgrades_in_one_process_serialise(database_url: str) -> None:
    dbs = [Database(database_url) for _ in range(4)]
    for db in dbs:
        await db.start()
    try:
        results = await asyncio.gather(*(upgrade(db) for db in dbs))
        assert all(r.current == head() for r in results)
        assert sum(1 for r in results if r.applied) == 1
    finally:
        for db in dbs:
            await db.close()


def test_concurrent_migrate_processes(database_url: str) -> None:
    """Three ``medianest migrate`` processes at once: all succeed, one applies the migrations."""
    env = {**os.environ, "MEDIANEST_DATABASE__URL": database_url, "MEDIANEST_CONFIG": ""}
    cmd = [sys.executable, "-m", "medianest", "migrate"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    applied = [out for out, _ in outputs if out.startswith("applied")]
    assert len(applied) == 1, outputs


async def test_instance_id_is_stable_and_shared(database_url: str) -> None:
    async with Database(database_url) as one, Database(database_url) as two:
        await upgrade(one)
        ids = await asyncio.gather(*(db.instance_id() for db in (one, two, one, two)))
    assert len(set(ids)) == 1
    assert len(ids[0]) == 36


async def test_ping_succeeds_on_a_live_database(database_url: str) -> None:
    async with Database(database_url) as db:
        await db.ping()


async def test_unreachable_server_is_backend_unavailable() -> None:
    db = Database("postgresql+asyncpg://mn:pa55word@127.0.0.1:1/none")
    await db.start()
    try:
        with pytest.raises(BackendUnavailable) as info:
            await db.ping()
        with pytest.raises(BackendUnavailable):
            await status(db)
    finally:
        await db.close()
    assert "pa55word" not in str(info.value)
    assert "pa55word" not in repr(db)
    assert "mn:***@127.0.0.1:1" in info.value.backend


async def test_sqlite_creates_its_directory(tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    target = Path(tmp_path) / "deep" / "er" / "mn.db"
    async with Database(f"sqlite+aiosqlite:///{target}") as db:
        await upgrade(db)
    assert target.is_file()


def test_unstarted_database_says_so() -> None:
    from medianest.errors import BackendError

    with pytest.raises(BackendError, match="not started"):
        _ = Database("sqlite+aiosqlite:///:memory:").engine


@pytest.mark.parametrize("url", ["sqlite+aiosqlite:///:memory:"])
def test_in_memory_sqlite_has_no_path(url: str) -> None:
    assert Database(url).sqlite_path is None
    assert Database(url).dialect == "sqlite"
