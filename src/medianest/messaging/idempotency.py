"""Handlers that take effect once per message, however often the broker delivers it.

Delivery is at least once: a handler sees a message again after a crash before its ack, a
lost lease, or a consumer cancelled at shutdown. :class:`IdempotentConsumer` keeps one row
per (group, message id) it handled in ``processed_messages`` (main database, migration
``0005``) and skips a message already recorded. Two kinds of handler:

**Transactional**, ``async def handler(message, conn)``: ``conn`` is a connection of the
main database inside a transaction whose first statement inserts the record. The handler's
own writes on ``conn`` and the record commit together or not at all, so a database effect
happens exactly once: a handler that raises rolls back both (the retry runs again), and a
second delivery of the same message arriving while the first still runs waits on the
record's row (PostgreSQL) or the write lock (SQLite) and then skips.

**Plain**, ``async def handler(message)``: the record is checked before and written after
the handler returned. The window: a process that dies between the handler's effect and the
record's commit (or a record write that fails) runs the handler again on redelivery, and
two deliveries running at the same moment may both run. Fine for effects that are cheap to
repeat now and then (a cache refresh, a notification with its own dedupe).

Records are kept ``ttl`` seconds (a week by default: much longer than any redelivery, lease
or retry backoff), then pruned by the next handled message every ``prune_interval``. A
record that expired but was not pruned yet still counts as processed. A replayed dead letter
keeps its id; it was never recorded (its handler failed), so it runs.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.backends import mask_url
from medianest.database import Database
from medianest.database.engine import _reason
from medianest.database.schema import processed_messages
from medianest.errors import BackendError, ValidationError
from medianest.messaging.base import Handler, Message, check_group
from medianest.observability.logging import get_logger

_log = get_logger("medianest.messaging")
_P = processed_messages.c

TransactionalHandler: TypeAlias = Callable[[Message, AsyncConnection], Awaitable[None]]
Clock: TypeAlias = Callable[[], datetime]


def takes_connection(handler: Callable[..., Awaitable[None]]) -> bool:
    """Whether ``handler`` wants ``(message, conn)`` rather than ``(message)``."""
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


class IdempotentConsumer:
    """Dedupe of one consumer ``group`` over ``database`` (module docstring)."""

    def __init__(
        self,
        database: Database,
        group: str,
        *,
        ttl: float = 7 * 86400.0,
        prune_interval: float = 3600.0,
        clock: Clock | None = None,
    ) -> None:
        if not ttl > 0:
            raise ValidationError(
                "ttl must be a positive number of seconds", errors={"ttl": "invalid"}
            )
        self.database = database
        self.group = check_group(group)
        self.ttl = timedelta(seconds=ttl)
        self.prune_interval = prune_interval
        self._clock = clock or (lambda: datetime.now(UTC))
        self._pruned_at = time.monotonic()

    def __repr__(self) -> str:
        return f"IdempotentConsumer({self.group!r}, {mask_url(self.database.url)!r})"

    def wrap(self, handler: Handler | TransactionalHandler) -> Handler:
        """A broker handler running ``handler`` once per message id (either kind)."""
        if takes_connection(handler):
            transactional: TransactionalHandler = handler  # type: ignore[assignment]

            @functools.wraps(handler)
            async def run_in_transaction(message: Message) -> None:
                await self.handle_in_transaction(message, transactional)

            return run_in_transaction
        plain: Handler = handler  # type: ignore[assignment]

        @functools.wraps(handler)
        async def run(message: Message) -> None:
            await self.handle(message, plain)

        return run

    async def handle_in_transaction(self, message: Message, handler: TransactionalHandler) -> bool:
        """Run ``handler(message, conn)`` with the record in its transaction; ``False`` when
        the message had been handled already (and nothing ran)."""
        async with self._transaction() as conn:
            if not await self._record(conn, message.id):
                _log.debug("duplicate message skipped", group=self.group, message_id=message.id)
                return False
            await handler(message, conn)
        await self._maybe_prune()
        return True

    async def handle(self, message: Message, handler: Handler) -> bool:
        """Run ``handler(message)`` unless recorded, then record it; ``False`` when skipped."""
        if await self.processed(message.id):
            _log.debug("duplicate message skipped", group=self.group, message_id=message.id)
            return False
        await handler(message)
        async with self._transaction() as conn:
            await self._record(conn, message.id)
        await self._maybe_prune()
        return True

    async def processed(self, message_id: str) -> bool:
        """Whether this group has a record of ``message_id``."""
        async with self._transaction(write=False) as conn:
            found = await conn.execute(
                select(_P.message_id).where(_P.group == self.group, _P.message_id == message_id)
            )
            return found.first() is not None

    async def prune(self) -> int:
        """Delete this database's expired records (of every group); how many."""
        async with self._transaction() as conn:
            result = await conn.execute(
                delete(processed_messages).where(_P.expires_at <= self._clock())
            )
        self._pruned_at = time.monotonic()
        return int(result.rowcount or 0)

    async def _maybe_prune(self) -> None:
        if time.monotonic() - self._pruned_at < self.prune_interval:
            return
        try:
            removed = await self.prune()
        except BackendError as exc:
            _log.warning("pruning processed messages failed", error=str(exc))
        else:
            _log.debug("processed messages pruned", removed=removed)

    async def _record(self, conn: AsyncConnection, message_id: str) -> bool:
        """Insert the record unless present; whether it was inserted."""
        now = self._clock()
        values: dict[str, Any] = {
            "group": self.group,
            "message_id": message_id,
            "processed_at": now,
            "expires_at": now + self.ttl,
        }
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(processed_messages)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["group", "message_id"])
        )
        result = await conn.execute(statement)
        return bool(result.rowcount)

    @contextlib.asynccontextmanager
    async def _transaction(self, *, write: bool = True) -> AsyncIterator[AsyncConnection]:
        """A transaction of the main database (committed on exit when ``write``); the one
        place where driver errors -- the transactional handler's included -- become
        :class:`~medianest.errors.BackendError`. Other handler errors pass through."""
        try:
            async with self.database.begin() if write else self.database.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise BackendError(
                f"idempotency records failed: {_reason(exc)}", backend=mask_url(self.database.url)
            ) from exc


def idempotent(
    database: Database, group: str, **options: Any
) -> Callable[[Handler | TransactionalHandler], Handler]:
    """Decorator form: ``@idempotent(db, "catalog-sync")`` over either kind of handler."""
    consumer = IdempotentConsumer(database, group, **options)
    return consumer.wrap
