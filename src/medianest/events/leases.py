"""Leases: at most one holder of a named job at a time, across every hub process.

Background work that must not run twice at once -- the outbox relay, driving one saga -- is
done under a lease: a row ``leases(name, owner, expires_at)``. Every instance may *try*
(DESIGN.md: never "only one copy may run"); one wins, the others retry later and take over
when the holder stops renewing (it crashed, it was stopped, its machine went away).

:meth:`Leases.acquire` succeeds when nobody holds the lease, when the holder's time is up, or
when the caller holds it already (then it extends it, so acquiring again is renewing). On
SQL it is **one statement**, ``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE expired OR
same owner``, which is atomic on both dialects: PostgreSQL locks the conflicting row and
re-checks the condition on the newest version of it, SQLite has a single writer. So two
instances racing for a free or expired lease never both win. :meth:`Leases.renew` extends
only a lease the caller still holds; :meth:`Leases.release` gives it up at once.

**Time** is the acquirer's wall clock (an injectable ``clock``), stored as ``expires_at``:
the machines sharing the database must agree on the time to well within a ``ttl``.

**A lease is not a lock.** A holder stalled for longer than its ``ttl`` (a long GC pause, a
suspended VM) may still act after another instance took over. Work done under a lease must
tolerate that: the outbox relay then publishes some events twice (consumers are
idempotent), and a saga driver's next append carries the stream version it last saw, so the
event store refuses it (:class:`~medianest.errors.WrongExpectedVersion`) and the stale
driver stops.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.backends import mask_url
from medianest.database import Database
from medianest.database.engine import _reason
from medianest.database.schema import leases as leases_table
from medianest.errors import BackendError, BackendUnavailable, ValidationError
from medianest.events.base import EventStore
from medianest.events.model import check_name

WallClock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime."""

_L = leases_table.c


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_owner() -> str:
    """A name for this process that no other process shares: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds lease ``name`` and until when (it may already have expired)."""

    name: str
    owner: str
    expires_at: datetime


def _check(name: str, owner: str, ttl: float | None = None) -> None:
    check_name("lease name", name)
    check_name("lease owner", owner)
    if ttl is not None and not ttl > 0:
        raise ValidationError(
            f"a lease ttl must be > 0 seconds, not {ttl!r}", errors={"ttl": "bad"}
        )


class Leases(ABC):
    """Named leases (module docstring). ``clock`` tells the time (aware UTC)."""

    def __init__(self, *, clock: WallClock | None = None) -> None:
        self.clock = clock or utc_now

    @abstractmethod
    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """Take or extend ``name`` for ``ttl`` seconds; False when someone else holds it."""

    @abstractmethod
    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        """Extend ``name`` for ``ttl`` seconds if ``owner`` still holds it; False if not."""

    @abstractmethod
    async def release(self, name: str, owner: str) -> None:
        """Give up ``name`` if ``owner`` holds it (nothing otherwise)."""

    @abstractmethod
    async def holder(self, name: str) -> Lease | None:
        """The lease row of ``name``, expired or not, or None."""

    def _until(self, ttl: float) -> datetime:
        return self.clock().astimezone(UTC) + timedelta(seconds=ttl)


class MemoryLeases(Leases):
    """Leases for one process (the memory event store): a dict, checked without awaiting."""

    def __init__(self, *, clock: WallClock | None = None) -> None:
        super().__init__(clock=clock)
        self._held: dict[str, Lease] = {}

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        _check(name, owner, ttl)
        current = self._held.get(name)
        if current is not None and current.owner != owner and current.expires_at > self.clock():
            return False
        self._held[name] = Lease(name, owner, self._until(ttl))
        return True

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        _check(name, owner, ttl)
        current = self._held.get(name)
        if current is None or current.owner != owner:
            return False
        self._held[name] = Lease(name, owner, self._until(ttl))
        return True

    async def release(self, name: str, owner: str) -> None:
        _check(name, owner)
        current = self._held.get(name)
        if current is not None and current.owner == owner:
            del self._held[name]

    async def holder(self, name: str) -> Lease | None:
        return self._held.get(check_name("lease name", name))


class SqlLeases(Leases):
    """Leases in the ``leases`` table of the main database (migration ``0007``)."""

    def __init__(self, database: Database, *, clock: WallClock | None = None) -> None:
        super().__init__(clock=clock)
        self.database = database

    def __repr__(self) -> str:
        return f"SqlLeases({mask_url(self.database.url)!r})"

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        _check(name, owner, ttl)
        now = self.clock().astimezone(UTC)
        async with self._write() as conn:
            statement = _insert(conn).values(name=name, owner=owner, expires_at=self._until(ttl))
            excluded = statement.excluded
            result = await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[_L.name],
                    set_={"owner": excluded.owner, "expires_at": excluded.expires_at},
                    where=or_(_L.expires_at <= now, _L.owner == excluded.owner),
                )
            )
        return bool(result.rowcount == 1)

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        _check(name, owner, ttl)
        async with self._write() as conn:
            result = await conn.execute(
                update(leases_table)
                .where(_L.name == name, _L.owner == owner)
                .values(expires_at=self._until(ttl))
            )
        return bool(result.rowcount == 1)

    async def release(self, name: str, owner: str) -> None:
        _check(name, owner)
        async with self._write() as conn:
            await conn.execute(delete(leases_table).where(_L.name == name, _L.owner == owner))

    async def holder(self, name: str) -> Lease | None:
        check_name("lease name", name)
        try:
            async with self.database.connect() as conn:
                row = (
                    (await conn.execute(select(leases_table).where(_L.name == name)))
                    .mappings()
                    .one_or_none()
                )
        except (SQLAlchemyError, OSError) as exc:
            raise _translate(exc, self.database) from exc
        if row is None:
            return None
        expires = row["expires_at"]
        expires = expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires
        return Lease(row["name"], row["owner"], expires)

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A committed-on-exit transaction; driver errors become BackendError."""
        try:
            async with self.database.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise _translate(exc, self.database) from exc


def _insert(conn: AsyncConnection) -> Any:
    """The dialect's ``INSERT`` with ``ON CONFLICT`` (spelt alike on PostgreSQL and SQLite)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(leases_table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(leases_table)


def _translate(exc: BaseException, database: Database) -> BackendError:
    unavailable = isinstance(exc, OSError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
    error = BackendUnavailable if unavailable else BackendError
    return error(f"lease table failed: {_reason(exc)}", backend=mask_url(database.url))


_memory_leases: weakref.WeakKeyDictionary[EventStore, MemoryLeases] = weakref.WeakKeyDictionary()


def leases_for(store: EventStore, *, clock: WallClock | None = None) -> Leases:
    """The leases that fit ``store``: its database's ``leases`` table for a SQL store (shared
    by every process using it), else leases kept in this process, one set per store object
    (so two relays or orchestrators on one memory store share them)."""
    database = getattr(store, "database", None)
    if isinstance(database, Database):
        return SqlLeases(database, clock=clock)
    if clock is not None:
        return MemoryLeases(clock=clock)
    found = _memory_leases.get(store)
    if found is None:
        found = _memory_leases[store] = MemoryLeases()
    return found
