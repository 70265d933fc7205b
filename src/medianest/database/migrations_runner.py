"""Run and inspect Alembic migrations on a :class:`~medianest.database.engine.Database`.

Safe when several processes start at once: on PostgreSQL the upgrade holds a session-level
advisory lock; on SQLite an exclusive file lock beside the database file. The second process
waits, then finds nothing left to do. Upgrading an up-to-date database is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from medianest.backends import mask_url
from medianest.database.engine import Database, _reason
from medianest.errors import BackendUnavailable
from medianest.observability.logging import get_logger

_log = get_logger("medianest.database")
SCRIPTS = Path(__file__).parent / "migrations"
ADVISORY_LOCK_KEY = 0x6D6E6D6967  # "mnmig": one key per deployment's database


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """Where the database stands: ``current`` revision, the code's ``head``, what is pending.

    ``applied`` lists what the :func:`upgrade` call that returned this value applied itself
    (empty when another process had already done it).
    """

    current: str | None
    head: str
    pending: tuple[str, ...]
    applied: tuple[str, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return not self.pending


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    return cfg


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this code knows."""
    revision = _scripts().get_current_head()
    assert revision is not None
    return revision


def _pending(current: str | None) -> tuple[str, ...]:
    revisions = _scripts().iterate_revisions(head(), current)
    return tuple(reversed([rev.revision for rev in revisions]))


async def status(db: Database) -> MigrationStatus:
    """Read the current revision; raise ``BackendUnavailable`` when the database is down."""
    try:
        async with db.connect() as conn:
            current = await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    except (SQLAlchemyError, OSError) as exc:
        raise BackendUnavailable(
            f"database unreachable: {_reason(exc)}", backend=mask_url(db.url)
        ) from exc
    return MigrationStatus(current=current, head=head(), pending=_pending(current))


async def upgrade(db: Database, revision: str = "head") -> MigrationStatus:
    """Apply pending migrations up to ``revision`` under a cross-process lock."""
    try:
        async with _migration_lock(db):
            before = await status(db)
            if before.up_to_date and revision == "head":
                return before
            async with db.connect() as conn:
                await conn.run_sync(_upgrade_sync, revision)
                await conn.commit()
    except (SQLAlchemyError, OSError) as exc:
        raise BackendUnavailable(
            f"migration failed: {_reason(exc)}", backend=mask_url(db.url)
        ) from exc
    after = await status(db)
    applied = tuple(rev for rev in before.pending if rev not in after.pending)
    _log.info("migrations applied", revisions=applied, now=after.current, url=mask_url(db.url))
    return replace(after, applied=applied)


def _upgrade_sync(sync_conn: Any, revision: str) -> None:
    cfg = _config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, revision)


@contextlib.asynccontextmanager
async def _migration_lock(db: Database) -> AsyncIterator[None]:
    if db.dialect == "postgresql":
        async with db.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
                await conn.commit()
        return
    path = db.sqlite_path
    if path is None:
        yield
        return
    lock_path = path.with_name(path.name + ".migrate.lock")
    handle = await asyncio.to_thread(_acquire_file_lock, lock_path)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _acquire_file_lock(path: Path) -> Any:
    handle = path.open("a+")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle
