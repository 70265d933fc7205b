"""The consumer side of :mod:`medianest.messaging.backends.redis`: one subscription.

A subscription is one Redis consumer (a unique name) in its group, reading the group's
retry stream and every topic stream its pattern matches with one XREADGROUP ... BLOCK,
COUNT = free handler slots. Every ``block`` seconds it rescans ``p:topics`` for new matching
topics (creating the group on them at the group's ``since`` id), and every quarter of the
visibility timeout it XAUTOCLAIMs entries idle for longer than the visibility timeout (a
crashed or stuck consumer). Redis errors never end the loop: it logs, backs off and goes on
once Redis answers again; groups lost with a Redis that restarted empty are recreated.

On close it stops reading, drains its handlers and deletes its consumer name from the
streams where it holds no pending entry (one that holds some stays, so that the entries are
claimed by another member after the visibility timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from medianest.errors import ValidationError
from medianest.messaging.backends.delivery import (
    Backoff,
    HandlerPool,
    consumer_name,
    envelope,
    error_text,
    undecodable,
)
from medianest.messaging.base import Handler, Message, RetryPolicy, Subscription, topic_matches
from medianest.messaging.wire import decode
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
"""KEYS: delayed zset, stream; ARGV: group, entry id, delay ms, envelope. Schedule, ack."""

MOVE_DUE = (
    _NOW_MS
    + """
local moved, next_in = 0, -1
for i = 1, #KEYS, 2 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
  for _, text in ipairs(due) do
    redis.call('XADD', KEYS[i + 1], '*', 'm', text)
    redis.call('ZREM', KEYS[i], text)
  end
  moved = moved + #due
  local head = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if head[2] then
    local wait = math.max(0, tonumber(head[2]) - now)
    if next_in < 0 or wait < next_in then next_in = wait end
  end
