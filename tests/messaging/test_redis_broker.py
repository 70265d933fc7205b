"""What only the Redis Streams broker does: its keys, the group's registration id, pattern
fan-in over topic streams, delayed retries through the group's sorted set, taking over the
entries of a dead consumer, acks riding on the next read, lag, and a Redis that restarts
empty. The common contract is ``tests/contracts/test_messaging.py``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from medianest.errors import BackendUnavailable, ConfigurationError, ValidationError
from medianest.messaging import Message, RetryPolicy, create_broker
from medianest.messaging.backends.redis import RedisStreamsBroker
from tests.support.broker_servers import private_redis
from tests.support.brokers import (
    Inbox,
    dead_letters_of,
    eventually,
    unacked_messages_count_as_lag,
)
from tests.support.server_brokers import redis_broker, server_url


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[RedisStreamsBroker]:
    async with redis_broker(tmp_path, f"t{tmp_path.name[-10:]}") as started:
        assert isinstance(started, RedisStreamsBroker)
        yield started


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    raw = aioredis.Redis.from_url(server_url("redis"), decode_responses=True)
    yield raw
    await raw.aclose()


def test_options_come_from_keywords_or_the_url_and_passwords_stay_hidden() -> None:
    broker = RedisStreamsBroker(
        "redis://:s3cret@127.0.0.1:6379/15?prefix=hub&visibility_timeout=7", block=0.5
    )
    assert (broker.prefix, broker.visibility_timeout, broker.block) == ("hub", 7.0, 0.5)
    assert "s3cret" not in repr(broker)
    with pytest.raises(ConfigurationError):
        RedisStreamsBroker("redis://127.0.0.1/0?visibility_timeout=soon")
    with pytest.raises(ConfigurationError):
        RedisStreamsBroker("redis://127.0.0.1/0", timeout=0)
    with pytest.raises(TypeError):
        RedisStreamsBroker("redis://127.0.0.1/0", lease=3)


async def test_a_message_is_one_entry_of_its_topic_stream(
    broker: RedisStreamsBroker, client: aioredis.Redis
) -> None:
    sent = Message("media.added", {"id": 1})
    await broker.publish(sent)
    entries: Any = await client.xrange(broker.key("t", "media.added"))
    assert [json.loads(fields["m"])["id"] for _, fields in entries] == [sent.id]
    assert await client.smembers(broker.key("topics")) == {"media.added"}


async def test_a_group_gets_nothing_published_before_it_first_subscribed(
    broker: RedisStreamsBroker, client: aioredis.Redis
) -> None:
    before = Message("news.old", {"n": 1})
    await broker.publish(before)
    [(entry_id, _)] = await client.xrange(broker.key("t", "news.old"))

    async def next_millisecond() -> bool:  # a publish in the same one would be ambiguous
        seconds, micros = await client.time()
        return seconds * 1000 + micros // 1000 > int(entry_id.split("-")[0])

    await eventually(next_millisecond)
    inbox = Inbox()
    subscription = await broker.subscribe("news.*", "readers", inbox)
    after = Message("news.new", {"n": 2})  # a topic the subscription finds by rescanning
    await broker.publish(after)
    await broker.publish(again := Message("news.old", {"n": 3}))
    got = await inbox.wait_count(2)
    assert {m.id for m in got} == {after.id, again.id}
    await subscription.close()


async def test_an_entry_in_the_millisecond_of_the_registration_is_delivered(
    broker: RedisStreamsBroker, client: aioredis.Redis
) -> None:
    since = await broker.register_group("edge", "edge.*")
    millis = int(since.split("-")[0]) + 1  # the registration's own millisecond
    sent = Message("edge.case", {"n": 1})
    text = json.dumps(sent.to_wire())
    await client.xadd(broker.key("t", "edge.case"), {"m": text}, id=f"{millis}-0")
    await client.sadd(broker.key("topics"), "edge.case")
    inbox = Inbox()
    subscription = await broker.subscribe("edge.*", "edge", inbox)
    [got] = await inbox.wait_count(1)
    assert got.id == sent.id
    await subscription.close()


async def test_a_group_has_one_pattern(broker: RedisStreamsBroker) -> None:
    first = await broker.subscribe("a.*", "solo", Inbox())
    with pytest.raises(ValidationError):
        await broker.subscribe("b.*", "solo", Inbox())
    await first.close()


async def test_a_retry_waits_in_the_groups_sorted_set_with_the_next_attempt(
    broker: RedisStreamsBroker, client: aioredis.Redis
) -> None:
    inbox = Inbox()

    async def handler(message: Message) -> None:
        if message.attempt == 1:
            raise RuntimeError("not yet")
        await inbox(message)

    slow = RetryPolicy(max_attempts=3, initial=30.0)
    subscription = await broker.subscribe("jobs.*", "workers", handler, retry=slow)
    sent = Message("jobs.encode", {"n": 1})
    await broker.publish(sent)

    async def delayed() -> bool:
        return bool(await client.zcard(broker.key("delayed", "workers")))

    await eventually(delayed)
    [(text, _due)] = await client.zrange(broker.key("delayed", "workers"), 0, -1, withscores=True)
    assert (json.loads(text)["id"], json.loads(text)["attempt"]) == (sent.id, 2)
    lag = await broker.refresh_lag()
    assert lag == {"workers": 1}  # acked on its stream, still counted while delayed
    await client.zadd(broker.key("delayed", "workers"), {text: 0})  # due now
    broker.wake_mover()
    [got] = await inbox.wait_count(1)
    assert (got.id, got.attempt) == (sent.id, 2)
    await subscription.close()


async def test_entries_of_a_dead_consumer_are_taken_over_as_a_new_attempt(
    broker: RedisStreamsBroker, client: aioredis.Redis
) -> None:
    since = await broker.register_group("crew", "work.*")
    stream = broker.key("t", "work.item")
    await client.xgroup_create(stream, "crew", since, mkstream=True)
    sent = Message("work.item", {"n": 1})
    await broker.publish(sent)
    taken: Any = await client.xreadgroup("crew", "ghost", {stream: ">"}, count=1)
    assert taken, "a consumer took the entry, and dies without acking it"
    inbox = Inbox()
    survivor = await broker.subscribe("work.*", "crew", inbox)
    [got] = await inbox.wait_count(1)  # once idle for the visibility timeout
    assert (got.id, got.attempt) == (sent.id, 2)
    await survivor.close()


async def test_acks_leave_nothing_pending_and_lag_drops_to_zero(
    broker: RedisStreamsBroker, client: aioredis.Redis
) -> None:
    async def none_pending() -> bool:
        info: Any = await client.xpending(broker.key("t", "lag.item"), "counted")
        return bool(info["pending"] == 0)

    await unacked_messages_count_as_lag(broker, none_pending)


async def test_publishing_to_a_stopped_redis_is_refused_at_once(tmp_path: Path) -> None:
    async with (
        private_redis(tmp_path) as server,
        create_broker(server.url, prefix="down", timeout=2.0) as broker,
    ):
        await broker.publish(Message("a.b", {}))
        await server.stop()
        with pytest.raises(BackendUnavailable, match="unreachable while publishing"):
            await broker.publish(Message("a.b", {}))
        with pytest.raises(BackendUnavailable):
            await broker.ping()
        await server.start()


async def test_a_consumer_recreates_its_groups_when_redis_restarts_empty(tmp_path: Path) -> None:
    async with private_redis(tmp_path) as server:
        server.argv[server.argv.index("--appendonly") + 1] = "no"  # forgets everything
        await server.stop()
        await server.start()
        options = {"prefix": "empty", "block": 0.2, "visibility_timeout": 2.0}
        async with create_broker(server.url, **options) as broker:
            inbox = Inbox()
            subscription = await broker.subscribe("a.*", "survivors", inbox)
            await broker.publish(Message("a.b", {"n": 1}))
            await inbox.wait_count(1)
            await server.stop()
            await server.start()  # no stream, no group, no registration left

            async def delivered_again() -> bool:
                try:
                    await broker.publish(Message("a.b", {"n": 2}))
                except BackendUnavailable:
                    return False
                return any(m.payload == {"n": 2} for m in inbox.messages)

            await eventually(delivered_again)
            await subscription.close()


async def test_an_entry_that_is_not_an_envelope_is_dead_lettered(
    broker: RedisStreamsBroker, client: aioredis.Redis
) -> None:
    subscription = await broker.subscribe("raw.*", "strict", Inbox())
    await broker.publish(Message("raw.item", {"n": 1}))  # the stream and its group exist
    await client.xadd(broker.key("t", "raw.item"), {"m": "not json"})
    [letter] = await dead_letters_of(broker, 1)
    assert (letter.group, letter.message.topic, letter.message.payload) == (
        "strict",
        "raw.item",
        "not json",
    )
    assert "undecodable envelope" in letter.error
    await subscription.close()
