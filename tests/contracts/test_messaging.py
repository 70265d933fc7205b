"""Conformance suite of the message broker, on every backend of ``tests/support/brokers``.

Every test runs on every row; a new backend is a new row there, not new tests here. Waits
are on conditions with a deadline, never fixed sleeps; the only time checks are lower
bounds (a retry must not come before its backoff), which a slow machine cannot break.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from medianest.errors import NotFoundError, ValidationError
from medianest.messaging import Broker, Message, RetryPolicy
from tests.support.brokers import (
    DEADLINE,
    DRAIN_TIMEOUT,
    ROWS,
    BrokerRow,
    Inbox,
    dead_letters_of,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FAST = RetryPolicy(max_attempts=3, initial=0.05, multiplier=2.0, maximum=1.0)
ONCE = RetryPolicy(max_attempts=1, initial=0.05)


@dataclass
class Subject:
    broker: Broker
    row: BrokerRow
    name: str


@pytest.fixture(params=sorted(ROWS))
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    row = ROWS[request.param]
    name = f"t{uuid.uuid4().hex[:10]}"
    async with row.make(tmp_path, name) as broker:
        yield Subject(broker, row, name)


@pytest.fixture
def broker(subject: Subject) -> Broker:
    return subject.broker


# -- envelope and routing ------------------------------------------------------------------


async def test_round_trip_keeps_the_whole_envelope(broker: Broker) -> None:
    payload = {
        "title": "Amélie 🎬",
        "year": 2001,
        "rating": 8.3,
        "whole": 1.0,
        "watched": False,
        "missing": None,
        "tags": ["fr", 1, {"deep": [True]}],
        "empty": {},
    }
    sent = Message(
        "media.added",
        payload,
        correlation_id="corr-1",
        causation_id="cause-1",
        headers={"traceparent": TRACEPARENT, "x-source": "plex"},
        key="movie-42",
    )
    inbox = Inbox()
    subscription = await broker.subscribe("media.added", "catalog", inbox)
    await broker.publish(sent)
    [got] = await inbox.wait_count(1)
    assert got.id == sent.id
    assert got.topic == "media.added"
    assert got.payload == payload
    assert type(got.payload["whole"]) is float
    assert type(got.payload["year"]) is int
    assert got.timestamp == sent.timestamp
    assert (got.correlation_id, got.causation_id) == ("corr-1", "cause-1")
    assert dict(got.headers) == {"traceparent": TRACEPARENT, "x-source": "plex"}
    assert got.key == "movie-42"
    assert got.attempt == 1
    assert Message.from_wire(got.to_wire()) == got
    await subscription.close()


async def test_a_message_without_trace_context_gets_one(broker: Broker) -> None:
    inbox = Inbox()
    subscription = await broker.subscribe("media.removed", "catalog", inbox)
    await broker.publish(Message("media.removed", {"id": 1}))
    [got] = await inbox.wait_count(1)
    version, trace_id, span_id, _flags = got.headers["traceparent"].split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16)
    await subscription.close()


async def test_patterns_match_word_by_word(broker: Broker) -> None:
    expected = {
        "a.*": {"a.b"},
        "a.#": {"a", "a.b", "a.b.c"},
        "#": {"x.y.z", "a", "a.b", "a.b.c", "c.b"},
        "*.b": {"a.b", "c.b"},
        "a.b": {"a.b"},
    }
    inboxes = {pattern: Inbox() for pattern in expected}
    subscriptions = [
        await broker.subscribe(pattern, f"g{i}", inboxes[pattern])
        for i, pattern in enumerate(expected)
    ]
    for topic in ("x.y.z", "a", "a.b", "a.b.c", "c.b"):
        await broker.publish(Message(topic, {"topic": topic}))
    for pattern, topics in expected.items():
        await inboxes[pattern].wait_count(len(topics))
    for pattern, topics in expected.items():
        assert inboxes[pattern].topics == topics, pattern
    for subscription in subscriptions:
        await subscription.close()


async def test_every_group_gets_every_message(broker: Broker) -> None:
    first, second = Inbox(), Inbox()
    one = await broker.subscribe("requests.*", "notifier", first)
    two = await broker.subscribe("requests.#", "auditor", second)
    sent = [Message("requests.approved", {"n": n}) for n in range(5)]
    for message in sent:
        await broker.publish(message)
    for inbox in (first, second):
        got = await inbox.wait_count(5)
        assert sorted(m.id for m in got) == sorted(m.id for m in sent)
    await one.close()
    await two.close()


async def test_a_group_splits_messages_between_its_consumers(broker: Broker) -> None:
    taken: dict[str, list[str]] = {"one": [], "two": []}
    both_busy, done = asyncio.Event(), Inbox()

    def consumer(name: str) -> Callable[[Message], Awaitable[None]]:
        async def handle(message: Message) -> None:
            taken[name].append(message.id)
            if taken["one"] and taken["two"]:
                both_busy.set()
            await both_busy.wait()  # each holds its first message until the other has one
            await done(message)

        return handle

    one = await broker.subscribe("jobs.*", "workers", consumer("one"))
    two = await broker.subscribe("jobs.*", "workers", consumer("two"))
    sent = [Message("jobs.encode", {"n": n}) for n in range(12)]
    for message in sent:
        await broker.publish(message)
    await done.wait_count(12)
    ids = taken["one"] + taken["two"]
    assert sorted(ids) == sorted(m.id for m in sent)  # all of them, none twice
    assert taken["one"]
    assert taken["two"]
    await one.close()
    await two.close()


async def test_a_group_keeps_messages_while_no_consumer_runs(broker: Broker) -> None:
    inbox = Inbox()
    await (await broker.subscribe("late.*", "keeper", inbox)).close()
    sent = Message("late.arrival", {"n": 1})
    await broker.publish(sent)
    subscription = await broker.subscribe("late.*", "keeper", inbox)
    [got] = await inbox.wait_count(1)
    assert got.id == sent.id
    await subscription.close()


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["Media.Added", "media..added", "", ".media", "media.*", "a b"])
async def test_an_invalid_topic_is_refused(broker: Broker, topic: str) -> None:
    with pytest.raises(ValidationError):
        await broker.publish(Message(topic, {}))


@pytest.mark.parametrize("pattern", ["a.#.b", "#.a", "", "a..b", "A.b", "a.b#"])
async def test_an_invalid_pattern_is_refused(broker: Broker, pattern: str) -> None:
    with pytest.raises(ValidationError):
        await broker.subscribe(pattern, "group", Inbox())


@pytest.mark.parametrize("group", ["Workers", "", "two words", "-dash", "x" * 101])
async def test_an_invalid_group_is_refused(broker: Broker, group: str) -> None:
    with pytest.raises(ValidationError):
        await broker.subscribe("a.b", group, Inbox())


@pytest.mark.parametrize("payload", [{1, 2}, b"bytes", {"when": object()}])
async def test_a_payload_json_cannot_carry_is_refused(broker: Broker, payload: object) -> None:
    with pytest.raises(ValidationError):
        await broker.publish(Message("a.b", payload))


# -- retries and dead letters ----------------------------------------------------------------


async def test_a_failing_handler_is_retried_with_backoff_then_dead_lettered(broker: Broker) -> None:
    loop = asyncio.get_running_loop()
    calls: list[tuple[int, float]] = []

    async def failing(message: Message) -> None:
        calls.append((message.attempt, loop.time()))
        raise RuntimeError(f"boom on attempt {message.attempt}")

    subscription = await broker.subscribe("orders.*", "billing", failing, retry=FAST)
    sent = Message(
        "orders.created",
        {"order": 7},
        correlation_id="corr-7",
        headers={"traceparent": TRACEPARENT, "x-tenant": "home"},
    )
    await broker.publish(sent)
    [letter] = await dead_letters_of(broker, 1, topic="orders.created")
    assert [attempt for attempt, _ in calls] == [1, 2, 3]
    for (_, before), (attempt, after) in itertools.pairwise(calls):
        assert after - before >= FAST.delay(attempt - 1) * 0.8  # a delayed redelivery
    assert letter.group == "billing"
    assert letter.attempts == 3
    assert "RuntimeError" in letter.error
    assert "boom on attempt 3" in letter.error
    assert letter.message.id == sent.id
    assert letter.message.payload == {"order": 7}
    assert letter.message.correlation_id == "corr-7"
    assert dict(letter.message.headers) == {"traceparent": TRACEPARENT, "x-tenant": "home"}
    await subscription.close()


async def test_dead_letters_are_listed_shown_replayed_and_purged(broker: Broker) -> None:
    failing = True
    inbox = Inbox()

    async def handler(message: Message) -> None:
        if failing:
            raise ValueError(f"cannot handle {message.topic}")
        await inbox(message)

    subscriptions = [
        await broker.subscribe("alpha.*", "first", handler, retry=ONCE),
        await broker.subscribe("beta.*", "second", handler, retry=ONCE),
    ]
    alpha = Message("alpha.one", {"n": 1}, headers={"x-kind": "alpha"})
    beta = Message("beta.one", {"n": 2})
    await broker.publish(alpha)
    await dead_letters_of(broker, 1)
    await broker.publish(beta)
    letters = await dead_letters_of(broker, 2)
    assert [letter.message.id for letter in letters] == [alpha.id, beta.id]  # oldest first
    assert [letter.id for letter in await broker.dead_letters(limit=1)] == [letters[0].id]
    [only_alpha] = await broker.dead_letters(topic="alpha.one")
    [only_beta] = await broker.dead_letters(group="second")
    assert (only_alpha.group, only_beta.message.topic) == ("first", "beta.one")
    assert await broker.dead_letters(topic="alpha.one", group="second") == []

    shown = await broker.dead_letter(only_alpha.id)
    assert (shown.id, shown.group, shown.attempts) == (only_alpha.id, "first", 1)
    assert shown.error == "ValueError: cannot handle alpha.one"
    assert dict(shown.message.headers)["x-kind"] == "alpha"

    failing = False
    replayed = await broker.replay(only_alpha.id)
    assert (replayed.id, replayed.attempt) == (alpha.id, 1)
    [again] = await inbox.wait_count(1)
    assert (again.id, again.attempt, again.topic) == (alpha.id, 1, "alpha.one")
    assert [letter.id for letter in await broker.dead_letters()] == [only_beta.id]
    with pytest.raises(NotFoundError):
        await broker.dead_letter(only_alpha.id)

    assert await broker.purge(group="first") == 0
    assert await broker.purge(topic="beta.one") == 1
    assert await broker.dead_letters() == []
    assert await broker.purge() == 0
    with pytest.raises(NotFoundError):
        await broker.replay(only_beta.id)
    for subscription in subscriptions:
        await subscription.close()


async def test_unknown_dead_letters_are_not_found(broker: Broker) -> None:
    with pytest.raises(NotFoundError):
        await broker.dead_letter("0190d5f0-0000-7000-8000-000000000000")
    with pytest.raises(NotFoundError):
        await broker.replay("0190d5f0-0000-7000-8000-000000000000")


# -- shutdown and crashes --------------------------------------------------------------------


async def test_close_lets_a_running_handler_finish_and_acks_it(broker: Broker) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def slow(message: Message) -> None:
        started.set()
        await release.wait()
        finished.append(message.id)

    subscription = await broker.subscribe("slow.*", "drainers", slow)
    first = Message("slow.job", {"n": 1}, key="k")
    await broker.publish(first)
    async with asyncio.timeout(DEADLINE):
        await started.wait()
    closing = asyncio.create_task(subscription.close())
    done, _ = await asyncio.wait({closing}, timeout=0.1)
    assert not done, "close returned while a handler was still running"
    release.set()
    async with asyncio.timeout(DEADLINE):
        await closing
    assert finished == [first.id]

    inbox = Inbox()
    second = Message("slow.job", {"n": 2}, key="k")
    await broker.publish(second)
    after = await broker.subscribe("slow.*", "drainers", inbox)
    [got] = await inbox.wait_count(1)
    assert got.id == second.id  # the first one was acked: it does not come back
    await after.close()


async def test_close_never_acks_a_handler_that_did_not_finish(broker: Broker) -> None:
    started = asyncio.Event()

    async def stuck(message: Message) -> None:
        started.set()
        await asyncio.Event().wait()

    subscription = await broker.subscribe("stuck.*", "drainers", stuck)
    sent = Message("stuck.job", {"n": 1})
    await broker.publish(sent)
    async with asyncio.timeout(DEADLINE):
        await started.wait()
    async with asyncio.timeout(DEADLINE + DRAIN_TIMEOUT):
        await subscription.close()  # gives up after the drain timeout

    inbox = Inbox()
    successor = await broker.subscribe("stuck.*", "drainers", inbox)
    [got] = await inbox.wait_count(1)
    assert (got.id, got.attempt) == (sent.id, 2)
    await successor.close()


async def test_a_handler_cancelled_mid_way_gets_its_message_back(broker: Broker) -> None:
    crashed = asyncio.Event()
    inbox = Inbox()

    async def crashing(message: Message) -> None:
        if not crashed.is_set():
            crashed.set()
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # the consumer dies mid-handler
            await asyncio.sleep(0)
        await inbox(message)

    sent = Message("fragile.job", {"n": 1})
    first = await broker.subscribe("fragile.*", "survivors", crashing)
    await broker.publish(sent)
    async with asyncio.timeout(DEADLINE):
        await crashed.wait()
    second = await broker.subscribe("fragile.*", "survivors", crashing)
    [got] = await inbox.wait_count(1)
    assert (got.id, got.attempt) == (sent.id, 2)
    await first.close()
    await second.close()


async def test_a_message_that_keeps_killing_its_consumer_is_dead_lettered(broker: Broker) -> None:
    attempts: list[int] = []

    async def poison(message: Message) -> None:
        attempts.append(message.attempt)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    subscription = await broker.subscribe("poison.*", "victims", poison, retry=FAST)
    sent = Message("poison.pill", {"n": 1})
    await broker.publish(sent)
    [letter] = await dead_letters_of(broker, 1, group="victims")
    assert attempts == [1, 2, 3]
    assert letter.message.id == sent.id
    assert letter.attempts == 3
    assert letter.error  # says why (the memory and SQLite rows: "... without an ack")
    await subscription.close()


# -- ordering --------------------------------------------------------------------------------


async def test_each_backend_says_whether_it_orders_keys(subject: Subject) -> None:
    assert subject.broker.ordered_keys == subject.row.ordered_keys


@pytest.mark.parametrize(
    "subject", sorted(n for n, row in ROWS.items() if row.ordered_keys), indirect=True
)
async def test_messages_of_a_key_are_handled_in_order(subject: Subject) -> None:
    broker = subject.broker
    seen: dict[str, list[int]] = defaultdict(list)
    done = Inbox()

    async def handler(message: Message) -> None:
        n = message.payload["n"]
        if n == 2 and message.attempt == 1:
            raise RuntimeError("retried: the later messages of its key must wait")
        await asyncio.sleep(0)
        seen[str(message.key)].append(n)
        await done(message)

    subscriptions = [
        await broker.subscribe("seq.*", "ordered", handler, retry=FAST, concurrency=3)
        for _ in range(2)
    ]
    for n in range(8):
        for key in ("a", "b", "c"):
            await broker.publish(Message("seq.item", {"n": n}, key=key))
    await done.wait_count(24)
    assert dict(seen) == {key: list(range(8)) for key in ("a", "b", "c")}
    for subscription in subscriptions:
        await subscription.close()
