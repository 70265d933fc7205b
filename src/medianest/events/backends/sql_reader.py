"""The connection an SQL event store keeps for its reads.

A read on it is one call to the driver (:mod:`.sql_raw`): no pool checkout and pre-ping, no
``BEGIN`` and no rollback when it goes back (both drivers read in autocommit here), which is
most of a live subscription's lag. While another read uses it, a read takes a pooled
connection instead. SQLite in memory always reads through the pool: another connection
would be another database.

Without the pool's pre-ping, a kept connection that the server or a proxy ended while it
was idle (a restart, ``idle_session_timeout``, a reset) fails only when a read uses it. A
read that fails so (:data:`~.sql_raw.UNAVAILABLE_ERRORS`) on the kept connection is run once
more on a new one, and only that one's failure reaches the caller; not a statement the
server cancelled (:data:`~.sql_raw.CANCELLED_ERRORS`: it would only run as long again), nor
one of a store that closed meanwhile. The retry cannot repeat
or lose events: a read is one statement whose rows the driver returns all at once or not at
all, so the failed attempt returned nothing and the retry answers the whole read. A
connection that failed in any other way is dropped too; the next read opens another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.database import Database
from medianest.events.backends import sql_raw
from medianest.events.backends.sql_raw import Driver

P = ParamSpec("P")
T = TypeVar("T")


class KeptReader:
    """The kept read connection of one store (module docstring); ``is_open`` says whether
    the store is started (a closed store reads through the pool and keeps nothing)."""

    def __init__(self, database: Database, is_open: Callable[[], bool]) -> None:
        self.database = database
        self._is_open = is_open
        self._enabled = database.dialect != "sqlite" or database.sqlite_path is not None
        self.driver: Driver | None = None
        self._connection: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def read(
        self,
        read: Callable[Concatenate[Driver, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``read(driver, ...)`` on the kept connection, or a pooled one while that is busy;
        driver errors propagate untranslated."""
        if not self._enabled or not self._is_open() or self._lock.locked():
            async with self.database.connect() as conn:
                return await read(await sql_raw.driver_of(conn), *args, **kwargs)
        async with self._lock:
            try:
                if self.driver is not None:
                    try:
                        return await read(self.driver, *args, **kwargs)
                    except sql_raw.UNAVAILABLE_ERRORS as exc:
                        if isinstance(exc, sql_raw.CANCELLED_ERRORS) or not self._is_open():
                            raise
                        await self.drop(invalidate=True)
                return await read(await self._open(), *args, **kwargs)
            except BaseException:  # the connection may be unusable: the next read opens one
                await self.drop(invalidate=True)
                raise
            finally:
                if not self._is_open():  # the store closed during the read
                    await self.drop()

    async def _open(self) -> Driver:
        conn = await self.database.engine.connect()
        try:
            self.driver = await sql_raw.driver_of(conn)
        except BaseException:
            await conn.close()
            raise
        self._connection = conn
        return self.driver

    async def drop(self, *, invalidate: bool = False) -> None:
        """Close the kept connection (``invalidate``: it is not to go back to the pool)."""
        conn, self._connection, self.driver = self._connection, None, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError, *sql_raw.DRIVER_ERRORS):
                if invalidate:
                    await conn.invalidate()
                await conn.close()
