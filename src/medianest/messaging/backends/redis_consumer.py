"""The consumer side of :mod:`medianest.messaging.backends.redis`: one subscription.

A subscription is one Redis consumer (a unique name) in its group, reading the group's
retry stream and every topic stream its pattern matches with one XREADGROUP ... BLOCK,
COUNT = free handler slots. Every ``block`` seconds it rescans ``p:topics`` for new matching
topics (creating the group on them at the group's ``since`` id), and every quarter of the
visibility timeout it XAUTOCLAIMs entries idle for longer than the visibility timeout (a
crashed or stuck consumer). Redis errors never end the loop: it logs, backs off, and goes
on once Redis answers again; a group lost with a Redis that restarted empty is recreated.

On close it stops reading, drains its handlers and deletes its consumer name from the
groups where it holds no pending entry (one that holds some stays, so that the entries are
claimed by another member after the visibility timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from medianest.errors import ValidationError
from medianest.messaging.backends.delivery import (
    Backoff,
    HandlerPool,
    consumer_name,
    decode,
    encode,
    error_text,
    retry_delay,
    undecodable,
)
from medianest.messaging.base import Handler, Message, RetryPolicy, Subscription, topic_matches
from medianest.observability import get_logger

if TYPE_CHECKING:
    from medianest.messaging.backends.redis import RedisStreamsBroker

_log = get_logger("medianest.messaging.redis")

_NOW_MS = (
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
)

SCHEDULE_RETRY = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
return redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
"""
)
"""KEYS: retry zset, stream; ARGV: group, entry id, delay ms, member. Schedule and ack."""

