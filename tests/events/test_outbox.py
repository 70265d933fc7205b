"""The outbox relay: global order, ids kept, retries, crash between publish and checkpoint,
and one publishing relay per database (the lease)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from medianest.errors import BackendError, BackendUnavailable
from medianest.events import ANY, EventMetadata, EventStore, NewEvent, RecordedEvent
from medianest.events.aggregates import Repository
from medianest.events.leases import leases_for
from medianest.events.outbox import OutboxRelay, default_topic, message_for
from medianest.events.requests import MediaRequest
from medianest.messaging import Broker, DeadLetter, Handler, Message, RetryPolicy, Subscription
from medianest.messaging.backends.memory import MemoryBroker
from medianest.resilience import Retry
from tests.support.brokers import Inbox
from tests.support.event_stores import ROWS, StoreUnderTest
from tests.support.wallclock import Clock

FAST_RETRY = 10


def retry(attempts: int = FAST_RETRY) -> Retry:
    return Retry(
        attempts, base_delay=0.0, max_delay=0.0, retry_on=lambda e: isinstance(e, BackendError)
    )


class Crash(BaseException):
    """The process dies here (nothing after it runs, no ``except Exception`` catches it)."""


class RecordingBroker(Broker):
    """Wraps the test's broker: records what was published and fails when ``failing`` says."""

    def __init__(self, inner: Broker, failing: Callable[[Message], bool] | None = None) -> None:
        self.inner = inner
        self.failing = failing
        self.published: list[Message] = []
        self.refused = 0

    async def publish(self, message: Message) -> None:
        if self.failing is not None and self.failing(message):
            self.refused += 1
            raise BackendUnavailable("broker down")
        await self.inner.publish(message)
        self.published.append(message)

    async def subscribe(
        self, pattern: str, group: str, handler: Handler, **kw: Any
    ) -> Subscription:
        return await self.inner.subscribe(pattern, group, handler, **kw)

    async def dead_letters(
        self, topic: str | None = None, group: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        return await self.inner.dead_letters(topic, group, limit)

    async def replay(self, dead_letter_id: str) -> Message:
        return await self.inner.replay(dead_letter_id)

    async def purge(self, topic: str | None = None, group: str | None = None) -> int:
        return await self.inner.purge(topic, group)


@pytest.fixture(params=sorted(ROWS))
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    async with ROWS[request.param].make(tmp_path, None) as made:
        yield made


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    async with MemoryBroker(
        drain_timeout=1.0, retry=RetryPolicy(max_attempts=3, initial=0.01)
    ) as made:
        yield made


@pytest.fixture
async def inbox(broker: MemoryBroker) -> AsyncIterator[Inbox]:
    """Every message published to the broker, as one consumer group receives them."""
    received = Inbox()
    subscription = await broker.subscribe("#", "audit", received)
    yield received
    await subscription.close()


async def append_things(store: EventStore, count: int, start: int = 0) -> None:
    """``count`` events over three streams, interleaved."""
    for n in range(start, start + count):
        await store.append(f"thing-{n % 3}", [NewEvent("ThingHappened", {"n": n})], ANY)


async def ids_in_log(store: EventStore) -> list[str]:
    return [str(event.id) for event in await store.read_all()]


async def test_events_are_published_in_global_order_with_their_ids(
    subject: StoreUnderTest, broker: MemoryBroker, inbox: Inbox
) -> None:
    store = subject.store
    meta = EventMetadata(
        correlation_id="corr-1",
        causation_id="cause-1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        user="alice",
    )
    item = MediaRequest("42")
    item.request(media_type="movie", tmdb_id=603, title="The Matrix", requested_by="alice")
    item.submit("ovs-1")
    await Repository(store, MediaRequest).save(item, metadata=meta)
    await append_things(store, 10)
    recording = RecordingBroker(broker)
    relay = OutboxRelay(store, recording, batch_size=4, retry=retry())

    assert await relay.publish_pending() == 12
    expected = await ids_in_log(store)
    assert [m.id for m in recording.published] == expected
    first = recording.published[0]
    assert first.topic == "requests.requested"
    assert recording.published[1].topic == "requests.submitted"
    assert recording.published[2].topic == "thing.thing_happened"
    assert (first.correlation_id, first.causation_id, first.key) == (
        "corr-1",
        "cause-1",
        "request-42",
    )
    assert first.headers["traceparent"] == meta.traceparent
    assert first.headers["event-type"] == "MediaRequested"
    assert first.payload["data"]["title"] == "The Matrix"
    assert (
        first.payload["version"],
        first.payload["position"],
        first.payload["stream_version"],
    ) == (1, 1, 1)
    assert await store.load_checkpoint(relay.name) == 12

    assert await relay.publish_pending() == 0, "nothing new: nothing published again"
    got = await inbox.wait_count(12)
    assert sorted(m.id for m in got) == sorted(expected)


async def test_a_failing_broker_is_retried_and_nothing_is_lost(
    subject: StoreUnderTest, broker: MemoryBroker, inbox: Inbox
) -> None:
    store = subject.store
    await append_things(store, 9)
    outage = iter(range(5))
    recording = RecordingBroker(broker, failing=lambda m: next(outage, None) is not None)
    relay = OutboxRelay(store, recording, batch_size=4, retry=retry())

    assert await relay.publish_pending() == 9
    assert recording.refused == 5
    assert [m.id for m in recording.published] == await ids_in_log(store)
    got = await inbox.wait_count(9)
    assert Counter(m.id for m in got) == Counter(await ids_in_log(store))


async def test_an_outage_longer_than_the_retries_resumes_from_the_checkpoint(
    subject: StoreUnderTest, broker: MemoryBroker, inbox: Inbox
) -> None:
    store = subject.store
    await append_things(store, 8)
    down = True
    recording = RecordingBroker(broker, failing=lambda m: down and len(recording.published) >= 5)
    relay = OutboxRelay(store, recording, batch_size=3, retry=retry(3))

    with pytest.raises(BackendUnavailable):
        await relay.publish_pending()
    assert recording.refused == 3
    assert await store.load_checkpoint(relay.name) == 5, "what the broker confirmed"

    down = False
    assert await relay.publish_pending() == 3
    expected = await ids_in_log(store)
    assert [m.id for m in recording.published] == expected, "in order, none twice, none lost"
    got = await inbox.wait_count(8)
    assert Counter(m.id for m in got) == Counter(expected)


async def test_a_crash_after_publishing_before_the_checkpoint_publishes_again_later(
    subject: StoreUnderTest, broker: MemoryBroker, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = subject.store
    await append_things(store, 7)
    clock = Clock()
    leases = leases_for(store, clock=clock)
    crashed = RecordingBroker(broker)
    first = OutboxRelay(store, crashed, owner="first", leases=leases, lease_ttl=30, retry=retry())

    async def crash(name: str, position: int) -> None:
        raise Crash

    monkeypatch.setattr(store, "save_checkpoint", crash)
    with pytest.raises(Crash):
        await first.publish_pending()
    monkeypatch.undo()
    assert len(crashed.published) == 7
    assert await store.load_checkpoint(first.name) == 0

    await append_things(store, 2, start=7)
    recording = RecordingBroker(broker)
    second = OutboxRelay(
        store, recording, owner="second", leases=leases, lease_ttl=30, retry=retry()
    )
    assert await second.publish_pending() is None, "the crashed relay's lease has not expired"
    clock.advance(31)
    assert await second.publish_pending() == 9

    expected = await ids_in_log(store)
    assert [m.id for m in recording.published] == expected
    got = await inbox.wait_count(16)
    delivered = Counter(m.id for m in got)
    assert set(delivered) == set(expected), "every event reached the consumer"
    assert sorted(delivered.values()) == [1, 1] + [2] * 7, "duplicates, never a loss"


async def test_two_relays_on_one_database_only_the_lease_holder_publishes(
    subject: StoreUnderTest, broker: MemoryBroker, inbox: Inbox
) -> None:
    peer_store = subject.open_peer() if subject.open_peer else contextlib.nullcontext(subject.store)
    async with peer_store as other_store:
        stores = [subject.store, other_store]
        recorders = [RecordingBroker(broker), RecordingBroker(broker)]
        relays = [
            OutboxRelay(s, r, owner=f"relay-{n}", retry=retry(), idle_interval=0.05)
            for n, (s, r) in enumerate(zip(stores, recorders, strict=True))
        ]
        for relay in relays:
            await relay.start()
        await append_things(stores[0], 6)
        await append_things(stores[1], 6, start=6)
        await inbox.wait_for(lambda got: len({m.id for m in got}) >= 12)
        counts = [len(r.published) for r in recorders]
        assert sorted(counts) == [0, 12]
        leader = counts.index(12)

        await relays[leader].close()
        await append_things(stores[0], 3, start=12)
        await inbox.wait_for(lambda got: len({m.id for m in got}) >= 15)
        await relays[1 - leader].close()

    assert len(recorders[1 - leader].published) == 3, "the other took over when the lease was freed"
    delivered = Counter(m.id for m in inbox.messages)
    assert set(delivered) == set(await ids_in_log(subject.store))
    assert set(delivered.values()) == {1}


def test_topics_are_valid_broker_topics() -> None:
    from datetime import UTC, datetime
    from uuid import uuid4

    def event(stream: str, type_: str) -> RecordedEvent:
        return RecordedEvent(
            uuid4(), stream, 1, 1, type_, 1, {}, EventMetadata(), datetime.now(UTC)
        )

    assert default_topic(event("request-1", "RequestApproved")) == "requests.approved"
    assert default_topic(event("download-1", "DownloadProgressed")) == "downloads.progress"
    assert default_topic(event("saga-x", "StepCompleted")) == "saga.step_completed"
    assert default_topic(event("Weird Stream!", "odd.Type 2")) == "weird_stream.odd_type_2"
    plain = message_for(event("saga-x", "SagaStarted"), "saga.saga_started")
    assert plain.correlation_id == plain.id, "an event without correlation starts its own"
    assert "traceparent" not in plain.headers


async def test_run_waits_for_new_events_and_stops_with_the_store(
    broker: MemoryBroker, inbox: Inbox
) -> None:
    from medianest.events.backends.memory import MemoryEventStore

    store = MemoryEventStore()
    await store.start()
    relay = OutboxRelay(store, broker, retry=retry(), idle_interval=30)
    task = asyncio.create_task(relay.run())
    await append_things(store, 2)
    await inbox.wait_count(2)
    await append_things(store, 1, start=2)
    await inbox.wait_count(3)
    await store.close()
    async with asyncio.timeout(5):
        await task
