"""The ``media_requests`` read model on SQLite and PostgreSQL: what each event does, the
saga fallback before the projection caught up, and a second projection that lags behind
never moving a row back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from medianest.database import Database, upgrade
from medianest.events import NO_STREAM, NewEvent
from medianest.events.aggregates import Repository
from medianest.events.backends.sql import SqlEventStore
from medianest.events.requests import MediaRequest
from medianest.integrations.models import MediaType
from medianest.media_requests import RequestInput, RequestProjection, find_request, list_requests
from medianest.media_requests.projection import FILTER, apply
from medianest.media_requests.saga import REQUEST_MEDIA, saga_id_for
from medianest.sagas import records as R


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlEventStore]:
    async with Database(database_url) as db:
        await upgrade(db)
        async with SqlEventStore(db) as events:
            yield events


async def start_saga(store: SqlEventStore, request_id: str, user: str) -> str:
    saga_id = saga_id_for(request_id)
    saga_input = RequestInput(request_id, user, MediaType.MOVIE, 603)
    data = {"definition": REQUEST_MEDIA, "input": saga_input.to_json(), "steps": ["a"]}
    await store.append(R.stream_of(saga_id), [NewEvent(R.SAGA_STARTED, data)], NO_STREAM)
    return saga_id


async def test_rows_follow_the_saga_and_the_request(store: SqlEventStore) -> None:
    db = store.database
    projection = RequestProjection(db, store)
    saga_id = await start_saga(store, "r1", "u1")

    pending = await find_request(db, store, "r1")
    assert pending is not None
    assert (pending.status, pending.saga_id) == ("pending", saga_id), "read from the saga"
    await projection.catch_up()
    row = await find_request(db, None, "r1")
    assert row is not None
    assert (row.status, row.user_id, row.tmdb_id, row.title) == ("pending", "u1", 603, None)

    repo: Repository[MediaRequest] = Repository(store, MediaRequest)
    item = MediaRequest("r1")
    item.request(media_type="movie", tmdb_id=603, title="The Matrix", requested_by="u1")
    item.submit("42")
    item.approve("overseerr")
    await repo.save(item)
    await projection.catch_up()
    row = await find_request(db, None, "r1")
    assert row is not None
    assert (row.status, row.title, row.overseerr_id) == ("approved", "The Matrix", "42")

    other = await start_saga(store, "r2", "u2")
    failed = {"step": "a", "index": 0, "error": "QuotaExceeded: request quota used up"}
    await store.append(R.stream_of(other), [NewEvent(R.COMPENSATION_STARTED, failed)], 1)
    await store.append(R.stream_of(other), [NewEvent(R.SAGA_COMPENSATED, {})], 2)
    await projection.catch_up()
    row = await find_request(db, None, "r2")
    assert row is not None
    assert (row.status, row.reason) == ("failed", "QuotaExceeded: request quota used up")

    rows, total = await list_requests(db, user_id=None)
    assert ([r.id for r in rows], total) == (["r2", "r1"], 2)
    rows, total = await list_requests(db, user_id="u1", status="approved")
    assert ([r.id for r in rows], total) == (["r1"], 1)
    assert await list_requests(db, user_id="u1", status="failed") == ([], 0)
    assert await find_request(db, store, "nobody") is None


async def test_a_lagging_projection_never_moves_a_row_back(store: SqlEventStore) -> None:
    db = store.database
    await start_saga(store, "r1", "u1")
    item = MediaRequest("r1")
    item.request(media_type="movie", tmdb_id=603, title="The Matrix", requested_by="u1")
    item.submit("42")
    await Repository(store, MediaRequest).save(item)
    await RequestProjection(db, store).catch_up()
    await Repository(store, MediaRequest).update("r1", lambda r: r.decline("admin", "no"))
    await RequestProjection(db, store).catch_up()

    # A second instance, behind: it applies the early events again, after the first one.
    async with db.begin() as conn:
        for event in await store.read_all(0, filter=FILTER):
            if event.type != "RequestDeclined":
                await apply(conn, event)
    row = await find_request(db, None, "r1")
    assert row is not None
    assert (row.status, row.reason, row.overseerr_id) == ("declined", "no", "42")
