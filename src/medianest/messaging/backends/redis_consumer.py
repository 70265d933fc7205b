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
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import Connection
from redis.exceptions import RedisError, ResponseError

from medianest.errors import ValidationError
from medianest.messaging.backends.delivery import (
    HandlerPool,
    consumer_name,
    envelope,
    error_text,
    pause_rounds,
    undecodable,
)
from medianest.messaging.backends.redis_acks import Acks, Entry
from medianest.messaging.backends.redis_scripts import SCHEDULE_RETRY
from medianest.messaging.backends.upkeep import Backoff
from medianest.messaging.base import Handler, Message, RetryPolicy, Subscription, topic_matches
from medianest.messaging.wire import decode
from medianest.observability import get_logger
from medianest.resilience.timeout import Timeout

if TYPE_CHECKING:
    from medianest.messaging.backends.redis import RedisStreamsBroker

_log = get_logger("medianest.messaging.redis")
READ_PAUSE_ROUNDS = 12
"""Event loop rounds a reader lets pass after a read that returned entries, before reading
again (see :meth:`RedisSubscription._read_loop`)."""


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
        self._conn: Connection | None = None
        self._read_timeout = Timeout(broker.timeout + broker.block, name="redis broker read")
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisSubscription({self.pattern!r}, group={self.group!r})"

    async def start(self) -> None:
        self._since = await self.broker.register_group(self.group, self.pattern)
        async with self.broker.errors("creating consumer groups"):
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
        if "*" not in self.pattern and "#" not in self.pattern:
            # One topic only: its stream needs no finding, so no wait for the next rescan
            # when its first message comes after the subscribe.
            stream = self.broker.key("t", self.pattern)
            if stream not in self.streams:
                await self._create_group(stream, self._since)
                self.streams[stream] = ">"
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
        """Read, hand the entries to the pool, and after a read that returned entries let
        :data:`READ_PAUSE_ROUNDS` event loop rounds pass (:func:`pause_rounds`) before the
        next read, which carries the acks of the handlers that returned meanwhile."""
        loop = asyncio.get_running_loop()
        claim_every = self.broker.visibility_timeout / 4
        timeout = self.broker.timeout
        next_scan = next_claim = loop.time() + self.broker.block
        backoff = Backoff()
        # The flag, not only the cancellation, ends the loop: a cancel that lands while a
        # redis-py timeout expires can come out as a TimeoutError, caught below.
        while not self._closed:
            await self.pool.wait_free()
            try:
                if loop.time() >= next_scan:
                    async with asyncio.timeout(timeout):
                        await self._scan()
                    next_scan = loop.time() + self.broker.block
                if loop.time() >= next_claim:
                    async with asyncio.timeout(timeout):
                        await self._claim()
                    next_claim = loop.time() + claim_every
                if self.pool.free <= 0:
                    continue
                reply = await self._read()
                for stream, entries in reply or ():
                    for entry_id, fields in entries:
                        self._deliver(Entry(stream, entry_id), fields, 1)
                backoff.reset()
                if reply:
                    await pause_rounds(READ_PAUSE_ROUNDS)
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

    async def _read(self) -> Any:
        """XREADGROUP ... BLOCK, sent with the acks waiting to be sent in one write on the
        subscription's own connection (:meth:`_round_trip`)."""
        acks = self._acks.take()
        block = int(self.broker.block * 1000)
        read = (
            "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.pool.free,
            "BLOCK", block, "STREAMS", *self.streams, *self.streams.values(),
        )  # fmt: skip
        try:
            with self._read_timeout.scope():
                *_, raw = await self._round_trip([*self._acks.commands(acks), read])
        except BaseException:
            self._acks.restore(acks)  # an XACK again is harmless
            raise
        return self.broker.client.response_callbacks["XREADGROUP"](raw) if raw else None

    async def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read their replies, on a connection this
        subscription keeps for its blocking reads: redis-py's pipeline costs about as much
        Python as a round trip, for every read. Every reply is read before an error reply
        is raised, so the connection stays in step; a connection error or a cancellation
        closes it (redis-py), and the next call connects again."""
        conn = self._conn
        if conn is None:
            pool = self.broker.client.connection_pool
            conn = self._conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        replies, error = [], None
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                replies.append(None)
                error = error or exc
        if error is not None:
            raise error
        return replies

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
            self.pool.background(self.pool.reject(undecodable(topic, body), entry, error))
            return
        if delivered > 1:
            message = replace(message, attempt=message.attempt + delivered - 1)
        self.pool.submit(message, entry)

    # -- settlement (see HandlerPool) -----------------------------------------------------

    async def ack(self, entry: Entry, message: Message) -> None:
        self._acks.add(entry)

    async def retry(self, entry: Entry, message: Message, delay: float) -> None:
        text = envelope(replace(message, attempt=message.attempt + 1))
        async with asyncio.timeout(self.broker.timeout):
            await self._retry_script(
                keys=[self.delayed, entry.stream],
                args=[self.group, entry.id, int(delay * 1000), text],
            )
        self.broker.wake_mover()

    async def release(self, entry: Entry, message: Message) -> None:
        text = envelope(replace(message, attempt=message.attempt + 1))
        async with asyncio.timeout(self.broker.timeout), self.broker.client.pipeline() as pipe:
            pipe.xadd(self.retry_stream, {"m": text})
            pipe.xack(entry.stream, self.group, entry.id)
            await pipe.execute()

    async def dead_letter(self, entry: Entry, message: Message, error: str, attempts: int) -> None:
        async with asyncio.timeout(self.broker.timeout), self.broker.client.pipeline() as pipe:
            self.broker.dead.add(pipe, self.group, error, attempts, envelope(message))
            pipe.xack(entry.stream, self.group, entry.id)
            await pipe.execute()

    async def touch(self, entry: Entry) -> None:
        """Reset the idle time of a running handler's entry, so nobody claims it."""
        async with asyncio.timeout(self.broker.timeout):
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
        await self._acks.flush()
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.broker.client.connection_pool.release(conn)
        self.broker.forget(self)
        with contextlib.suppress(RedisError, OSError):
            async with asyncio.timeout(self.broker.timeout):
                await self._forget_consumer()

    async def _forget_consumer(self) -> None:
        """Delete this consumer's name from the streams where it holds no entry."""
        for stream in self.streams:
            pending: Any = await self.broker.client.xpending_range(
                stream, self.group, "-", "+", 1, consumername=self.consumer
            )
            if not pending:
                await self.broker.client.xgroup_delconsumer(stream, self.group, self.consumer)
