"""RabbitMQ broker (aio-pika): ``amqp://user:password@host:5672/vhost[?prefix=...]``
(``amqps://`` for TLS).

Options (keyword, or URL query for the plain ones; other query parameters go to aio-pika):
``prefix`` of every exchange and queue name (default ``medianest``); ``retry``, the default
:class:`RetryPolicy`; ``drain_timeout`` (10); ``timeout`` seconds for a publisher confirm or
any other call (5); ``reconnect_interval`` seconds between two reconnection attempts of the
robust connection (1); ``lag_interval`` (5); ``metrics``.

Topology under the prefix ``p``:

* exchange ``p`` (topic, durable): every message is published there with its topic as the
  routing key; AMQP topic patterns are this hub's patterns (``*`` one word, ``#`` any);
* queue ``p.group.<group>`` (durable, one per group) bound to ``p`` with the group's
  pattern (with each pattern its members subscribed with: RabbitMQ cannot tell us the
  bindings without its management API, so a group should keep one pattern); prefetch of a
  subscription = its ``concurrency``; dead-letter exchange ``p.dlx``;
* queues ``p.retry.<group>.<ms>`` (durable, one per group and backoff step): a failed
  message is published there with ``attempt + 1`` and acknowledged; ``x-message-ttl`` = the
  step's delay, after which RabbitMQ dead-letters it back to the group's queue through the
  default exchange — a delayed redelivery without a hot loop, and a long delay never holds
  up a short one (a single queue with per-message TTLs only expires its head);
* exchange ``p.dlx`` (fanout) and queue ``p.dead-letters``: the dead letters of every
  group, one queue so that listing them all needs no management API; read by browsing
  (:mod:`~medianest.messaging.backends.amqp_dead_letters`).

Publishing waits for RabbitMQ's publisher confirm of a persistent message (``timeout``
seconds), so a publish that returned is on disk in a durable queue of each group. It never
retries: while RabbitMQ is unreachable it raises BackendUnavailable (a caller's resilience
policy decides), and the robust connection reconnects in the background, restoring the
channels, queues, bindings and consumers. **Redeliveries**: RabbitMQ requeues the
unacknowledged messages of a consumer whose connection died; classic queues do not count
deliveries, so a redelivered message is published again with ``attempt + 1`` and then
acknowledged, which counts a crash as an attempt and dead-letters a message that keeps
killing its consumers. **Ordering**: one queue is FIFO, but with several consumers, a
prefetch above 1 and retries that come back later, per-key order is not guaranteed
(``ordered_keys = False``). **Lag**: messages ready in each group's queue and in the delay
queues this process declared, plus the handlers running here (AMQP does not count another
consumer's unacknowledged messages; the management API would). Handlers must finish within
RabbitMQ's ``consumer_timeout`` (30 minutes by default).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
)
from aio_pika.exceptions import AMQPConnectionError, AMQPError, ChannelInvalidStateError

from medianest.backends import mask_url
from medianest.errors import BackendError, BackendUnavailable
from medianest.messaging.backends.amqp_consumer import AmqpSubscription, amqp_properties
from medianest.messaging.backends.amqp_dead_letters import AmqpDeadLetters
from medianest.messaging.backends.delivery import error_text
from medianest.messaging.backends.upkeep import LagCache, broker_options
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

_DEFAULTS: dict[str, Any] = {
    "prefix": "medianest",
    "drain_timeout": 10.0,
    "timeout": 5.0,
    "reconnect_interval": 1.0,
    "lag_interval": 5.0,
    "retry": None,
    "metrics": None,
}


class AmqpBroker(Broker):
    """The RabbitMQ broker (see the module docstring)."""

    ordered_keys = False

    def __init__(self, url: str, **options: Any) -> None:
        driver_url, merged = broker_options(url, _DEFAULTS, options)
        self.url = url
        self.prefix = str(merged["prefix"])
        self.drain_timeout = float(merged["drain_timeout"])
        self.timeout = float(merged["timeout"])
        self.reconnect_interval = float(merged["reconnect_interval"])
        self.retry: RetryPolicy = merged["retry"] or RetryPolicy()
        self.metrics: MessagingMetrics = merged["metrics"] or MessagingMetrics.for_registry()
        self._lag = LagCache(self._read_lag, float(merged["lag_interval"]))
        self.dead = AmqpDeadLetters(self)
        self._driver_url = driver_url
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractRobustExchange | None = None
        self._subscriptions: set[AmqpSubscription] = set()
        self.declared: set[str] = {self.dead_letter_queue}
        """Names of the queues this broker declared (tools and tests delete them)."""

    def __repr__(self) -> str:
        return f"AmqpBroker({mask_url(self.url)!r}, prefix={self.prefix!r})"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AmqpBroker:
        return cls(url, **options)

    @property
    def dlx(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead-letters"

    def group_queue(self, group: str) -> str:
        return f"{self.prefix}.group.{group}"

    def group_arguments(self) -> dict[str, Any]:
        return {"x-dead-letter-exchange": self.dlx}

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BackendUnavailable("amqp broker is not started", backend=mask_url(self.url))
        return self._connection

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """The one place aio-pika errors become MediaNest errors."""
        try:
            yield
        except (
            AMQPConnectionError,
            ChannelInvalidStateError,
            ConnectionError,
            OSError,
            TimeoutError,
        ) as exc:
            raise BackendUnavailable(
                f"rabbitmq unreachable while {doing}: {error_text(exc)}", backend=mask_url(self.url)
            ) from exc
        except AMQPError as exc:
            raise BackendError(
                f"rabbitmq failed while {doing}: {error_text(exc)}", backend=mask_url(self.url)
            ) from exc

    async def start(self) -> None:
        """Connect, declare the exchanges and the dead-letter queue."""
        if self._connection is not None:
            return
        with self.errors("connecting"):
            self._connection = await aio_pika.connect_robust(
                self._driver_url,
                timeout=self.timeout,
                reconnect_interval=self.reconnect_interval,
                client_properties={"connection_name": f"medianest broker {self.prefix}"},
            )
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._exchange = await self._channel.declare_exchange(
                self.prefix, aio_pika.ExchangeType.TOPIC, durable=True
            )
            dlx = await self._channel.declare_exchange(
                self.dlx, aio_pika.ExchangeType.FANOUT, durable=True
            )
            queue = await self._channel.declare_queue(self.dead_letter_queue, durable=True)
            await queue.bind(dlx)
        self.metrics.attach(self)

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self._lag.stop()
        self.metrics.detach(self)
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            with contextlib.suppress(AMQPError, OSError):
                await connection.close()

    async def ping(self) -> None:
        if self._connection is None or self._connection.is_closed:
            raise BackendUnavailable("rabbitmq connection is down", backend=mask_url(self.url))
        async with self.temporary_channel("pinging"):
            pass

    async def publish(self, message: Message) -> None:
        """Publish to the topic exchange and wait for RabbitMQ's confirm.

        What aio-pika's ``Exchange.publish`` does, straight on the aiormq channel with the
        properties made at once: an aio-pika ``Message`` costs about as much Python as the
        rest of the publish (see :func:`~.amqp_consumer.amqp_properties`)."""
        message, text = encode(message)
        channel = self._channel
        if channel is None:
            raise BackendUnavailable("amqp broker is not started", backend=mask_url(self.url))
        with self.errors("publishing"):
            if channel.is_closed:
                raise ChannelInvalidStateError(f"{channel!r} closed")
            underlay = await channel.get_underlay_channel()
            await underlay.basic_publish(
                text.encode(),
                exchange=self.prefix,
                routing_key=message.topic,
                properties=amqp_properties(message.id),
                mandatory=False,
                timeout=self.timeout,
            )
        self.metrics.published(message.topic)

    async def subscribe(
        self,
        pattern: str,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
    ) -> AmqpSubscription:
        check_pattern(pattern)
        check_group(group)
        subscription = AmqpSubscription(
            self, pattern, group, handler, retry or self.retry, concurrency
        )
        self.declared.add(self.group_queue(group))
        with self.errors("subscribing"):
            await subscription.start()
        self._subscriptions.add(subscription)
        self._lag.start()
        return subscription

    def forget(self, subscription: AmqpSubscription) -> None:
        self._subscriptions.discard(subscription)

    @contextlib.asynccontextmanager
    async def temporary_channel(self, doing: str) -> AsyncIterator[AbstractChannel]:
        with self.errors(doing):
            channel = await self.connection.channel(publisher_confirms=True)
            try:
                yield channel
            finally:
                with contextlib.suppress(AMQPError, OSError, ChannelInvalidStateError):
                    await channel.close()

    # -- dead letters (amqp_dead_letters) ------------------------------------------------

    async def dead_letters(
        self, topic: str | None = None, group: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        return await self.dead.scan(topic, group, limit)

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter:
        return await self.dead.get(dead_letter_id)

    async def replay(self, dead_letter_id: str) -> Message:
        """Publish the message (attempt 1) straight to its group's queue, confirmed, then
        acknowledge (remove) the dead letter."""
        return await self.dead.replay(dead_letter_id)

    async def purge(self, topic: str | None = None, group: str | None = None) -> int:
        return await self.dead.purge(topic, group)

    # -- lag ------------------------------------------------------------------------------

    def lag(self) -> dict[str, int] | None:
        """Messages not yet acked per group this broker consumes (module docstring), as
        read every ``lag_interval`` seconds."""
        return self._lag.value

    async def refresh_lag(self) -> dict[str, int]:
        """Read the lag now (what :meth:`lag` reports from then on)."""
        return await self._lag.refresh()

    async def _read_lag(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        async with self.temporary_channel("reading consumer lag") as channel:
            for subscription in list(self._subscriptions):
                group = subscription.group
                if group not in totals:
                    queue = await channel.declare_queue(
                        self.group_queue(group), durable=True, arguments=self.group_arguments()
                    )
                    totals[group] = int(queue.declaration_result.message_count or 0)
                totals[group] += subscription.pool.busy
                for name in subscription.retry_queues:
                    delayed = await channel.declare_queue(name, passive=True)
                    totals[group] += int(delayed.declaration_result.message_count or 0)
        return totals
