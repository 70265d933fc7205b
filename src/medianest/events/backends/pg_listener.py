"""``LISTEN`` for appends on PostgreSQL, so live subscriptions wake up at once.

The listener owns **one dedicated asyncpg connection** per store object, outside the
SQLAlchemy pool: a connection that ``LISTEN``\\ s must stay open and idle for the store's
whole life, which would pin a pool slot and survive the pool's pre-ping and recycling
rules badly. Appenders ``pg_notify`` in their transaction; PostgreSQL delivers the
notification at commit, to every listening process.

A notification only says "read again" (subscriptions pull by position), so when the
connection is lost the listener reconnects with backoff and then wakes everyone once: what
was announced while it was away is read then. Until it is back, subscriptions fall back to
their ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from medianest.errors import BackendUnavailable
from medianest.observability.logging import get_logger

_log = get_logger("medianest.events")


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The plain ``postgresql://`` DSN asyncpg takes for a SQLAlchemy URL."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PgListener:
    """Calls ``wake()`` whenever ``channel`` is notified, and after each reconnection."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        wake: Callable[[], None],
        *,
        backend: str = "",
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self.channel = channel
        self._wake = wake
        self.backend = backend
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self._conn: Any = None
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self.reconnections = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (tests terminate it)."""
        return int(self._conn.get_server_pid()) if self.connected else None

    async def start(self) -> None:
        if self._supervisor is not None:
            return
        try:
            self._conn = await self._connect()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise BackendUnavailable(
                f"cannot LISTEN for events: {type(exc).__name__}: {exc}", backend=self.backend
            ) from exc
        self._supervisor = asyncio.create_task(self._supervise(), name="event-store-listener")

    async def close(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()

    async def _connect(self) -> Any:
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.add_listener(self.channel, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminated)
        return conn

    def _on_notify(self, _conn: object, _pid: int, _channel: str, _payload: object) -> None:
        self._wake()

    def _on_terminated(self, conn: object) -> None:
        if conn is self._conn:
            self._lost.set()

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            self._lost.clear()
            _log.warning("event listener connection lost; reconnecting", backend=self.backend)
            delay = self.reconnect_delay
            while True:
                try:
                    self._conn = await self._connect()
                    break
                except Exception as exc:  # any failure: keep trying, subscriptions still poll
                    _log.debug("event listener reconnect failed", error=str(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_reconnect_delay)
            self.reconnections += 1
            _log.info("event listener reconnected", backend=self.backend)
            self._wake()
