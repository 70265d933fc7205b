"""Redis Streams broker: ``redis://[:password@]host:6379/0[?prefix=...&visibility_timeout=...]``
(``rediss://`` for TLS).

Options (keyword, or URL query for the plain ones): ``prefix`` of every key (default
``medianest``); ``visibility_timeout`` seconds after which a delivered, unacknowledged entry
is taken over by another consumer (30); ``retry``, the default :class:`RetryPolicy`;
``drain_timeout`` (10); ``timeout`` per Redis call (5); ``block`` seconds a consumer's
XREADGROUP waits, which is also how often it looks for new topics (1); ``retry_poll``
longest pause of the retry mover (0.5); ``lag_interval`` (5); ``metrics``.

Keys under the prefix ``p``:

* ``p:t:<topic>`` — one stream per topic; each entry holds the envelope in field ``m``;
* ``p:topics`` — the set of topics ever published (how subscribers find streams);
* ``p:groups`` — hash of group → ``{"pattern", "since"}``, written at its first subscribe;
* ``p:r:<group>`` — the group's own stream of retries, releases and replays;
* ``p:delayed:<group>`` — the group's retries waiting for their time (a sorted set);
* ``p:dlq`` — the dead-letter stream (``m`` envelope, ``g`` group, ``e`` error, ``a``
  attempts, ``t`` time); a dead letter's id is its entry id.

**Pattern fan-in.** A message is written once, to its topic's stream: publishing is one
XADD (plus a SADD the first time this process publishes a topic). A group is a Redis
consumer group created on every topic stream its pattern matches, at the stream id of the
group's registration time ``since``, so a stream found later (a topic that appears after
the subscribe, or whose first message came while no member ran) still yields everything
published after the group subscribed, and nothing from before. Members read all their
streams with one XREADGROUP ... BLOCK and rescan ``p:topics`` every ``block`` seconds, so
the first message of a brand-new topic may wait up to ``block`` seconds; later ones do not.
The alternative, one stream per group fed by publish, would cost a write per matching group
on every publish and copy every message; this design keeps publish at one XADD and pays
with the rescan. A group has one pattern (ValidationError for another).

**Retries** are delayed redeliveries: the failed entry is acknowledged and, in the same Lua
script, added to ``p:delayed:<group>`` with ``attempt + 1``; a mover task of each broker
with consumers moves due entries of its groups into ``p:r:<group>`` (a script again, so
several movers are safe). **Crashes**: entries pending longer than ``visibility_timeout``
are taken over with XAUTOCLAIM by a live member, every further delivery counting as an
attempt (XPENDING's delivery count); handlers running longer keep their entries with
XCLAIM. A cancelled handler's entry is released: re-added to ``p:r:<group>`` (attempt + 1)
and acknowledged at once. **Dead letters** go to ``p:dlq`` in one transaction with the
XACK. **Ordering**: a stream is read in order, but consumers and ``concurrency`` run
handlers in parallel and retries come back later: no per-key order (``ordered_keys =
False``). **Lag**: XINFO GROUPS ``lag`` + ``pending`` over a group's streams, plus its
delayed retries. **Durability** is Redis's: an acknowledged publish survives a restart only
with persistence (AOF, or an RDB written at shutdown). The scripts touch keys they compute:
one Redis, not Redis Cluster. Streams are not trimmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from medianest.backends import mask_url
from medianest.errors import BackendError, BackendUnavailable, ValidationError
from medianest.messaging.backends.delivery import error_text
from medianest.messaging.backends.redis_consumer import RedisSubscription
from medianest.messaging.backends.redis_dead_letters import RedisDeadLetters
from medianest.messaging.backends.redis_scripts import MOVE_DUE
from medianest.messaging.backends.upkeep import Backoff, LagCache, broker_options
from medianest.messaging.base import (
    Broker,
    DeadLetter,
    Handler,
    Message,
    RetryPolicy,
    check_group,
    check_pattern,
)
from medianest.messaging.metrics import MessagingMetrics
from medianest.messaging.wire import encode
from medianest.observability import get_logger
from medianest.resilience.timeout import Timeout

_log = get_logger("medianest.messaging.redis")
_REREGISTER = 10.0
"""Seconds after which a publish adds its topic to ``p:topics`` again (a Redis that
restarted empty would otherwise never show the topic's new stream to consumers)."""
_DEFAULTS: dict[str, Any] = {
    "prefix": "medianest",
    "visibility_timeout": 30.0,
    "drain_timeout": 10.0,
    "timeout": 5.0,
    "block": 1.0,
    "retry_poll": 0.5,
    "lag_interval": 5.0,
    "retry": None,
    "metrics": None,
}


class RedisStreamsBroker(Broker):
    """The Redis Streams broker (see the module docstring)."""

    ordered_keys = False

    def __init__(self, url: str, **options: Any) -> None:
        driver_url, merged = broker_options(url, _DEFAULTS, options)
        self.url = url
        self.prefix = str(merged["prefix"])
        self.visibility_timeout = float(merged["visibility_timeout"])
        self.drain_timeout = float(merged["drain_timeout"])
        self.timeout = float(merged["timeout"])
        self.call_timeout = Timeout(self.timeout, name="redis broker")
        self.block = min(float(merged["block"]), self.timeout / 2)
        self.retry_poll = float(merged["retry_poll"])
        self.retry: RetryPolicy = merged["retry"] or RetryPolicy()
        self.metrics: MessagingMetrics = merged["metrics"] or MessagingMetrics.for_registry()
        self._driver_url = driver_url
        self._client: aioredis.Redis | None = None
        self._registered: dict[str, float] = {}  # topic -> when this process last SADDed it
        self._subscriptions: set[RedisSubscription] = set()
        self._mover: asyncio.Task[None] | None = None
        self._mover_wake = asyncio.Event()
        self._lag = LagCache(self._read_lag, float(merged["lag_interval"]))
        self.dead = RedisDeadLetters(self)

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

    def translate(self, exc: BaseException, doing: str) -> BackendError:
        """The one place Redis driver errors become MediaNest errors."""
        if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
            return BackendUnavailable(
                f"redis broker unreachable while {doing}: {error_text(exc)}",
                backend=mask_url(self.url),
            )
        return BackendError(
            f"redis broker failed while {doing}: {error_text(exc)}", backend=mask_url(self.url)
        )

    @contextlib.asynccontextmanager
    async def errors(self, doing: str, seconds: float | None = None) -> AsyncIterator[None]:
        """Translate driver errors (:meth:`translate`); the block gets ``seconds`` (default:
        the broker's ``timeout``), then BackendUnavailable.

        The client has no socket timeout of its own (redis-py's default is 5 s): with one,
        redis-py sends every command through :func:`asyncio.wait_for`, a task each, which
        costs about as much as the command itself. The calls made per message run under
        shared-watchdog :class:`~medianest.resilience.timeout.Timeout` scopes instead of
        ``asyncio.timeout`` (one loop timer for all of them rather than one armed and
        cancelled per call, which was a seventh of a publish's CPU): publishes and acks sent
        alone under :attr:`call_timeout`, each subscription's reads under its own limit of
        ``timeout`` + ``block``."""
        try:
            async with asyncio.timeout(seconds or self.timeout):
                yield
        except (RedisError, OSError) as exc:
            raise self.translate(exc, doing) from exc

    async def start(self) -> None:
        """Open the connection pool and check that Redis answers."""
        if self._client is None:
            # One immediate retry heals a pooled connection that a server restart closed;
            # anything longer is the caller's retry policy, not a hidden wait here.
            self._client = aioredis.Redis.from_url(
                self._driver_url,
                socket_connect_timeout=self.timeout,
                socket_timeout=None,
                retry=Retry(NoBackoff(), 1),
                decode_responses=True,
            )
            self.metrics.attach(self)
        await self.ping()

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self._lag.stop()
        mover, self._mover = self._mover, None
        if mover is not None:
            mover.cancel()
            await asyncio.gather(mover, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            self.metrics.detach(self)
            await client.aclose()

    async def ping(self) -> None:
        async with self.errors("pinging"):
            await self.client.ping()

    async def publish(self, message: Message) -> None:
        """XADD the envelope to its topic's stream; the first publish of a topic by this
        process (and one every 10 s) also adds it to ``p:topics``, in the same round trip."""
        message, text = encode(message)
        stream, fields = self.key("t", message.topic), {"m": text}
        client = self.client
        try:
            with self.call_timeout.scope():
                registered = self._registered.get(message.topic)
                if registered is not None and time.monotonic() - registered < _REREGISTER:
                    await client.xadd(stream, fields)  # type: ignore[arg-type]
                else:
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.xadd(stream, fields)  # type: ignore[arg-type]
                        pipe.sadd(self.key("topics"), message.topic)
                        await pipe.execute()
                    self._registered[message.topic] = time.monotonic()
        except (RedisError, OSError) as exc:
            self._registered.clear()  # the server may come back empty: register again
            raise self.translate(exc, "publishing") from exc
        self.metrics.published(message.topic)

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
            self, pattern, group, handler, retry or self.retry, concurrency
        )
        await subscription.start()
        self._subscriptions.add(subscription)
        if self._mover is None:
            self._mover = asyncio.create_task(self._move_retries(), name="redis retry mover")
        self._lag.start()
        return subscription

    def forget(self, subscription: RedisSubscription) -> None:
        self._subscriptions.discard(subscription)

    async def register_group(self, group: str, pattern: str) -> str:
        """Record ``group`` (first subscribe wins) and return its ``since`` stream id."""
        async with self.errors("registering a consumer group"):
            seconds, micros = await self.client.time()
            # The last id before this millisecond: entries added in it are after ``since``.
            since = f"{seconds * 1000 + micros // 1000 - 1}-{2**64 - 1}"
            entry = json.dumps({"pattern": pattern, "since": since})
            await self.client.hsetnx(self.key("groups"), group, entry)
            stored = json.loads(await self.client.hget(self.key("groups"), group) or entry)
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
        """Move due retries of this broker's groups into their streams; sleep until the
        next is due, at most ``retry_poll`` (another process may add an earlier one)."""
        script = self.client.register_script(MOVE_DUE)
        backoff = Backoff()
        while True:
            wait = self.retry_poll
            groups = sorted({s.group for s in self._subscriptions})
            keys = [k for g in groups for k in (self.key("delayed", g), self.key("r", g))]
            try:
                if keys:
                    moved, next_in_ms = await script(keys=keys, args=[100])
                    if int(moved) >= 100:
                        wait = 0.0
                    elif int(next_in_ms) >= 0:
                        wait = min(wait, int(next_in_ms) / 1000)
                backoff.reset()
            except (RedisError, OSError) as exc:
                wait = backoff.next()
                _log.debug("moving due retries failed", error=error_text(exc))
            self._mover_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._mover_wake.wait()

    # -- dead letters (redis_dead_letters) -----------------------------------------------

    async def dead_letters(
        self, topic: str | None = None, group: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        return await self.dead.scan(topic, group, limit)

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter:
        return await self.dead.get(dead_letter_id)

    async def replay(self, dead_letter_id: str) -> Message:
        """Append the message (attempt 1) to its group's own stream and delete the dead
        letter, in one transaction."""
        return await self.dead.replay(dead_letter_id)

    async def purge(self, topic: str | None = None, group: str | None = None) -> int:
        return await self.dead.purge(topic, group)

    # -- lag ------------------------------------------------------------------------------

    def lag(self) -> dict[str, int] | None:
        """Entries not yet acked per group this broker consumes (undelivered, pending and
        delayed), as read every ``lag_interval`` seconds."""
        return self._lag.value

    async def refresh_lag(self) -> dict[str, int]:
        """Read the lag now (what :meth:`lag` reports from then on)."""
        return await self._lag.refresh()

    async def _read_lag(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        by_group = {s.group: s for s in self._subscriptions}
        async with self.errors("reading consumer lag"):
            for group, subscription in sorted(by_group.items()):
                totals[group] = await subscription.unacked()
        return totals
