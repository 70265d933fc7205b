"""The media request and download aggregates: every path, every refused transition,
optimistic concurrency, and snapshots that change nothing but speed."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from medianest.errors import NotFoundError, ValidationError, WrongExpectedVersion
from medianest.events import EventMetadata, EventStore
from medianest.events.aggregates import Aggregate, Repository
from medianest.events.downloads import Download
from medianest.events.requests import MediaRequest
from tests.support.event_stores import ROWS


@pytest.fixture(params=sorted(ROWS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with ROWS[request.param].make(tmp_path, None) as subject:
        yield subject.store


def new_request(request_id: str = "42", media_type: str = "movie") -> MediaRequest:
    item = MediaRequest(request_id)
    item.request(media_type=media_type, tmdb_id=603, title="The Matrix", requested_by="alice")
    return item


def new_download(download_id: str = "7") -> Download:
    item = Download(download_id)
    item.queue(url="https://youtube.com/playlist?list=x", title="Talks", requested_by="bob")
    return item


# -- media requests --------------------------------------------------------------------------

REQUEST_COMMANDS: dict[str, Callable[[MediaRequest], None]] = {
    "request": lambda r: r.request(
        media_type="movie", tmdb_id=1, title="Again", requested_by="alice"
    ),
    "submit": lambda r: r.submit("ovs-1"),
    "approve": lambda r: r.approve("admin"),
    "decline": lambda r: r.decline("admin", "no room"),
    "mark_available": lambda r: r.mark_available("plex-9"),
    "fail": lambda r: r.fail("overseerr refused"),
    "cancel": lambda r: r.cancel("alice"),
}
REQUEST_PATHS: dict[str | None, list[str]] = {
    None: [],
    "requested": ["request"],
    "submitted": ["request", "submit"],
    "approved": ["request", "submit", "approve"],
    "declined": ["request", "submit", "decline"],
    "available": ["request", "submit", "approve", "mark_available"],
    "failed": ["request", "fail"],
    "cancelled": ["request", "cancel"],
}
REQUEST_ALLOWED: dict[str, set[str | None]] = {
    "request": {None},
    "submit": {"requested"},
    "approve": {"submitted"},
    "decline": {"submitted"},
    "mark_available": {"approved"},
    "fail": {"requested", "submitted", "approved"},
    "cancel": {"requested", "submitted", "approved"},
}


def request_in(state: str | None) -> MediaRequest:
    item = MediaRequest("42")
    for command in REQUEST_PATHS[state]:
        REQUEST_COMMANDS[command](item)
    assert item.state == state
    return item


@pytest.mark.parametrize("command", sorted(REQUEST_COMMANDS))
@pytest.mark.parametrize("state", list(REQUEST_PATHS), ids=str)
def test_a_request_command_is_accepted_exactly_where_the_state_machine_allows(
    state: str | None, command: str
) -> None:
    item = request_in(state)
    before = len(item.pending)
    if state in REQUEST_ALLOWED[command]:
        REQUEST_COMMANDS[command](item)
        assert len(item.pending) == before + 1
        return
    with pytest.raises(ValidationError) as refused:
        REQUEST_COMMANDS[command](item)
    shown = "it does not exist yet" if state is None else f"it is {state}"
    assert f"cannot {command} media request 42: {shown}" in refused.value.message
    assert refused.value.extra["command"] == command
    assert refused.value.extra["state"] == (state or "new")
    assert len(item.pending) == before


@pytest.mark.parametrize(
    ("path", "final"),
    [
        (["submit", "approve", "mark_available"], "available"),
        (["submit", "decline"], "declined"),
        (["submit", "approve", "fail"], "failed"),
        (["submit", "fail"], "failed"),
        (["fail"], "failed"),
        (["cancel"], "cancelled"),
        (["submit", "cancel"], "cancelled"),
        (["submit", "approve", "cancel"], "cancelled"),
    ],
)
async def test_every_request_path_is_stored_and_replayed(
    store: EventStore, path: list[str], final: str
) -> None:
    repository = Repository(store, MediaRequest)
    await repository.save(new_request(), metadata=EventMetadata(correlation_id="c-1"))
    for command in path:
        await repository.update("42", REQUEST_COMMANDS[command])
    loaded = await repository.load("42")
    assert (loaded.state, loaded.final, loaded.version) == (final, True, len(path) + 1)
    assert loaded.title == "The Matrix"
    events = await store.read_stream("request-42")
    assert events[0].type == "MediaRequested"
    assert events[0].metadata.correlation_id == "c-1"
    assert all(event.schema_version == 1 for event in events)


def test_request_arguments_are_checked_before_any_event() -> None:
    item = MediaRequest("1")
    with pytest.raises(ValidationError, match="media_type"):
        item.request(media_type="album", tmdb_id=1, title="x", requested_by="a")
    with pytest.raises(ValidationError, match="tmdb_id"):
        item.request(media_type="movie", tmdb_id=0, title="x", requested_by="a")
    with pytest.raises(ValidationError, match="only a tv request has seasons"):
        item.request(media_type="movie", tmdb_id=1, title="x", requested_by="a", seasons=[1])
    with pytest.raises(ValidationError, match="title"):
        item.request(media_type="movie", tmdb_id=1, title=" ", requested_by="a")
    assert item.pending == ()
    item.request(media_type="tv", tmdb_id=1, title="x", requested_by="a", seasons=[2, 1, 2])
    assert item.seasons == [1, 2]


# -- downloads -------------------------------------------------------------------------------

DOWNLOAD_COMMANDS: dict[str, Callable[[Download], None]] = {
    "queue": lambda d: d.queue(url="https://example.com/v", title="t", requested_by="bob"),
    "start": lambda d: d.start(),
    "progress": lambda d: d.progress(50.0, 1024),
    "complete": lambda d: d.complete("/library/Talks", 2048),
    "fail": lambda d: d.fail("yt-dlp exited with 1"),
    "cancel": lambda d: d.cancel("bob"),
}
DOWNLOAD_PATHS: dict[str | None, list[str]] = {
    None: [],
    "queued": ["queue"],
    "downloading": ["queue", "start"],
    "completed": ["queue", "start", "complete"],
    "failed": ["queue", "fail"],
    "cancelled": ["queue", "cancel"],
}
DOWNLOAD_ALLOWED: dict[str, set[str | None]] = {
    "queue": {None},
    "start": {"queued"},
    "progress": {"downloading"},
    "complete": {"downloading"},
    "fail": {"queued", "downloading"},
    "cancel": {"queued", "downloading"},
}


@pytest.mark.parametrize("command", sorted(DOWNLOAD_COMMANDS))
@pytest.mark.parametrize("state", list(DOWNLOAD_PATHS), ids=str)
def test_a_download_command_is_accepted_exactly_where_the_state_machine_allows(
    state: str | None, command: str
) -> None:
    item = Download("7")
    for step in DOWNLOAD_PATHS[state]:
        DOWNLOAD_COMMANDS[step](item)
    if state in DOWNLOAD_ALLOWED[command]:
        DOWNLOAD_COMMANDS[command](item)
        return
    with pytest.raises(ValidationError) as refused:
        DOWNLOAD_COMMANDS[command](item)
    shown = "it does not exist yet" if state is None else f"it is {state}"
    assert f"cannot {command} download 7: {shown}" in refused.value.message
    assert "needs:" in refused.value.message


@pytest.mark.parametrize(
    ("path", "final"),
    [
        (["start", "progress", "progress", "complete"], "completed"),
        (["start", "progress", "fail"], "failed"),
        (["start", "cancel"], "cancelled"),
        (["fail"], "failed"),
        (["cancel"], "cancelled"),
    ],
)
async def test_every_download_path_is_stored_and_replayed(
    store: EventStore, path: list[str], final: str
) -> None:
    repository = Repository(store, Download)
    await repository.save(new_download())
    for command in path:
        await repository.update("7", DOWNLOAD_COMMANDS[command])
    loaded = await repository.load("7")
    assert (loaded.state, loaded.final) == (final, True)
    if final == "completed":
        assert (loaded.percent, loaded.bytes, loaded.path) == (100.0, 2048, "/library/Talks")


@pytest.mark.parametrize(
    ("percent", "size"), [(-1, 0), (100.5, 0), (float("nan"), 0), (10, -1), (True, 0)]
)
def test_progress_refuses_impossible_values(percent: Any, size: Any) -> None:
    item = new_download()
    item.start()
    with pytest.raises(ValidationError):
        item.progress(percent, size)
    assert [e.type for e in item.pending] == ["DownloadQueued", "DownloadStarted"]


# -- repository: concurrency, snapshots ------------------------------------------------------


async def test_a_stale_writer_gets_a_concurrency_error(store: EventStore) -> None:
    repository = Repository(store, MediaRequest)
    item = new_request()
    item.submit("ovs-1")
    await repository.save(item)
    first = await repository.load("42")
    second = await repository.load("42")
    first.approve("admin")
    second.decline("another admin", "duplicate")
    await repository.save(first)
    with pytest.raises(WrongExpectedVersion) as conflict:
        await repository.save(second)
    assert (conflict.value.expected, conflict.value.actual) == (2, 3)
    assert second.pending, "the refused events stay pending"
    assert (await repository.load("42")).state == "approved"


@pytest.mark.parametrize(("command", "outcome"), [("cancel", "cancelled"), ("decline", "refused")])
async def test_update_reruns_the_command_on_the_winners_state(
    store: EventStore, command: str, outcome: str
) -> None:
    repository = Repository(store, MediaRequest)
    item = new_request()
    item.submit("ovs-1")
    await repository.save(item)
    racer = await repository.load("42")
    racer.approve("admin")
    seen: list[str | None] = []
    original_save = repository.save

    async def racer_commits_first(
        target: MediaRequest, *, metadata: EventMetadata | None = None
    ) -> Any:
        if racer.pending:
            await original_save(racer)
        return await original_save(target, metadata=metadata)

    def run(request: MediaRequest) -> None:
        seen.append(request.state)
        REQUEST_COMMANDS[command](request)

    repository.save = racer_commits_first  # type: ignore[method-assign,assignment]
    if outcome == "refused":
        with pytest.raises(
            ValidationError, match="cannot decline media request 42: it is approved"
        ):
            await repository.update("42", run)
    else:
        assert (await repository.update("42", run)).state == outcome
    assert seen == ["submitted", "approved"]
    types = [e.type for e in await store.read_stream("request-42")]
    assert types[2] == "RequestApproved"
    assert len(types) == (4 if outcome == "cancelled" else 3)


async def test_a_new_aggregate_cannot_be_created_twice(store: EventStore) -> None:
    repository = Repository(store, MediaRequest)
    await repository.save(new_request())
    with pytest.raises(WrongExpectedVersion):
        await repository.save(new_request())
    with pytest.raises(NotFoundError, match="no media request 9"):
        await repository.load("9")
    assert await repository.find("9") is None


def report(download: Download, n: int) -> None:
    download.progress(n * 9.5, n * 1000)


async def test_snapshots_give_the_same_state_as_a_full_replay(store: EventStore) -> None:
    with_snapshots = Repository(store, Download, snapshot_every=4)
    item = new_download()
    item.start()
    await with_snapshots.save(item)
    for n in range(1, 11):
        await with_snapshots.update("7", functools.partial(report, n=n))
    snapshot = await store.load_snapshot("download-7", Download.snapshot_schema)
    assert snapshot is not None
    assert snapshot.version == 12
    await with_snapshots.update("7", lambda d: d.complete("/library/Talks", 12_345))

    fast = await with_snapshots.load("7")
    full = await Repository(store, Download).load("7")
    assert fast.to_snapshot() == full.to_snapshot()
    assert fast.version == full.version == 13
    assert fast.state == "completed"


async def test_a_snapshot_of_another_shape_is_ignored(store: EventStore) -> None:
    repository = Repository(store, MediaRequest, snapshot_every=1)
    await repository.save(new_request())
    await store.save_snapshot("request-42", 1, 99, {"nonsense": True})
    loaded = await repository.load("42")
    assert (loaded.state, loaded.title) == ("requested", "The Matrix")


def test_an_aggregate_refuses_a_gap_in_its_stream() -> None:
    from datetime import UTC, datetime
    from uuid import uuid4

    from medianest.errors import BackendError
    from medianest.events import RecordedEvent

    item: Aggregate = MediaRequest("1")
    gap = RecordedEvent(
        uuid4(), "request-1", 2, 2, "MediaRequested", 1, {}, EventMetadata(), datetime.now(UTC)
    )
    with pytest.raises(BackendError, match="jumps from version 0 to 2"):
        item.replay([gap])