MOVE_DUE = (
    _NOW_MS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local entry = cjson.decode(member)
  redis.call('XADD', entry['s'], '*', 'm', entry['m'])
  redis.call('ZREM', KEYS[1], member)
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[2] then return {#due, math.max(0, tonumber(head[2]) - now)} end
return {#due, -1}
"""
)
"""KEYS: retry zset; ARGV: batch. Move due retries; answer {moved, ms to next or -1}."""


@dataclass(frozen=True, slots=True)
class Entry:
    stream: str
    id: str


class RedisSubscription(Subscription):
    """One consumer of ``group`` (see the module docstring)."""

    def __init__(
        self,
        broker: RedisStreamsBroker,
        pattern: str,
        group: str,
        handler: Handler,
        retry: RetryPolicy,
        concurrency: int,
    ) -> None:
        self.broker, self.pattern, self.group, self.retry = broker, pattern, group, retry
        self.consumer = consumer_name()
        self.retry_stream = broker.key("r", group)
        self.streams: dict[str, str] = {}
        self.pool: HandlerPool[Entry] = HandlerPool(
            handler,
            self._settle,
            concurrency=concurrency,
            drain_timeout=broker.drain_timeout,
            name=f"redis:{group}:{self.consumer}",
            touch=self._touch,
            touch_every=broker.visibility_timeout / 3,
        )
        self._since = "$"
        self._known_topics = 0
        self._lost = False
        self._reader: asyncio.Task[None] | None = None
        self._retry_script = broker.client.register_script(SCHEDULE_RETRY)
        self._closed = False

    async def start(self) -> None:
        self._since = await self.broker.register_group(self.group, self.pattern)
        with self.broker.errors("creating consumer groups"):
            await self._scan()
        self._reader = asyncio.create_task(self._read_loop(), name=f"redis consumer {self.group}")

    async def _create_group(self, stream: str, since: str) -> None:
        try:
            await self.broker.client.xgroup_create(stream, self.group, since, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _scan(self) -> None:
        """Create the group on the retry stream and on every new matching topic stream."""
        client = self.broker.client
        if self._lost:
            await self.broker.register_group(self.group, self.pattern)
            self._since, self._lost = "0", False
        if self.retry_stream not in self.streams:
            await self._create_group(self.retry_stream, "0")
            self.streams[self.retry_stream] = ">"
        if await client.scard(self.broker.key("topics")) == self._known_topics:
            return
        topics = await client.smembers(self.broker.key("topics"))
        for topic in sorted(topics):
            stream = self.broker.key("t", topic)
            if stream not in self.streams and topic_matches(self.pattern, topic):
                await self._create_group(stream, self._since)
                self.streams[stream] = ">"
        self._known_topics = len(topics)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        claim_every = self.broker.visibility_timeout / 4
        next_scan = next_claim = loop.time() + self.broker.block
        backoff = Backoff()
        # The flag, not only the cancellation, ends the loop: a cancel that lands while a
        # redis-py timeout expires can come out as a TimeoutError, caught below.
        while not self._closed:
            await self.pool.wait_free()
            try:
                if loop.time() >= next_scan:
                    await self._scan()
                    next_scan = loop.time() + self.broker.block
                if loop.time() >= next_claim:
                    await self._claim()
                    next_claim = loop.time() + claim_every
                free = self.pool.free
                if free <= 0:
                    continue
                reply = await self.broker.client.xreadgroup(
                    self.group,
                    self.consumer,
                    self.streams,  # type: ignore[arg-type]
                    count=free,
                    block=int(self.broker.block * 1000),
                )
                for stream, entries in reply or ():
                    for entry_id, fields in entries:
                        self._deliver(Entry(stream, entry_id), fields, 1)
                backoff.reset()
            except (RedisError, OSError) as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    self._lost_groups()
                    next_scan = 0.0
                pause = backoff.next()
                _log.warning(
                    "broker_consumer_reconnecting",
                    backend="redis",
                    group=self.group,
                    error=error_text(exc),
                    retry_in=pause,
                )
                await asyncio.sleep(pause)

    def _lost_groups(self) -> None:
        """Redis came back without our groups (it restarted without persistence): create
        them again, from the start of the streams since they were written after the loss."""
        self.streams.clear()
        self._known_topics = -1
        self._lost = True

    async def _claim(self) -> None:
        """Take over entries idle longer than the visibility timeout, counting the attempt."""
        client = self.broker.client
        idle_ms = int(self.broker.visibility_timeout * 1000)
        async with client.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xautoclaim(
                    stream, self.group, self.consumer, idle_ms, count=max(1, self.pool.free)
                )
            replies = await pipe.execute()
        claimed = [
            (Entry(stream, entry_id), fields)
            for stream, reply in zip(self.streams, replies, strict=True)
            for entry_id, fields in reply[1]
            if fields
        ]
        if not claimed:
            return
        async with client.pipeline(transaction=False) as pipe:
            for entry, _ in claimed:
                pipe.xpending_range(entry.stream, self.group, entry.id, entry.id, 1)
            counts = await pipe.execute()
        for (entry, fields), pending in zip(claimed, counts, strict=True):
            delivered = int(pending[0]["times_delivered"]) if pending else 2
            self._deliver(entry, fields, delivered)

    def _deliver(self, entry: Entry, fields: dict[str, str], delivered: int) -> None:
        body = fields.get("m", "")
        topic = entry.stream.removeprefix(self.broker.key("t") + ":")
        try:
            message = decode(body)
        except ValidationError as exc:
            self._spawn_dead_letter(entry, undecodable(topic, body), error_text(exc), 1)
            return
        if delivered > 1:
            message = replace(message, attempt=message.attempt + delivered - 1)
            if message.attempt > self.retry.max_attempts:
                error = (
                    f"not acknowledged within the visibility timeout "
                    f"({self.broker.visibility_timeout:g} s) after {message.attempt - 1} "
                    "deliveries: the consumers crashed or hung"
                )
                self._spawn_dead_letter(entry, message, error, message.attempt - 1)
                return
        self.pool.submit(message, entry)

    def _spawn_dead_letter(self, entry: Entry, message: Message, error: str, attempts: int) -> None:
        task = asyncio.create_task(self._dead_letter(entry, message, error, attempts))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _dead_letter(self, entry: Entry, message: Message, error: str, attempts: int) -> None:
        try:
            async with self.broker.client.pipeline(transaction=True) as pipe:
                self.broker.add_dead_letter(pipe, message, self.group, error, attempts)
                pipe.xack(entry.stream, self.group, entry.id)
                await pipe.execute()
            _log.warning(
                "broker_dead_letter",
                backend="redis",
                group=self.group,
                topic=message.topic,
                message_id=message.id,
                attempts=attempts,
                error=error,
            )
        except (RedisError, OSError) as exc:
            _log.warning("broker_dead_letter_failed", group=self.group, error=error_text(exc))

    async def _settle(self, entry: Entry, message: Message, error: Exception | None) -> None:
        if error is None:
            await self.broker.client.xack(entry.stream, self.group, entry.id)
            return
        delay = retry_delay(self.retry, message.attempt)
        if delay is None:
            await self._dead_letter(entry, message, error_text(error), message.attempt)
            return
        member = json.dumps(
            {
                "s": self.retry_stream,
                "m": encode(replace(message, attempt=message.attempt + 1)).decode(),
            }
        )
        await self._retry_script(
            keys=[self.broker.key("retry"), entry.stream],
            args=[self.group, entry.id, int(delay * 1000), member],
        )
        self.broker.wake_mover()

    async def _touch(self, entry: Entry) -> None:
        """Reset the idle time of a running handler's entry, so nobody claims it."""
        await self.broker.client.xclaim(
            entry.stream, self.group, self.consumer, 0, [entry.id], justid=True
        )

    async def lag(self) -> int:
        total = 0
        with self.broker.errors("reading consumer lag"):
            async with self.broker.client.pipeline(transaction=False) as pipe:
                for stream in self.streams:
                    pipe.xinfo_groups(stream)
                replies: list[list[dict[str, Any]]] = await pipe.execute()
        for groups in replies:
            for info in groups:
                if info.get("name") == self.group and info.get("lag") is not None:
                    total += int(info["lag"])
        return total

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await self.pool.drain()
        self.broker.forget(self)
        with contextlib.suppress(RedisError, OSError):
            await self._forget_consumer()

    async def _forget_consumer(self) -> None:
        client = self.broker.client
        for stream in self.streams:
            pending = await client.xpending_range(
                stream, self.group, "-", "+", 1, consumername=self.consumer
            )
            if not pending:
                await client.xgroup_delconsumer(stream, self.group, self.consumer)
