"""The main database: an async SQLAlchemy engine over SQLite (default) or PostgreSQL.

SQLite gets WAL, a busy timeout and real transactions: the pysqlite driver's own implicit
transaction handling is turned off and ``BEGIN`` is emitted by SQLAlchemy, so DDL inside a
migration is atomic and SAVEPOINTs work (the recipe from SQLAlchemy's SQLite dialect docs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from medianest.backends import BackendBase, mask_url
from medianest.database.schema import instance_metadata
from medianest.errors import BackendError, BackendUnavailable


class Database(BackendBase):
    """Owns the engine; ``start`` creates it, ``close`` disposes it, ``ping`` proves it works."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.pool_size = pool_size
        self.echo = echo
        self._engine: AsyncEngine | None = None

    def __repr__(self) -> str:
        return f"Database({mask_url(self.url)!r})"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Database:
        return cls(url, **options)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return make_url(self.url).get_backend_name()

    @property
    def sqlite_path(self) -> Path | None:
        """The database file for SQLite, ``None`` for in-memory or other dialects."""
        if self.dialect != "sqlite":
            return None
        database = make_url(self.url).database
        return Path(database) if database and database != ":memory:" else None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise BackendError("database is not started", backend=mask_url(self.url))
        return self._engine

    async def start(self) -> None:
        if self._engine is not None:
            return
        options: dict[str, Any] = {"echo": self.echo, "pool_pre_ping": True}
        if self.dialect == "sqlite":
            path = self.sqlite_path
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            options["connect_args"] = {"timeout": 30}
        else:
            options.update(pool_size=self.pool_size, max_overflow=self.pool_size)
        engine = create_async_engine(self.url, **options)
        if self.dialect == "sqlite":
            _sqlite_pragmas(engine)
        self._engine = engine

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    async def ping(self) -> None:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            raise BackendUnavailable(
                f"database unreachable: {_reason(exc)}", backend=mask_url(self.url)
            ) from exc

    def connect(self) -> Any:
        """``async with db.connect() as conn``: a connection, no transaction opened yet."""
        return self.engine.connect()

    def begin(self) -> Any:
        """``async with db.begin() as conn``: a connection in a transaction committed on exit."""
        return self.engine.begin()

    async def instance_id(self) -> str:
        """This installation's stable id, created on first use and shared by all processes."""
        from uuid import uuid4

        async with self.begin() as conn:
            found = await _get_meta(conn, "instance_id")
            if found is not None:
                return found
        try:
            async with self.begin() as conn:
                await conn.execute(
                    insert(instance_metadata).values(key="instance_id", value=str(uuid4()))
                )
        except IntegrityError:
            pass
        async with self.connect() as conn:
            found = await _get_meta(conn, "instance_id")
        assert found is not None
        return found


async def _get_meta(conn: AsyncConnection, key: str) -> str | None:
    row = await conn.execute(
        select(instance_metadata.c.value).where(instance_metadata.c.key == key)
    )
    value = row.scalar_one_or_none()
    return str(value) if value is not None else None


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=30000",
            "PRAGMA synchronous=NORMAL",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {exc.orig}".splitlines()[0]
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
