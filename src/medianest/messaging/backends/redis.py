"""Redis Streams broker: ``redis://[:password@]host:6379/0[?prefix=...&visibility_timeout=...]``
(``rediss://`` for TLS).

Options (keyword or URL query): ``prefix`` of every key (default ``medianest``),
``visibility_timeout`` seconds after which a delivered, unacknowledged entry is taken over
by another consumer (default 30), ``drain_timeout`` (10), ``timeout`` per Redis call (5),
``block`` seconds a consumer's XREADGROUP waits, which is also how often it looks for new
topics (1), ``retry_poll`` seconds between two looks at the retry schedule (0.5).

Keys under the prefix ``p``:

* ``p:t:<topic>`` — one stream per topic; each entry holds the envelope in field ``m``;
* ``p:topics`` — the set of topics ever published (how subscribers find streams);
* ``p:groups`` — hash of group → ``{"pattern", "since"}``, written at its first subscribe;
* ``p:r:<group>`` — the group's own stream of retries and replays;
* ``p:retry`` — sorted set of delayed retries, scored by due time (Redis ms);
* ``p:dlq`` — the dead-letter stream (fields ``m`` envelope, ``g`` group, ``e`` error,
  ``a`` attempts, ``t`` time); a dead letter's id is its entry id.

**Pattern fan-in.** A message is written once, to its topic's stream: publishing is one
XADD (plus a SADD the first time this process publishes a topic). A group is a Redis
consumer group created on every topic stream its pattern matches, at the stream id of the
group's registration time ``since``, so a stream discovered later (a topic that appears
after the subscribe, or whose first message arrived while no member ran) still delivers
everything published after the group subscribed, and nothing from before. Consumers read
all their streams with one XREADGROUP ... BLOCK and rescan ``p:topics`` every ``block``
seconds: the first message of a brand-new topic may wait up to ``block`` seconds; later ones
do not. The other design — one stream per group, fed by publish — would make a publish cost
one write per matching group and copy every message; this one keeps publish at one XADD and
pays with the rescan. A group has one pattern (ValidationError for another).

**Retries** are delayed redeliveries: a failed entry is acknowledged and, atomically (a Lua
script), scheduled in ``p:retry`` with ``attempt + 1``; a mover task of any running broker
(atomic again, so several are safe) moves due entries into ``p:r:<group>``, read by that
group only. **Crashed consumers**: entries pending longer than ``visibility_timeout`` are
taken over with XAUTOCLAIM by a live member, counted as a new attempt (delivery count from
XPENDING); handlers running longer are kept alive by re-claiming their entries. **Dead
letters** go to ``p:dlq`` in the same transaction as the XACK. **Ordering**: entries of one
stream are read in order, but handlers of several consumers (or ``concurrency > 1``) run in
parallel and retries come back later, so per-key order is not guaranteed
(``ordered_keys = False``). **Lag** (:meth:`lag`): XINFO GROUPS ``lag`` (entries not yet
delivered) summed over a group's streams. **Durability** is Redis's: an acknowledged publish
survives a restart only with persistence (AOF, or RDB saved on shutdown). The Lua scripts
touch keys they compute, so use one Redis, not Redis Cluster. Streams are never trimmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from medianest.backends import mask_url
from medianest.errors import BackendError, BackendUnavailable, NotFoundError, ValidationError
from medianest.messaging.backends.delivery import (
    Backoff,
    decode,
    encode,
    error_text,
    positive,
    split_options,
)
from medianest.messaging.backends.redis_consumer import MOVE_DUE, RedisSubscription
from medianest.messaging.base import (
    Broker,
    DeadLetter,
    Handler,
    Message,
    RetryPolicy,
    check_group,
    check_pattern,
    check_topic,
)
from medianest.observability import get_logger

_log = get_logger("medianest.messaging.redis")
_DEFAULTS: dict[str, Any] = {
    "prefix": "medianest",
    "visibility_timeout": 30.0,
    "drain_timeout": 10.0,
    "timeout": 5.0,
    "block": 1.0,
    "retry_poll": 0.5,
}


class RedisStreamsBroker(Broker):
    """The Redis Streams broker (see the module docstring)."""

    ordered_keys = False

    def __init__(self, url: str, **options: Any) -> None:
        driver_url, from_query = split_options(url, _DEFAULTS)
        unknown = set(options) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown Redis broker options: {', '.join(sorted(unknown))}")
        merged = {**_DEFAULTS, **from_query, **options}
        self.url = url
        self.prefix = str(merged["prefix"])
        self.visibility_timeout = positive(
            "visibility_timeout", float(merged["visibility_timeout"])
        )
        self.drain_timeout = float(merged["drain_timeout"])
        self.timeout = positive("timeout", float(merged["timeout"]))
        self.block = min(positive("block", float(merged["block"])), self.timeout / 2)
        self.retry_poll = positive("retry_poll", float(merged["retry_poll"]))
        self._driver_url = driver_url
        self._client: aioredis.Redis | None = None
        self._known_topics: set[str] = set()
        self._subscriptions: set[RedisSubscription] = set()
        self._mover: asyncio.Task[None] | None = None
        self._mover_wake = asyncio.Event()

    def __repr__(self) -> str:
        return f"RedisStreamsBroker({mask_url(self.url)!r}, prefix={self.prefix!r})"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStreamsBroker:
        return cls(url, **options)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise BackendUnavailable("redis broker is not started", backend=mask_url(self.url))
        return self._client

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """The one place Redis driver errors become MediaNest errors."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise BackendUnavailable(
                f"redis broker unreachable while {doing}: {error_text(exc)}",
                backend=mask_url(self.url),
            ) from exc
        except RedisError as exc:
            raise BackendError(
                f"redis broker failed while {doing}: {error_text(exc)}", backend=mask_url(self.url)
            ) from exc

    async def start(self) -> None:
        """Open the connection pool and check that Redis answers."""
        if self._client is None:
            # One immediate retry heals a pooled connection that a server restart closed;
            # anything longer is the caller's retry policy, not a hidden wait here.
            self._client = aioredis.Redis.from_url(
                self._driver_url,
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                retry=Retry(NoBackoff(), 1),
                decode_responses=True,
            )
        await self.ping()

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        mover, self._mover = self._mover, None
        if mover is not None:
            mover.cancel()
            await asyncio.gather(mover, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> None:
        with self.errors("pinging"):
            await self.client.ping()

    async def publish(self, message: Message) -> None:
        """XADD the envelope to its topic's stream; the first publish of a topic by this
        process also adds it to ``p:topics`` (same round trip)."""
        check_topic(message.topic)
        fields = {"m": encode(message)}
        stream = self.key("t", message.topic)
        try:
            with self.errors("publishing"):
                if message.topic in self._known_topics:
                    await self.client.xadd(stream, fields)  # type: ignore[arg-type]
                    return
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                    pipe.sadd(self.key("topics"), message.topic)
                    await pipe.execute()
                self._known_topics.add(message.topic)
        except BackendUnavailable:
            self._known_topics.clear()  # the server may come back empty: register again
            raise

    async def subscribe(
        self,
        pattern: str,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
    ) -> RedisSubscription:
        check_pattern(pattern)
        check_group(group)
        subscription = RedisSubscription(
            self, pattern, group, handler, retry or RetryPolicy(), concurrency
        )
        await subscription.start()
        self._subscriptions.add(subscription)
        if self._mover is None:
            self._mover = asyncio.create_task(self._move_retries(), name="redis retry mover")
        return subscription

    def forget(self, subscription: RedisSubscription) -> None:
        self._subscriptions.discard(subscription)

    async def register_group(self, group: str, pattern: str) -> str:
        """Record ``group`` (first subscribe wins) and return its ``since`` stream id."""
        with self.errors("registering a consumer group"):
            seconds, micros = await self.client.time()
            entry = json.dumps(
                {"pattern": pattern, "since": f"{seconds * 1000 + micros // 1000}-0"}
            )
            await self.client.hsetnx(self.key("groups"), group, entry)
            stored = json.loads(await self.client.hget(self.key("groups"), group))
        if stored["pattern"] != pattern:
            raise ValidationError(
                f"consumer group {group!r} is subscribed to {stored['pattern']!r}; "
                f"a group has one pattern, so {pattern!r} needs another group",
                errors={"pattern": "differs from the group's"},
            )
        return str(stored["since"])

    def wake_mover(self) -> None:
        self._mover_wake.set()

    async def _move_retries(self) -> None:
        """Move due retries into their groups' streams; sleep until the next is due (at
        most ``retry_poll``: another process may schedule an earlier one)."""
        script = self.client.register_script(MOVE_DUE)
        backoff = Backoff()
        while True:
            wait = self.retry_poll
            try:
                moved, next_in_ms = await script(keys=[self.key("retry")], args=[100])
                backoff.reset()
                if int(moved) >= 100:
                    wait = 0.0
                elif int(next_in_ms) >= 0:
                    wait = min(wait, int(next_in_ms) / 1000)
            except (RedisError, OSError) as exc:
                wait = backoff.next()
                _log.debug("broker_retry_mover_failed", error=error_text(exc))
            self._mover_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._mover_wake.wait()

    def _dead_letter(self, entry_id: str, fields: dict[str, str]) -> DeadLetter:
        return DeadLetter(
            id=entry_id,
            message=decode(fields["m"]),
            group=fields["g"],
            error=fields["e"],
            attempts=int(fields["a"]),
            failed_at=datetime.fromisoformat(fields["t"]),
        )

    async def _scan_dead_letters(self) -> list[tuple[str, dict[str, str]]]:
        entries: list[tuple[str, dict[str, str]]] = []
        start = "-"
        with self.errors("reading dead letters"):
            while True:
                page = await self.client.xrange(self.key("dlq"), min=start, max="+", count=500)
                entries.extend(page)
                if len(page) < 500:
                    return entries
                start = "(" + page[-1][0]

    @staticmethod
    def _wanted(fields: dict[str, str], topic: str | None, group: str | None) -> bool:
        if group is not None and fields.get("g") != group:
            return False
        return topic is None or json.loads(fields["m"]).get("topic") == topic

    async def dead_letters(
        self, topic: str | None = None, group: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        found = [
            self._dead_letter(entry_id, fields)
            for entry_id, fields in await self._scan_dead_letters()
            if self._wanted(fields, topic, group)
        ]
        return found[:limit]

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter:
        """One dead letter by id; NotFoundError if there is none."""
        with self.errors("reading a dead letter"):
            entries = await self.client.xrange(self.key("dlq"), dead_letter_id, dead_letter_id)
        if not entries:
            raise NotFoundError(f"no dead letter {dead_letter_id!r}")
        return self._dead_letter(*entries[0])

    async def replay(self, dead_letter_id: str) -> Message:
        """Append the message (attempt 1) to its group's own stream and delete the dead
        letter, in one transaction."""
        letter = await self.dead_letter(dead_letter_id)
        message = replace(letter.message, attempt=1)
        with self.errors("replaying a dead letter"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xadd(self.key("r", letter.group), {"m": encode(message)})  # type: ignore[arg-type]
                pipe.xdel(self.key("dlq"), dead_letter_id)
                await pipe.execute()
        return message

    async def purge(self, topic: str | None = None, group: str | None = None) -> int:
        with self.errors("purging dead letters"):
            if topic is None and group is None:
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.xlen(self.key("dlq"))
                    pipe.delete(self.key("dlq"))
                    count, _ = await pipe.execute()
                return int(count)
        ids = [
            i for i, fields in await self._scan_dead_letters() if self._wanted(fields, topic, group)
        ]
        with self.errors("purging dead letters"):
            for start in range(0, len(ids), 500):
                await self.client.xdel(self.key("dlq"), *ids[start : start + 500])
        return len(ids)

    def add_dead_letter(
        self, pipe: Any, message: Message, group: str, error: str, attempts: int
    ) -> None:
        """Queue the XADD of a dead letter on ``pipe`` (a transaction with the XACK)."""
        pipe.xadd(
            self.key("dlq"),
            {
                "m": encode(message),
                "g": group,
                "e": error,
                "a": str(attempts),
                "t": datetime.now(UTC).isoformat(),
            },
        )

    async def lag(self) -> dict[str, int]:
        """Entries not yet delivered, per group this broker consumes (XINFO GROUPS lag)."""
        totals: dict[str, int] = {}
        for subscription in list(self._subscriptions):
            totals[subscription.group] = totals.get(subscription.group, 0)
            totals[subscription.group] += await subscription.lag()
        return totals