end
return {moved, next_in}
"""
)
"""KEYS: (delayed zset, retry stream) pairs; ARGV: batch. Moves due retries; answers
{moved, ms until the next one is due or -1}."""


@dataclass(frozen=True, slots=True)
class Entry:
    stream: str
    id: str


class Acks:
    """Acknowledgements made in one turn of the event loop, sent together: one XACK per
    stream for a burst of handlers that finished at once, instead of one each."""

    def __init__(self, broker: RedisStreamsBroker, group: str) -> None:
        self.broker, self.group = broker, group
        self._batch: dict[str, list[str]] = {}
        self._sent: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def ack(self, entry: Entry) -> None:
        if self._sent is None:
            loop = asyncio.get_running_loop()
            self._sent = loop.create_future()
            loop.call_soon(self._send_batch)
        self._batch.setdefault(entry.stream, []).append(entry.id)
        await asyncio.shield(self._sent)

    def _send_batch(self) -> None:
        batch, sent = self._batch, self._sent
        self._batch, self._sent = {}, None
        assert sent is not None
        task = asyncio.create_task(self._send(batch, sent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: dict[str, list[str]], sent: asyncio.Future[None]) -> None:
        try:
            client = self.broker.client
            if len(batch) == 1:
                [(stream, ids)] = batch.items()
                await client.xack(stream, self.group, *ids)
            else:
                async with client.pipeline(transaction=False) as pipe:
                    for stream, ids in batch.items():
                        pipe.xack(stream, self.group, *ids)
                    await pipe.execute()
        except Exception as exc:
            sent.set_exception(exc)
        else:
            sent.set_result(None)


class RedisSubscription(Subscription):
    """One consumer of ``group`` (see the module docstring); the pool's settlement."""

    def __init__(
        self,
        broker: RedisStreamsBroker,
        pattern: str,
        group: str,
        handler: Handler,
        retry: RetryPolicy,
        concurrency: int,
    ) -> None:
        self.broker, self.pattern, self.group, self.policy = broker, pattern, group, retry
        self.consumer = consumer_name()
        self.retry_stream = broker.key("r", group)
        self.delayed = broker.key("delayed", group)
        self.streams: dict[str, str] = {}
        self.pool: HandlerPool[Entry] = HandlerPool(
            handler,
            self,
            group=group,
            retry=retry,
            concurrency=concurrency,
            drain_timeout=broker.drain_timeout,
            metrics=broker.metrics,
            touch_every=broker.visibility_timeout / 3,
        )
        self._since = "$"
        self._known_topics = 0
        self._lost = False
        self._reader: asyncio.Task[None] | None = None
        self._retry_script = broker.client.register_script(SCHEDULE_RETRY)
        self._acks = Acks(broker, group)
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisSubscription({self.pattern!r}, group={self.group!r})"

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
        topics: Any = await client.smembers(self.broker.key("topics"))
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
                if self.pool.free <= 0:
                    continue
                reply: Any = await self.broker.client.xreadgroup(
                    self.group,
                    self.consumer,
                    self.streams,  # type: ignore[arg-type]
                    count=self.pool.free,
                    block=int(self.broker.block * 1000),
                )
                for stream, entries in reply or ():
                    for entry_id, fields in entries:
                        self._deliver(Entry(stream, entry_id), fields, 1)
                backoff.reset()
            except (RedisError, OSError) as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    self.streams.clear()  # Redis came back empty: make the groups again,
                    self._known_topics, self._lost = -1, True  # from the streams' start
                    next_scan = 0.0
                pause = backoff.next()
                _log.warning(
                    "reading messages failed; retrying",
                    backend="redis",
                    group=self.group,
                    error=error_text(exc),
                    retry_in=pause,
                )
                await asyncio.sleep(pause)

    async def _claim(self) -> None:
        """Take over entries idle longer than the visibility timeout, counting the attempt."""
        client = self.broker.client
        idle_ms = int(self.broker.visibility_timeout * 1000)
        streams = list(self.streams)
        async with client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xautoclaim(
                    stream, self.group, self.consumer, idle_ms, count=max(1, self.pool.free)
                )
            replies = await pipe.execute()
        claimed = [
            (Entry(stream, entry_id), fields)
            for stream, reply in zip(streams, replies, strict=True)
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
            self._deliver(entry, fields, int(pending[0]["times_delivered"]) if pending else 2)

    def _deliver(self, entry: Entry, fields: dict[str, str], delivered: int) -> None:
        body = fields.get("m", "")
        try:
            message = decode(body)
        except ValidationError as exc:
            topic = entry.stream.removeprefix(self.broker.key("t") + ":")
            error = f"undecodable envelope: {error_text(exc)}"
            self.pool.background(self.dead_letter(entry, undecodable(topic, body), error, 1))
            return
        if delivered > 1:
            message = replace(message, attempt=message.attempt + delivered - 1)
        self.pool.submit(message, entry)

    # -- settlement (see HandlerPool) -----------------------------------------------------

    async def ack(self, entry: Entry, message: Message) -> None:
        await self._acks.ack(entry)

    async def retry(self, entry: Entry, message: Message, delay: float) -> None:
        text = envelope(replace(message, attempt=message.attempt + 1))
        await self._retry_script(
            keys=[self.delayed, entry.stream], args=[self.group, entry.id, int(delay * 1000), text]
        )
        self.broker.wake_mover()

    async def release(self, entry: Entry, message: Message) -> None:
        text = envelope(replace(message, attempt=message.attempt + 1))
        async with self.broker.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.retry_stream, {"m": text})
            pipe.xack(entry.stream, self.group, entry.id)
            await pipe.execute()

    async def dead_letter(self, entry: Entry, message: Message, error: str, attempts: int) -> None:
        fields = self.broker.dead_letter_fields(self.group, error, attempts, envelope(message))
        async with self.broker.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.broker.key("dlq"), fields)  # type: ignore[arg-type]
            pipe.xack(entry.stream, self.group, entry.id)
            await pipe.execute()

    async def touch(self, entry: Entry) -> None:
        """Reset the idle time of a running handler's entry, so nobody claims it."""
        await self.broker.client.xclaim(
            entry.stream, self.group, self.consumer, 0, [entry.id], justid=True
        )

    # -- lag and close --------------------------------------------------------------------

    async def unacked(self) -> int:
        """Undelivered and pending entries of the group on its streams, plus delayed ones."""
        async with self.broker.client.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xinfo_groups(stream)
            pipe.zcard(self.delayed)
            *replies, delayed = await pipe.execute()
        total = int(delayed)
        for groups in replies:
            for info in groups:
                if info.get("name") == self.group:
                    total += int(info.get("lag") or 0) + int(info.get("pending") or 0)
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
            for stream in self.streams:
                pending: Any = await self.broker.client.xpending_range(
                    stream, self.group, "-", "+", 1, consumername=self.consumer
                )
                if not pending:
                    await self.broker.client.xgroup_delconsumer(stream, self.group, self.consumer)
