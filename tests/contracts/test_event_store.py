"""Conformance suite of the event store, on every backend of ``tests/support/event_stores``.

Every test runs on every row; a new backend is a new row there, not new tests here. Waits
are on conditions with a deadline, never fixed sleeps, and nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from medianest.errors import (
    BackendError,
    ConfigurationError,
    ValidationError,
    WrongExpectedVersion,
)
from medianest.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    EventFilter,
    EventMetadata,
    EventStore,
    EventSubscription,
    NewEvent,
    RecordedEvent,
    Upcast,
    Upcasters,
    create_event_store,
    snapshot_due,
)
from tests.support.event_stores import ROWS, StoreUnderTest

DEADLINE = 20.0


@pytest.fixture(params=sorted(ROWS))
def row_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def _open(
    row_name: str, tmp_path: Path, upcasters: Upcasters | None = None
) -> AsyncIterator[StoreUnderTest]:
    async with ROWS[row_name].make(tmp_path, upcasters) as subject:
        yield subject


@pytest.fixture
async def subject(row_name: str, tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    async with _open(row_name, tmp_path) as subject:
        yield subject


@pytest.fixture
def store(subject: StoreUnderTest) -> EventStore:
    return subject.store


def ev(kind: str = "Happened", n: int = 0, **data: Any) -> NewEvent:
    return NewEvent(type=kind, data={"n": n, **data})


def batch(count: int, kind: str = "Happened", start: int = 0) -> list[NewEvent]:
    return [ev(kind, start + i) for i in range(count)]


async def take(subscription: EventSubscription, count: int) -> list[RecordedEvent]:
    """The next ``count`` events of ``subscription``, or fail after the deadline."""
    out: list[RecordedEvent] = []
    async with asyncio.timeout(DEADLINE):
        while len(out) < count:
            out.append(await anext(subscription))
    return out


def numbers(events: Sequence[RecordedEvent]) -> list[int]:
    return [int(e.data["n"]) for e in events]


# -- appends and stream reads --------------------------------------------------------------


async def test_append_then_read_stream(store: EventStore) -> None:
    events = batch(3)
    result = await store.append("request-1", events, NO_STREAM)
    assert (result.next_version, result.position) == (3, 3)
    found = await store.read_stream("request-1")
    assert [e.id for e in found] == [e.id for e in events]
    assert [e.version for e in found] == [1, 2, 3]
    assert [e.position for e in found] == [1, 2, 3]
    assert numbers(found) == [0, 1, 2]
    assert {e.stream_id for e in found} == {"request-1"}
    assert all(e.type == "Happened" and e.schema_version == 1 for e in found)
    assert all(e.recorded_at.tzinfo is not None for e in found)
    assert await store.stream_version("request-1") == 3
    assert await store.stream_version("nothing") == 0
    assert await store.read_stream("nothing") == []


async def test_read_stream_forward_backward_and_limits(store: EventStore) -> None:
    await store.append("s", batch(5), NO_STREAM)
    assert [e.version for e in await store.read_stream("s", from_version=3)] == [3, 4, 5]
    assert [e.version for e in await store.read_stream("s", from_version=2, limit=2)] == [2, 3]
    assert [e.version for e in await store.read_stream("s", backwards=True)] == [5, 4, 3, 2, 1]
    back = await store.read_stream("s", from_version=3, backwards=True, limit=2)
    assert [e.version for e in back] == [3, 2]
    assert [e.version for e in await store.read_stream("s", backwards=True, limit=1)] == [5]
    assert await store.read_stream("s", from_version=6) == []
    assert await store.read_stream("s", limit=0) == []
    with pytest.raises(ValidationError):
        await store.read_stream("s", limit=-1)


async def test_every_expected_version_mode(store: EventStore) -> None:
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append("s", [ev()], STREAM_EXISTS)
    assert info.value.actual == 0
    assert (await store.append("s", [ev()], 0)).next_version == 1
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append("s", [ev()], NO_STREAM)
    assert (info.value.actual, info.value.stream_id) == (1, "s")
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append("s", [ev()], 0)
    assert info.value.actual == 1
    assert (await store.append("s", [ev()], 1)).next_version == 2
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append("s", [ev()], 7)
    assert info.value.actual == 2
    assert info.value.expected == 7
    assert (await store.append("s", batch(2), STREAM_EXISTS)).next_version == 4
    assert (await store.append("s", [ev()], ANY)).next_version == 5
    assert (await store.append("other", [ev()], ANY)).next_version == 1
    assert (await store.append("fresh", [ev()], NO_STREAM)).next_version == 1
    assert await store.stream_version("s") == 5
    assert len(await store.read_all()) == 7


async def test_racing_appends_with_one_expected_version_one_wins(store: EventStore) -> None:
    await store.append("s", [ev()], NO_STREAM)
    outcomes = await asyncio.gather(
        *(store.append("s", [ev(n=i)], 1) for i in range(6)), return_exceptions=True
    )
    wins = [o for o in outcomes if not isinstance(o, BaseException)]
    losses = [o for o in outcomes if isinstance(o, WrongExpectedVersion)]
    assert len(wins) == 1, outcomes
    assert len(losses) == 5, outcomes
    assert all(loss.actual == 2 for loss in losses)
    assert [e.version for e in await store.read_stream("s")] == [1, 2]


async def test_racing_creations_of_one_stream_one_wins(store: EventStore) -> None:
    outcomes = await asyncio.gather(
        *(store.append("new", [ev(n=i)], NO_STREAM) for i in range(6)), return_exceptions=True
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1, outcomes
    assert sum(isinstance(o, WrongExpectedVersion) for o in outcomes) == 5
    appended = await asyncio.gather(*(store.append("any", [ev(n=i)], ANY) for i in range(6)))
    assert sorted(r.next_version for r in appended) == [1, 2, 3, 4, 5, 6]


async def test_retrying_an_append_does_not_duplicate(store: EventStore) -> None:
    await store.append("s", [ev()], NO_STREAM)
    events = batch(3, start=1)
    first = await store.append("s", events, 1)
    again = await store.append("s", events, 1)
    assert again == first
    await store.append("s", [ev(n=9)], ANY)
    assert await store.append("s", events, 1) == first
    assert await store.append("s", events, ANY) == first
    assert await store.append("s", events, STREAM_EXISTS) == first
    retried = [
        NewEvent(e.type, e.data, EventMetadata(traceparent="00-retry"), e.id) for e in events
    ]
    assert await store.append("s", retried, 1) == first
    assert [e.version for e in await store.read_stream("s")] == [1, 2, 3, 4, 5]
    with pytest.raises(WrongExpectedVersion) as info:
        await store.append("s", events, 3)
    assert info.value.actual == 5
    solo = [ev(n=42)]
    created = await store.append("solo", solo, NO_STREAM)
    assert await store.append("solo", solo, NO_STREAM) == created
    assert await store.head_position() == 6


async def test_concurrent_retries_of_one_append_store_it_once(store: EventStore) -> None:
    events = batch(2)
    results = await asyncio.gather(*(store.append("s", events, NO_STREAM) for _ in range(5)))
    assert len(set(results)) == 1
    assert len(await store.read_stream("s")) == 2
    assert await store.head_position() == 2


async def test_reused_event_ids_are_refused(store: EventStore) -> None:
    events = batch(2)
    await store.append("s", events, NO_STREAM)
    with pytest.raises(ValidationError, match="already stored"):
        await store.append("t", [events[0]], ANY)
    with pytest.raises(ValidationError, match="already stored"):
        await store.append("s", [NewEvent("Other", {"n": 0}, id=events[0].id)], ANY)
    with pytest.raises(ValidationError, match="part of this append"):
        await store.append("s", [events[1], ev()], ANY)
    with pytest.raises(ValidationError):
        await store.append("s", [events[1], events[0]], ANY)
    assert len(await store.read_all()) == 2


async def test_invalid_appends_are_refused(store: EventStore) -> None:
    one = ev()
    for call in (
        store.append("s", [], ANY),
        store.append("", [ev()], ANY),
        store.append("s", [one, one], ANY),
        store.append("s", [NewEvent("T", {"x": object()})], ANY),
        store.append("s", [NewEvent("T", {"x": float("nan")})], ANY),
        store.append("s", [NewEvent("", {})], ANY),
        store.append("s", [NewEvent("T", {}, schema_version=0)], ANY),
        store.append("s", [ev()], -1),
        store.append("s", [ev()], "any"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValidationError):
            await call
    assert await store.head_position() == 0


async def test_metadata_and_data_round_trip(store: EventStore) -> None:
    meta = EventMetadata(
        correlation_id="corr-1",
        causation_id="cause-1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        user="alice",
        extra={"source": "api"},
    )
    data = {"title": "Dune ☃", "ids": {"tmdb": 438631}, "tags": ["a", "b"], "ok": True, "x": None}
    event = NewEvent("RequestCreated", data, meta, schema_version=2)
    await store.append("request-1", [event], NO_STREAM)
    (found,) = await store.read_stream("request-1")
    assert found.metadata == meta
    assert found.data == data
    assert found.schema_version == 2
    follow = EventMetadata(user="bob").caused_by(found)
    assert (follow.correlation_id, follow.causation_id, follow.user) == (
        "corr-1",
        str(found.id),
        "bob",
    )
    await store.append("request-1", [NewEvent("Approved", metadata=follow)], 1)
    (approved,) = await store.read_stream("request-1", from_version=2)
    assert approved.metadata.causation_id == str(event.id)
    assert approved.data == {}


# -- the global log ------------------------------------------------------------------------


async def test_read_all_is_gap_free_and_filtered(store: EventStore) -> None:
    await store.append("request-1", [ev("Created", 0), ev("Approved", 1)], NO_STREAM)
    await store.append("download-1", [ev("Started", 2)], NO_STREAM)
    await store.append("request_2", [ev("Created", 3)], NO_STREAM)
    await store.append("requestX", [ev("Created", 4)], NO_STREAM)
    everything = await store.read_all()
    assert [e.position for e in everything] == [1, 2, 3, 4, 5]
    assert numbers(everything) == [0, 1, 2, 3, 4]
    assert await store.head_position() == 5
    assert numbers(await store.read_all(2)) == [2, 3, 4]
    assert numbers(await store.read_all(1, limit=2)) == [1, 2]
    assert await store.read_all(5) == []
    assert await store.read_all(limit=0) == []
    created = await store.read_all(filter=EventFilter(types=("Created",)))
    assert numbers(created) == [0, 3, 4]
    assert numbers(await store.read_all(filter=EventFilter(types="Started"))) == [2]
    requests = await store.read_all(filter=EventFilter(stream_prefix="request-"))
    assert numbers(requests) == [0, 1]
    underscore = await store.read_all(filter=EventFilter(stream_prefix="request_"))
    assert numbers(underscore) == [3]
    both = EventFilter(types=("Created",), stream_prefix="request")
    assert numbers(await store.read_all(1, limit=1, filter=both)) == [3]


async def test_a_tailing_reader_never_sees_a_gap_under_concurrent_writers(
    store: EventStore,
) -> None:
    """The PostgreSQL-heavy version is ``tests/events/test_postgres_ordering.py``."""

    async def writer(index: int) -> None:
        for n in range(15):
            await store.append(f"w{index}-{n % 2}", batch(1 + n % 3, start=n), ANY)

    writers = asyncio.gather(*(writer(i) for i in range(4)))
    last = 0
    async with asyncio.timeout(DEADLINE):
        while True:
            done = writers.done()
            found = await store.read_all(last, limit=7)
            for event in found:
                assert event.position == last + 1, f"{event.position} after {last}"
                last = event.position
            if done and not found:
                break
            await asyncio.sleep(0)
    await writers
    assert last == await store.head_position() == 4 * sum(1 + n % 3 for n in range(15))


# -- subscriptions -------------------------------------------------------------------------


async def test_subscription_catches_up_then_goes_live(store: EventStore) -> None:
    await store.append("s", batch(3), NO_STREAM)
    subscription = store.subscribe(0, batch_size=2)
    assert numbers(await take(subscription, 3)) == [0, 1, 2]
    waiting = asyncio.ensure_future(take(subscription, 2))
    await store.append("t", batch(2, start=3), NO_STREAM)
    live = await waiting
    assert numbers(live) == [3, 4]
    assert [e.position for e in live] == [4, 5]
    assert subscription.live
    assert subscription.position == 5
    await subscription.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(subscription)


async def test_filtered_subscription(store: EventStore) -> None:
    await store.append("request-1", [ev("Created", 0), ev("Approved", 1)], NO_STREAM)
    await store.append("download-1", [ev("Created", 2)], NO_STREAM)
    by_type = store.subscribe(filter=EventFilter(types=("Created",)), batch_size=1)
    by_prefix = store.subscribe(filter=EventFilter(stream_prefix="request-"))
    assert numbers(await take(by_type, 2)) == [0, 2]
    assert numbers(await take(by_prefix, 2)) == [0, 1]
    await store.append("download-2", batch(50, "Progress", 3), NO_STREAM)
    await store.append("request-2", [ev("Created", 53)], NO_STREAM)
    assert numbers(await take(by_type, 1)) == [53]
    assert numbers(await take(by_prefix, 1)) == [53]
    assert by_type.position == by_prefix.position == 54
    await by_type.aclose()
    await by_prefix.aclose()


@pytest.mark.parametrize(
    "row_name", [name for name in sorted(ROWS) if name != "memory"], indirect=True
)
async def test_live_subscription_sees_another_process(subject: StoreUnderTest) -> None:
    """Stores that several processes share (every row but the in-process one)."""
    assert subject.open_peer is not None
    store = subject.store
    await store.append("s", [ev(n=0)], NO_STREAM)
    subscription = store.subscribe()
    assert numbers(await take(subscription, 1)) == [0]
    async with subject.open_peer() as peer:
        waiting = asyncio.ensure_future(take(subscription, 3))
        await peer.append("s", [ev(n=1)], 1)
        await peer.append("t", batch(2, start=2), NO_STREAM)
        assert numbers(await waiting) == [1, 2, 3]
        peer_view = peer.subscribe(1)
        await store.append("s", [ev(n=4)], 2)
        assert numbers(await take(peer_view, 4)) == [1, 2, 3, 4]
        await peer_view.aclose()
    await subscription.aclose()


async def test_resume_from_a_checkpoint_loses_and_repeats_nothing(store: EventStore) -> None:
    for i in range(10):
        await store.append(f"s-{i % 3}", [ev(n=i)], ANY)
    seen: list[int] = []
    subscription = store.subscribe(await store.load_checkpoint("projector"), batch_size=3)
    for event in await take(subscription, 4):
        seen.append(int(event.data["n"]))
        await store.save_checkpoint("projector", event.position)
    await subscription.aclose()  # the subscriber stops (crash, deploy) after handling 4
    assert await store.load_checkpoint("projector") == 4
    assert await store.load_checkpoint("someone-else") == 0
    for i in range(10, 13):
        await store.append(f"s-{i % 3}", [ev(n=i)], ANY)
    resumed = store.subscribe(await store.load_checkpoint("projector"), batch_size=3)
    for event in await take(resumed, 9):
        seen.append(int(event.data["n"]))
        await store.save_checkpoint("projector", event.position)
    assert seen == list(range(13))
    assert await store.load_checkpoint("projector") == 13
    await resumed.aclose()


async def test_subscription_survives_backend_errors(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.append("s", batch(4), NO_STREAM)
    real_read_all = store.read_all
    failures = {"left": 0}

    async def flaky_read_all(*args: Any, **kwargs: Any) -> list[RecordedEvent]:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise BackendError("connection reset (injected)")
        return await real_read_all(*args, **kwargs)

    monkeypatch.setattr(store, "read_all", flaky_read_all)
    subscription = store.subscribe(batch_size=2)
    assert numbers(await take(subscription, 2)) == [0, 1]
    failures["left"] = 3
    assert numbers(await take(subscription, 2)) == [2, 3]
    assert failures["left"] == 0
    failures["left"] = 2
    waiting = asyncio.ensure_future(take(subscription, 2))
    await store.append("s", batch(2, start=4), 4)
    assert numbers(await waiting) == [4, 5]
    await subscription.aclose()


async def test_handler_error_then_resubscribe(store: EventStore) -> None:
    """A subscriber whose handler fails resubscribes from its checkpoint: the failed event
    comes again, first, and nothing before it repeats."""
    await store.append("s", batch(6), NO_STREAM)
    handled: list[int] = []

    async def run(fail_on: int | None) -> None:
        subscription = store.subscribe(await store.load_checkpoint("p"))
        try:
            async with asyncio.timeout(DEADLINE):
                async for event in subscription:
                    if event.data["n"] == fail_on:
                        raise RuntimeError("handler failed")
                    handled.append(int(event.data["n"]))
                    await store.save_checkpoint("p", event.position)
                    if event.position == 6:
                        return
        finally:
            await subscription.aclose()

    with pytest.raises(RuntimeError):
        await run(fail_on=3)
    await run(fail_on=None)
    assert handled == [0, 1, 2, 3, 4, 5]


async def test_closing_the_store_ends_its_subscriptions(row_name: str, tmp_path: Path) -> None:
    async with _open(row_name, tmp_path) as subject:
        subscription = subject.store.subscribe()
        waiting = asyncio.ensure_future(anext(subscription))
        await asyncio.sleep(0)
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(DEADLINE):
            await waiting


# -- snapshots and upcasters ---------------------------------------------------------------


async def test_snapshots(store: EventStore) -> None:
    assert await store.load_snapshot("s") is None
    await store.save_snapshot("s", 10, 1, {"count": 10, "items": ["a"]})
    snapshot = await store.load_snapshot("s")
    assert snapshot is not None
    assert (snapshot.version, snapshot.schema_version, snapshot.state) == (
        10,
        1,
        {"count": 10, "items": ["a"]},
    )
    snapshot.state["count"] = -1
    await store.save_snapshot("s", 5, 1, {"count": 5})  # older: ignored
    again = await store.load_snapshot("s")
    assert again is not None
    assert again.state["count"] == 10
    await store.save_snapshot("s", 20, 2, {"total": 20})
    newest = await store.load_snapshot("s", schema_version=2)
    assert newest is not None
    assert (newest.version, newest.state) == (20, {"total": 20})
    assert await store.load_snapshot("s", schema_version=1) is None
    with pytest.raises(ValidationError):
        await store.save_snapshot("s", 30, 2, {"bad": object()})
    assert [snapshot_due(10, b, a) for b, a in ((0, 9), (9, 10), (8, 12), (10, 19))] == [
        False,
        True,
        True,
        False,
    ]


async def test_upcasters_apply_on_every_read(row_name: str, tmp_path: Path) -> None:
    upcasters = Upcasters()

    @upcasters.register("RequestCreated", 1)
    def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "priority": "normal"}

    @upcasters.register("RequestCreated", 2)
    def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        return {"media": {"title": data.pop("title")}, **data}

    upcasters.register("Requested", 1, lambda data: Upcast("RequestCreated", {**data}))
    with pytest.raises(ConfigurationError):
        upcasters.register("RequestCreated", 1, _v1_to_v2)

    async with _open(row_name, tmp_path, upcasters) as subject:
        store = subject.store
        old = NewEvent("RequestCreated", {"title": "Dune"})
        current = NewEvent(
            "RequestCreated", {"media": {"title": "Arrival"}, "priority": "high"}, schema_version=3
        )
        renamed = NewEvent("Requested", {"title": "Alien", "priority": "low"}, schema_version=1)
        await store.append("r", [old, current, renamed], NO_STREAM)
        expected = [
            {"media": {"title": "Dune"}, "priority": "normal"},
            {"media": {"title": "Arrival"}, "priority": "high"},
            {"media": {"title": "Alien"}, "priority": "low"},
        ]
        for read in (
            await store.read_stream("r"),
            await store.read_all(),
            await take(store.subscribe(), 3),
        ):
            assert [e.data for e in read] == expected
            assert {(e.type, e.schema_version) for e in read} == {("RequestCreated", 3)}
        assert (await store.append("r", [old, current, renamed], NO_STREAM)).next_version == 3


# -- construction --------------------------------------------------------------------------


async def test_created_from_url_and_unknown_schemes_refused(tmp_path: Path) -> None:
    async with create_event_store("memory://") as memory:
        await memory.append("s", [ev()], NO_STREAM)
        assert await memory.head_position() == 1
    with pytest.raises(ConfigurationError, match="events"):
        create_event_store("esdb://localhost:2113")
    from medianest.database import Database, upgrade

    url = f"sqlite:///{tmp_path / 'owned.db'}"
    async with Database(url.replace("sqlite:", "sqlite+aiosqlite:")) as db:
        await upgrade(db)
    async with create_event_store(url) as owned:
        await owned.append("s", [ev()], NO_STREAM)
        await owned.ping()
    unstarted = create_event_store(url)
    with pytest.raises(BackendError, match="not started"):
        unstarted.subscribe()
