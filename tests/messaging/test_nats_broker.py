"""What only the NATS JetStream broker does: subjects and filters (``#`` exact through a
final token), its streams, a durable consumer per group, publish de-duplication by message
id, replays for one group only, a publish refused at once while disconnected, lag. The
common contract is ``tests/contracts/test_messaging.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy

from medianest.errors import BackendUnavailable, ConfigurationError, ValidationError
from medianest.messaging import Message, RetryPolicy, create_broker
from medianest.messaging.backends.nats import NatsBroker, pattern_subject
from tests.support.broker_servers import private_nats
from tests.support.brokers import (
    Inbox,
    dead_letters_of,
    eventually,
    unacked_messages_count_as_lag,
)
from tests.support.server_brokers import nats_broker, server_url


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[NatsBroker]:
    async with nats_broker(tmp_path, f"t{tmp_path.name[-10:]}") as started:
        assert isinstance(started, NatsBroker)
        yield started


@pytest.fixture
async def js() -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(server_url("nats"))
    yield client.jetstream()
    await client.close()


@pytest.mark.parametrize(
    ("pattern", "subject"),
    [
        ("a.b", "p.a.b._"),
        ("a.*", "p.a.*._"),
        ("*", "p.*._"),
        ("a.#", "p.a.>"),
        ("a.*.#", "p.a.*.>"),
        ("#", "p.>"),
    ],
)
def test_patterns_become_subject_filters(pattern: str, subject: str) -> None:
    assert pattern_subject("p", pattern) == subject


def test_options_and_prefix() -> None:
    broker = NatsBroker("nats://user:s3cret@127.0.0.1:4222?prefix=hub&visibility_timeout=9")
    assert (broker.prefix, broker.visibility_timeout, broker.stream) == ("hub", 9.0, "hub")
    assert broker.subject("media.added") == "hub.media.added._"
    assert broker.topic_of("hub.media.added._") == "media.added"
    assert "s3cret" not in repr(broker)
    with pytest.raises(ConfigurationError):
        NatsBroker("nats://127.0.0.1:4222", prefix="has.dots")


async def test_streams_and_the_groups_durable_consumer(
    broker: NatsBroker, js: JetStreamContext
) -> None:
    subscription = await broker.subscribe("media.#", "catalog.main", Inbox())
    stream = await js.stream_info(broker.stream)
    assert stream.config.subjects == [f"{broker.prefix}.>"]
    assert stream.config.retention == RetentionPolicy.LIMITS
    dlq = await js.stream_info(broker.dlq_stream)
    assert dlq.config.subjects == [f"{broker.dlq_stream}.>"]
    consumer = await js.consumer_info(broker.stream, "catalog~main")
    assert consumer.config.filter_subject == f"{broker.prefix}.media.>"
    assert consumer.config.ack_wait == broker.visibility_timeout
    with pytest.raises(ValidationError):
        await broker.subscribe("other.*", "catalog.main", Inbox())
    await subscription.close()


async def test_a_message_published_twice_is_stored_once(broker: NatsBroker) -> None:
    inbox = Inbox()
    subscription = await broker.subscribe("dup.*", "readers", inbox)
    sent = Message("dup.item", {"n": 1})
    await broker.publish(sent)
    await broker.publish(sent)  # a publisher retrying after a lost acknowledgement
    later = Message("dup.item", {"n": 2})
    await broker.publish(later)
    await inbox.wait_for(lambda got: any(m.id == later.id for m in got))
    assert [m.id for m in inbox.messages] == [sent.id, later.id]
    await subscription.close()


async def test_a_replay_goes_to_its_group_only(broker: NatsBroker, js: JetStreamContext) -> None:
    failing = True
    first, second = Inbox(), Inbox()

    async def fragile(message: Message) -> None:
        if failing:
            raise ValueError("no")
        await first(message)

    one = await broker.subscribe("shared.*", "fragile", fragile, retry=RetryPolicy(1))
    two = await broker.subscribe("shared.*", "sturdy", second)
    sent = Message("shared.item", {"n": 1})
    await broker.publish(sent)
    [letter] = await dead_letters_of(broker, 1)
    assert letter.id.isdigit()
    failing = False
    await broker.replay(letter.id)
    [again] = await first.wait_count(1)
    assert (again.id, again.attempt) == (sent.id, 1)

    async def sturdy_skipped_it() -> bool:  # acked without its handler
        info = await js.consumer_info(broker.stream, "sturdy")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(sturdy_skipped_it)
    assert [m.id for m in second.messages] == [sent.id]
    await one.close()
    await two.close()


async def test_lag_counts_undelivered_and_unacked(broker: NatsBroker) -> None:
    await unacked_messages_count_as_lag(broker)


async def test_a_publish_while_disconnected_is_refused_at_once(tmp_path: Path) -> None:
    async with (
        private_nats(tmp_path) as server,
        create_broker(server.url, prefix="down", timeout=2.0) as broker,
    ):
        await broker.publish(Message("a.b", {}))
        await server.stop()

        async def refused() -> bool:
            try:
                await broker.publish(Message("a.b", {}))
            except BackendUnavailable as exc:
                return "reconnecting" in str(exc) or "unreachable" in str(exc)
            return False

        await eventually(refused)
        await server.start()


async def test_a_body_that_is_not_an_envelope_is_dead_lettered(
    broker: NatsBroker, js: JetStreamContext
) -> None:
    subscription = await broker.subscribe("raw.*", "strict", Inbox())
    await js.publish(broker.subject("raw.item"), b"not json")
    [letter] = await dead_letters_of(broker, 1)
    assert (letter.group, letter.message.topic, letter.message.payload) == (
        "strict",
        "raw.item",
        "not json",
    )
    assert "undecodable envelope" in letter.error
    await subscription.close()
