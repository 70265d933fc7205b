"""Registry in the main database (``sqlite:///...``, the embedded default, or ``postgresql://``).

Every hub process of a deployment shares the registry through the database:

* a registration is a row of ``service_instances``; re-registering is one transaction that
  replaces the row and logs the change, so readers see the old row or the new one;
* a TTL is an ``expires_at`` column: expired rows are invisible to reads at once and are
  purged (with one ``expired`` change each) by the next writer or by a poller's sweep, so a
  process killed with SIGKILL disappears after its TTL without anyone deregistering it;
* ``watch`` works across processes: one poller per registry object reads the change log
  (``service_changes``) every ``poll_interval`` seconds and fans the changes out to this
  object's watchers. Changes made through this object are pumped to its watchers before
  the write returns, so they are seen at once and in order.

TTLs are judged by the clock of the process that reads or sweeps (``clock``, injectable for
tests); hub processes on several machines need roughly synchronised clocks (NTP), the same
assumption session expiry makes. The database is the hub's own :class:`Database` when the
caller passes it (``database=``), else one created from the URL and owned by the registry.
Tables come from migration ``0004``: run ``medianest migrate`` (or start the hub) first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.backends import mask_url
from medianest.database import Database
from medianest.database.engine import _reason
from medianest.database.schema import service_instances
from medianest.discovery.backends import sql_store as store
from medianest.discovery.backends.memory import WallClock, utc_now
from medianest.discovery.base import (
    ChangeKind,
    Criteria,
    HealthState,
    Registration,
    ServiceInstance,
    ServiceRegistry,
    check_ttl,
    successor,
)
from medianest.discovery.fanout import ChangeFanout, Subscription
from medianest.errors import BackendError, BackendUnavailable, NotFoundError
from medianest.observability.logging import get_logger

_log = get_logger("medianest.discovery")
_I = service_instances.c
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
}


def async_url(url: str) -> str:
    """``url`` with the async driver SQLAlchemy needs (``sqlite://`` → ``sqlite+aiosqlite://``)."""
    scheme, sep, rest = url.partition("://")
    driver = _ASYNC_DRIVERS.get(scheme.lower())
    return f"{driver}{sep}{rest}" if driver else url


class SqlRegistry(ServiceRegistry):
    """The registry over ``service_instances`` / ``service_changes`` (module docstring).

    ``poll_interval`` is how often the change log is read (and expired rows swept);
    ``change_retention`` how many seconds the log keeps a change, and ``prune_interval``
    how often this process deletes older ones.
    """

    def __init__(
        self,
        database: Database,
        *,
        owns_database: bool = False,
        clock: WallClock | None = None,
        poll_interval: float = 0.5,
        change_retention: float = 3600.0,
        prune_interval: float = 60.0,
    ) -> None:
        self.database = database
        self._owns_database = owns_database
        self._clock = clock or utc_now
        self.poll_interval = poll_interval
        self.change_retention = change_retention
        self.prune_interval = prune_interval
        self._fanout = ChangeFanout(backend=mask_url(database.url))
        self._cursor: int | None = None
        self._pump_lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._pruned_at = 0.0

    @classmethod
    def from_url(cls, url: str, *, database: Database | None = None, **options: Any) -> SqlRegistry:
        """``database`` is the hub's own; without it the registry opens (and closes) one."""
        if database is not None:
            return cls(database, **options)
        return cls(Database(async_url(url)), owns_database=True, **options)

    def __repr__(self) -> str:
        return f"SqlRegistry({mask_url(self.database.url)!r})"

    @property
    def _backend(self) -> str:
        return mask_url(self.database.url)

    async def start(self) -> None:
        if self._poller is not None:
            return
        if self._owns_database:
            await self.database.start()
        async with self._connection() as conn:
            self._cursor = await store.last_seq(conn)
        self._poller = asyncio.create_task(self._poll_forever(), name="registry-poller")

    async def close(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        self._fanout.close()
        if self._owns_database:
            await self.database.close()

    async def ping(self) -> None:
        try:
            async with self.database.connect() as conn:
                await conn.execute(select(_I.id).limit(1))
        except (SQLAlchemyError, OSError) as exc:
            raise BackendUnavailable(
                f"service registry unreachable: {_reason(exc)}", backend=self._backend
            ) from exc

    # -- writes ---------------------------------------------------------------------------

    async def register(self, instance: ServiceInstance, *, ttl: float | None = None) -> None:
        ttl = check_ttl(ttl)
        now = self._clock()
        async with self._connection(write=True) as conn:
            await store.begin_write(conn, now)
            row = await store.fetch(conn, instance.id, now)
            previous = store.from_row(row) if row is not None else None
            registration = successor(previous, instance, now, ttl)
            values = store.row_values(registration)
            if row is None:
                await conn.execute(service_instances.insert().values(**values, revision=1))
            else:
                await conn.execute(
                    update(service_instances)
                    .where(_I.id == instance.id)
                    .values(**values, revision=_I.revision + 1)
                )
            if previous is not None and previous.instance.name != instance.name:
                await store.log_change(conn, "deregistered", previous, now)
                previous = None
            kind: ChangeKind = "registered" if previous is None else "updated"
            await store.log_change(conn, kind, registration, now)
        await self._deliver()

    async def heartbeat(self, instance_id: str) -> None:
        now = self._clock()
        async with self._connection() as conn:
            for _ in range(5):
                result = await conn.execute(
                    select(_I.ttl, _I.revision).where(_I.id == instance_id, store.alive(now))
                )
                row = result.one_or_none()
                await conn.rollback()
                if row is None:
                    raise NotFoundError(
                        f"no registration {instance_id!r} to renew (expired or removed)"
                    )
                ttl, revision = row
                expires = None if ttl is None else now + timedelta(seconds=ttl)
                result = await conn.execute(
                    update(service_instances)
                    .where(_I.id == instance_id, _I.revision == revision, store.alive(now))
                    .values(renewed_at=now, expires_at=expires)
                )
                await conn.commit()
                if result.rowcount:
                    return
        raise BackendError(
            f"could not renew {instance_id!r}: it kept being replaced", backend=self._backend
        )

    async def deregister(self, instance_id: str) -> bool:
        now = self._clock()
        async with self._connection(write=True) as conn:
            expired = await store.begin_write(conn, now)
            row = await store.fetch(conn, instance_id, now)
            if row is not None:
                await conn.execute(service_instances.delete().where(_I.id == instance_id))
                await store.log_change(conn, "deregistered", store.from_row(row), now)
        if row is not None or expired:
            await self._deliver()
        return row is not None

    async def set_health(self, instance_id: str, state: HealthState, reason: str = "") -> bool:
        state = HealthState(state)
        now = self._clock()
        changed = False
        async with self._connection(write=True) as conn:
            expired = await store.begin_write(conn, now)
            row = await store.fetch(conn, instance_id, now)
            if row is not None and (row["state"], row["reason"]) != (state.value, reason):
                await conn.execute(
                    update(service_instances)
                    .where(_I.id == instance_id)
                    .values(state=state.value, reason=reason, revision=_I.revision + 1)
                )
                updated = store.from_row(row).model_copy(update={"state": state, "reason": reason})
                await store.log_change(conn, "health", updated, now)
                changed = True
        if changed or expired:
            await self._deliver()
        return row is not None

    # -- reads ----------------------------------------------------------------------------

    async def discover(self, criteria: Criteria | None = None) -> list[Registration]:
        criteria = criteria or Criteria()
        async with self._connection() as conn:
            found = await store.fetch_all(conn, criteria.name, self._clock())
        return [registration for registration in found if criteria.matches(registration)]

    async def health(self, instance_id: str) -> Registration | None:
        async with self._connection() as conn:
            row = await store.fetch(conn, instance_id, self._clock())
        return store.from_row(row) if row is not None else None

    def watch(self, name: str | None = None) -> Subscription:
        if self._poller is None:
            raise BackendError("the SQL registry is not started", backend=self._backend)
        return self._fanout.subscribe(name)

    # -- the poller -----------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        failing = False
        while True:
            try:
                await self._sweep()
                await self._pump()
            except BackendError as exc:
                if not failing:
                    _log.warning("registry poll failed", error=str(exc), backend=self._backend)
                failing = True
            except Exception:
                _log.exception("registry poll failed unexpectedly", backend=self._backend)
                failing = True
            else:
                if failing:
                    _log.info("registry poll recovered", backend=self._backend)
                failing = False
            await asyncio.sleep(self.poll_interval)

    async def _sweep(self) -> None:
        """Purge expired rows (logging ``expired`` changes) and, now and then, old changes."""
        now = self._clock()
        async with self._connection() as conn:
            expired = await store.any_expired(conn, now)
        prune = time.monotonic() - self._pruned_at >= self.prune_interval
        if not expired and not prune:
            return
        async with self._connection(write=True) as conn:
            await store.begin_write(conn, now)
            if prune:
                await store.prune_changes(conn, now - timedelta(seconds=self.change_retention))
        if prune:
            self._pruned_at = time.monotonic()

    async def _pump(self) -> None:
        """Hand every logged change after the cursor to this object's watchers, in order."""
        async with self._pump_lock:
            assert self._cursor is not None
            while True:
                async with self._connection() as conn:
                    batch = await store.changes_after(conn, self._cursor)
                for seq, change in batch:
                    self._fanout.publish(change)
                    self._cursor = seq
                if len(batch) < 500:
                    return

    async def _deliver(self) -> None:
        """After a write: pump at once, so this process's watchers see it before we return."""
        if self._poller is None:
            return
        try:
            await self._pump()
        except BackendError as exc:
            _log.warning("registry change delivery deferred", error=str(exc))

    @contextlib.asynccontextmanager
    async def _connection(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection (a committed-on-exit transaction when ``write``); the one place where
        driver errors become :class:`BackendError` / :class:`BackendUnavailable`."""
        try:
            async with self.database.begin() if write else self.database.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            unavailable = isinstance(exc, OSError | InterfaceError) or (
                isinstance(exc, DBAPIError) and exc.connection_invalidated
            )
            error = BackendUnavailable if unavailable else BackendError
            raise error(f"service registry failed: {_reason(exc)}", backend=self._backend) from exc
