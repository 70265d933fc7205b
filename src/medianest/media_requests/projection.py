"""The ``media_requests`` read model, kept from the event log by a subscriber.

What moves a row (``status`` in brackets):

==================== ==============================================================
SagaStarted          a ``request-media`` saga began: the row appears (``pending``)
CompensationStarted  the saga failed for good: ``reason`` says why
SagaCompensated      the saga undid its work (``failed``)
SagaCompleted        nothing but the row's position
MediaRequested       ``title`` (``requested``); a request made outside a saga gets its
                     row here
RequestSubmitted     ``overseerr_id`` (``submitted``)
RequestApproved...   ``approved``, ``declined``, ``available``, ``failed``,
                     ``cancelled`` (with ``reason`` when there is one)
==================== ==============================================================

**Exactly once, crash or not.** Each event is applied in one transaction of the main
database that also saves the subscriber's checkpoint
(:func:`~medianest.events.backends.sql_store.save_checkpoint` on the same connection), so
after a crash the projection resumes right after the last event whose change committed.

**Where it runs.** In every ``workers`` instance (the hub wires it next to the outbox
relay and saga recovery). Several may run at once: each row remembers the log position of
the last event applied to it and an update only applies a later one, so a lagging instance
re-applies nothing and never moves a row back. The API of any role reads the table.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from medianest.database import Database
from medianest.database.schema import media_requests
from medianest.events.backends.sql_store import load_checkpoint, save_checkpoint
from medianest.events.base import EventStore
from medianest.events.model import EventFilter, RecordedEvent
from medianest.media_requests.saga import REQUEST_MEDIA, RequestInput
from medianest.observability.logging import get_logger
from medianest.sagas import records as R

NAME = "projection:media_requests"
_log = get_logger("medianest.media_requests")
_T = media_requests.c

REQUEST_STATUS: Mapping[str, str] = {
    "MediaRequested": "requested",
    "RequestSubmitted": "submitted",
    "RequestApproved": "approved",
    "RequestDeclined": "declined",
    "MediaAvailable": "available",
    "RequestFailed": "failed",
    "RequestCancelled": "cancelled",
}
_SAGA_EVENTS = (R.SAGA_STARTED, R.COMPENSATION_STARTED, R.SAGA_COMPENSATED, R.SAGA_COMPLETED)
FILTER = EventFilter(types=(*_SAGA_EVENTS, *REQUEST_STATUS))


def _insert(conn: AsyncConnection) -> Any:
    """The dialect's ``INSERT`` with ``ON CONFLICT`` (PostgreSQL and SQLite spell it alike)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(media_requests)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(media_requests)


async def _saga_event(conn: AsyncConnection, event: RecordedEvent) -> None:
    saga_id = event.stream_id.removeprefix(R.STREAM_PREFIX)
    at = event.recorded_at
    if event.type == R.SAGA_STARTED:
        if event.data.get("definition") != REQUEST_MEDIA:
            return
        request = RequestInput.of(event.data.get("input") or {})
        row = {
            **request.to_json(),
            "id": request.request_id,
            "status": "pending",
            "saga_id": saga_id,
            "position": event.position,
            "created_at": at,
            "updated_at": at,
        }
        for extra in ("request_id", "quota_exempt"):
            row.pop(extra)
        await conn.execute(_insert(conn).values(**row).on_conflict_do_nothing())
        return
    changes: dict[str, Any] = {"position": event.position}
    if event.type == R.COMPENSATION_STARTED:
        changes.update(reason=str(event.data.get("error") or "")[:2000], updated_at=at)
    elif event.type == R.SAGA_COMPENSATED:
        changes.update(status="failed", updated_at=at)
    await conn.execute(
        update(media_requests)
        .where(_T.saga_id == saga_id, _T.position < event.position)
        .values(**changes)
    )


async def _request_event(conn: AsyncConnection, event: RecordedEvent) -> None:
    request_id = event.stream_id.removeprefix("request-")
    data, at = event.data, event.recorded_at
    status = REQUEST_STATUS[event.type]
    if event.type == "MediaRequested":
        statement = _insert(conn).values(
            id=request_id,
            user_id=str(data["requested_by"]),
            media_type=data["media_type"],
            tmdb_id=data["tmdb_id"],
            seasons=list(data.get("seasons") or []),
            title=data["title"],
            status=status,
            position=event.position,
            created_at=at,
            updated_at=at,
        )
        excluded = statement.excluded
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[_T.id],
                set_={k: excluded[k] for k in ("title", "status", "position", "updated_at")},
                where=_T.position < excluded["position"],
            )
        )
        return
    changes: dict[str, Any] = {"status": status, "position": event.position, "updated_at": at}
    if event.type == "RequestSubmitted":
        changes["overseerr_id"] = str(data.get("upstream_id"))
    elif data.get("reason"):
        changes["reason"] = str(data["reason"])[:2000]
    await conn.execute(
        update(media_requests)
        .where(_T.id == request_id, _T.position < event.position)
        .values(**changes)
    )


async def apply(conn: AsyncConnection, event: RecordedEvent) -> None:
    """Apply one event of :data:`FILTER` to the table, in the caller's transaction."""
    if event.type in REQUEST_STATUS:
        if event.stream_id.startswith("request-"):
            await _request_event(conn, event)
    elif event.stream_id.startswith(R.STREAM_PREFIX):
        await _saga_event(conn, event)


class RequestProjection:
    """Keeps ``media_requests`` up to date (module docstring) until :meth:`close`.

    ``position`` is the log position of the last event applied by this instance.
    """

    def __init__(
        self,
        database: Database,
        store: EventStore,
        *,
        retry_delay: float = 0.2,
        max_retry_delay: float = 10.0,
    ) -> None:
        self.database = database
        self.store = store
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.position = 0
        self._task: asyncio.Task[None] | None = None

    async def catch_up(self) -> None:
        """Apply what is in the log now, then return (``run`` without the live part)."""
        position = await self._checkpoint()
        while batch := await self.store.read_all(position, limit=500, filter=FILTER):
            for event in batch:
                await self._apply(event)
            position = batch[-1].position

    async def _checkpoint(self) -> int:
        async with self.database.connect() as conn:
            return await load_checkpoint(conn, NAME)

    async def _apply(self, event: RecordedEvent) -> None:
        async with self.database.begin() as conn:
            await apply(conn, event)
            await save_checkpoint(conn, NAME, event.position)
        self.position = event.position

    async def _follow(self) -> None:
        subscription = self.store.subscribe(await self._checkpoint(), FILTER)
        try:
            async for event in subscription:
                await self._apply(event)
        finally:
            await subscription.aclose()

    async def run(self) -> None:
        """Follow the log until closed; a failure (the database is down) is logged and the
        projection resumes from its checkpoint after a growing pause."""
        delay = self.retry_delay
        while True:
            before = self.position
            try:
                await self._follow()
                return
            except Exception as exc:
                _log.warning(
                    "media request projection paused", error=f"{type(exc).__name__}: {exc}"
                )
            delay = self.retry_delay if self.position > before else delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="medianest-request-projection")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
