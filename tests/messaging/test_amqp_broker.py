"""What only the RabbitMQ broker does: its topology (topic exchange, a durable queue per
group with its dead-letter exchange, delay queues per backoff step), dead letters browsed
without being consumed, messages RabbitMQ dead-lettered itself, redeliveries counted as
attempts, lag. The common contract is ``tests/contracts/test_messaging.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from medianest.errors import BackendUnavailable, ValidationError
from medianest.messaging import Message, RetryPolicy, create_broker
from medianest.messaging.backends.amqp import AmqpBroker
from tests.support.brokers import Inbox, dead_letters_of, eventually
from tests.support.server_brokers import amqp_broker, server_url


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[AmqpBroker]:
    async with amqp_broker(tmp_path, f"t{tmp_path.name[-10:]}") as started:
        assert isinstance(started, AmqpBroker)
        yield started


@pytest.fixture
async def channel() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(server_url("rabbitmq"))
    yield await connection.channel()
    await connection.close()


def test_options_come_from_keywords_or_the_url_and_passwords_stay_hidden() -> None:
    broker = AmqpBroker("amqp://guest:s3cret@127.0.0.1:5672/?prefix=hub&heartbeat=30", timeout=2)
    assert (broker.prefix, broker.timeout) == ("hub", 2.0)
    assert "heartbeat=30" in broker._driver_url  # other parameters are aio-pika's
    assert "s3cret" not in repr(broker)


async def test_an_unreachable_server_is_backend_unavailable() -> None:
    broker = create_broker("amqp://guest:guest@127.0.0.1:1/", timeout=1.0)
    with pytest.raises(BackendUnavailable, match="rabbitmq unreachable while connecting"):
        await broker.start()
    await broker.close()


async def test_each_group_has_a_durable_queue_bound_with_its_pattern(
    broker: AmqpBroker, channel: aio_pika.abc.AbstractChannel
) -> None:
    inbox = Inbox()
    subscription = await broker.subscribe("media.#", "catalog", inbox)
    queue = await channel.declare_queue(
        broker.group_queue("catalog"), durable=True, arguments=broker.group_arguments()
    )  # the same arguments, or RabbitMQ would refuse the declaration
    assert queue.durable
    await broker.publish(Message("media.added.movie", {"n": 1}))
    await broker.publish(Message("other.topic", {"n": 2}))  # no group: dropped by RabbitMQ
    [got] = await inbox.wait_count(1)
    assert got.topic == "media.added.movie"
    await subscription.close()


async def test_a_failed_message_waits_in_the_groups_delay_queue_of_its_backoff(
    broker: AmqpBroker, channel: aio_pika.abc.AbstractChannel
) -> None:
    calls: list[int] = []
    inbox = Inbox()

    async def handler(message: Message) -> None:
        calls.append(message.attempt)
        if message.attempt == 1:
            raise RuntimeError("later")
        await inbox(message)

    slow = RetryPolicy(max_attempts=3, initial=30.0)
    subscription = await broker.subscribe("jobs.*", "workers", handler, retry=slow)
    sent = Message("jobs.encode", {"n": 1})
    await broker.publish(sent)
    delay_queue = f"{broker.prefix}.retry.workers.30000"

    async def waiting() -> bool:
        if delay_queue not in broker.declared:
            return False
        queue = await channel.declare_queue(delay_queue, passive=True)
        return queue.declaration_result.message_count == 1

    await eventually(waiting)
    assert (await broker.refresh_lag())["workers"] == 1
    raw = await (await channel.declare_queue(delay_queue, passive=True)).get(no_ack=False)
    assert raw is not None
    # hand it to the group's queue now, as its TTL would in 30 s
    await channel.default_exchange.publish(
        aio_pika.Message(raw.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
        broker.group_queue("workers"),
    )
    await raw.ack()
    [got] = await inbox.wait_count(1)
    assert (got.id, got.attempt) == (sent.id, 2)
    assert calls == [1, 2]
    await subscription.close()


async def test_browsing_dead_letters_consumes_none_and_keeps_their_order(
    broker: AmqpBroker,
) -> None:
    async def failing(message: Message) -> None:
        raise ValueError("no")

    subscription = await broker.subscribe("bad.*", "victims", failing, retry=RetryPolicy(1))
    sent = [Message("bad.item", {"n": n}) for n in range(3)]
    for message in sent:
        await broker.publish(message)
    first = await dead_letters_of(broker, 3)
    second = await broker.dead_letters()
    assert [d.message.id for d in first] == [m.id for m in sent]
    assert second == first
    assert await broker.dead_letter(first[1].id) == first[1]
    assert await broker.purge() == 3
    await subscription.close()


async def test_a_message_rabbitmq_dead_lettered_itself_is_listed(
    broker: AmqpBroker, channel: aio_pika.abc.AbstractChannel
) -> None:
    release = asyncio.Event()

    async def holding(message: Message) -> None:
        await release.wait()

    subscription = await broker.subscribe("held.*", "holders", holding)
    await subscription.close()  # the queue stays; nobody consumes it now
    sent = Message("held.item", {"n": 1})
    await broker.publish(sent)
    queue = await channel.declare_queue(
        broker.group_queue("holders"), durable=True, arguments=broker.group_arguments()
    )
    raw = await queue.get(no_ack=False)
    assert raw is not None
    await raw.reject(requeue=False)  # e.g. an operator's tool: to the group's DLX
    [letter] = await dead_letters_of(broker, 1)
    assert (letter.message.id, letter.group) == (sent.id, "holders")
    assert "rejected" in letter.error
    release.set()


async def test_a_redelivered_message_counts_as_an_attempt(
    broker: AmqpBroker, channel: aio_pika.abc.AbstractChannel
) -> None:
    await (await broker.subscribe("crash.*", "crew", Inbox())).close()
    sent = Message("crash.item", {"n": 1})
    await broker.publish(sent)
    queue = await channel.declare_queue(
        broker.group_queue("crew"), durable=True, arguments=broker.group_arguments()
    )
    raw = await queue.get(no_ack=False)
    assert raw is not None
    await raw.nack(requeue=True)  # a consumer let go without an ack: redelivered flag
    inbox = Inbox()
    subscription = await broker.subscribe("crash.*", "crew", inbox)
    [got] = await inbox.wait_count(1)
    assert (got.id, got.attempt) == (sent.id, 2)
    await subscription.close()


async def test_publishing_a_payload_json_cannot_carry_never_reaches_rabbitmq(
    broker: AmqpBroker,
) -> None:
    with pytest.raises(ValidationError):
        await broker.publish(Message("a.b", {"x": {1, 2}}))


async def test_a_body_that_is_not_an_envelope_is_dead_lettered(
    broker: AmqpBroker, channel: aio_pika.abc.AbstractChannel
) -> None:
    subscription = await broker.subscribe("raw.*", "strict", Inbox())
    exchange = await channel.get_exchange(broker.prefix)
    await exchange.publish(aio_pika.Message(b"not json"), "raw.item")
    [letter] = await dead_letters_of(broker, 1)
    assert (letter.group, letter.message.topic, letter.message.payload) == (
        "strict",
        "raw.item",
        "not json",
    )
    assert "undecodable envelope" in letter.error
    await subscription.close()
