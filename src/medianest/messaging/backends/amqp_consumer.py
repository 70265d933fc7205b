"""The consumer side of :mod:`medianest.messaging.backends.amqp`: one subscription.

A subscription owns a robust channel with publisher confirms and prefetch = concurrency,
consumes its group's queue, and runs each handler in the task aiormq gives the delivery:
the consumer is registered through aio-pika (which restores it after a reconnection), then
its aiormq callback is replaced by :meth:`AmqpSubscription._on_delivery`, which reads the
frame itself -- no aio-pika ``IncomingMessage`` and no second task per message -- and acks
on the aiormq channel without waiting for the socket write (RabbitMQ does not answer an
ack; a lost one means a redelivery). Until the callback is replaced again after a
reconnection, aio-pika's own path (:meth:`AmqpSubscription._on_message`) does the same.
Every outcome is published (confirmed) before the delivery is acknowledged — a retry to
the group's delay queue, a dead letter to the dead-letter exchange — so a crash in between
duplicates a message but never loses one. When settling fails on a live channel the
delivery is given back (requeued), so it cannot sit unacknowledged in a prefetch slot; a
cancelled handler's delivery is given back the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustExchange,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from aiormq import spec
from aiormq.abc import AbstractChannel as AmqpChannel
from aiormq.abc import DeliveredMessage

from medianest.errors import ValidationError
from medianest.messaging.backends.delivery import (
    HandlerPool,
    envelope,
    error_text,
    undecodable,
)
from medianest.messaging.base import (
    Handler,
    Message,
    RetryPolicy,
    Subscription,
    uuid7,
)
from medianest.messaging.wire import decode
from medianest.observability import get_logger

if TYPE_CHECKING:
    from medianest.messaging.backends.amqp import AmqpBroker

Incoming = AbstractIncomingMessage
_log = get_logger("medianest.messaging.amqp")
_QUIET = (AMQPError, ChannelInvalidStateError, OSError, TimeoutError)


def amqp_message(
    message: Message,
    text: str | None = None,
    *,
    message_id: str | None = None,
    headers: dict[str, Any] | None = None,
) -> aio_pika.Message:
    """The envelope (``text`` when already encoded) as a persistent AMQP message whose
    ``message_id`` is the message's id unless given."""
    return aio_pika.Message(
        (text or envelope(message)).encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id or message.id,
        headers=headers,
    )


def amqp_properties(message_id: str) -> spec.Basic.Properties:
    """The properties :func:`amqp_message` gives a message, without an aio-pika
    ``Message`` (whose every attribute goes through a Python ``__setattr__``) in between:
    what :meth:`~medianest.messaging.backends.amqp.AmqpBroker.publish` hands to aiormq."""
    return spec.Basic.Properties(
        content_type="application/json", delivery_mode=2, message_id=message_id
    )


class AmqpDelivery:
    """One delivery of a subscription: the aiormq channel it came on and its tag."""

    __slots__ = ("channel", "tag")

    def __init__(self, channel: AmqpChannel, tag: int) -> None:
        self.channel, self.tag = channel, tag

    async def ack(self) -> None:
        """Ack; returns once the frame is queued for the socket (RabbitMQ does not answer
        an ack, and one lost with the connection means a redelivery)."""
        await self.channel.basic_ack(self.tag, wait=False)

    async def nack(self, requeue: bool = True) -> None:
        await self.channel.basic_nack(self.tag, requeue=requeue)


class AmqpSubscription(Subscription):
    """One consumer of ``group``'s queue (see the module docstring); the pool's settlement."""

    def __init__(
        self,
        broker: AmqpBroker,
        pattern: str,
        group: str,
        handler: Handler,
        retry: RetryPolicy,
        concurrency: int,
    ) -> None:
        self.broker, self.pattern, self.group, self.policy = broker, pattern, group, retry
        self.queue_name = broker.group_queue(group)
        self.pool: HandlerPool[AmqpDelivery] = HandlerPool(
            handler,
            self,
            group=group,
            retry=retry,
            concurrency=concurrency,
            drain_timeout=broker.drain_timeout,
            metrics=broker.metrics,
        )
        self._channel: AbstractRobustChannel | None = None
        self._dlx: AbstractRobustExchange | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self.retry_queues: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"AmqpSubscription({self.pattern!r}, group={self.group!r})"

    @property
    def channel(self) -> AbstractRobustChannel:
        assert self._channel is not None, "subscription not started"
        return self._channel

    async def start(self) -> None:
        channel = await self.broker.connection.channel(publisher_confirms=True)
        self._channel = channel
        await channel.set_qos(prefetch_count=self.pool.concurrency)
        exchange = await channel.declare_exchange(
            self.broker.prefix, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._dlx = await channel.declare_exchange(
            self.broker.dlx, aio_pika.ExchangeType.FANOUT, durable=True
        )
        self._queue = await channel.declare_queue(
            self.queue_name, durable=True, arguments=self.broker.group_arguments()
        )
        await self._queue.bind(exchange, routing_key=self.pattern)
        self._tag = await self._queue.consume(self._on_message)
        channel.reopen_callbacks.add(self._on_reopen)
        await self._go_direct()

    async def _go_direct(self) -> None:
        """Have aiormq call :meth:`_on_delivery` for this consumer instead of aio-pika's
        wrapper (which makes an ``IncomingMessage`` and a second task per delivery)."""
        underlay = await self.channel.get_underlay_channel()
        if isinstance(underlay, aiormq.Channel) and self._tag in underlay.consumers:
            underlay.consumers[self._tag] = self._on_delivery

    async def _on_reopen(self, channel: object) -> None:
        """aio-pika consumed again after a reconnection, with its wrapper: replace it."""
        if not self._closed:
            await self._go_direct()

    async def _on_delivery(self, delivered: DeliveredMessage) -> None:
        frame = cast(spec.Basic.Deliver, delivered.delivery)
        delivery = AmqpDelivery(delivered.channel, cast(int, frame.delivery_tag))
        await self._received(delivered.body, frame.routing_key, frame.redelivered, delivery)

    async def _on_message(self, incoming: Incoming) -> None:
        assert incoming.delivery_tag is not None
        delivery = AmqpDelivery(incoming.channel, incoming.delivery_tag)
        await self._received(incoming.body, incoming.routing_key, incoming.redelivered, delivery)

    async def _received(
        self, body: bytes, routing_key: str | None, redelivered: bool | None, incoming: AmqpDelivery
    ) -> None:
        try:
            message = decode(body)
        except ValidationError as exc:
            stand_in = undecodable(routing_key or "unknown", body)
            error = f"undecodable envelope: {error_text(exc)}"
            await self.pool.reject(stand_in, incoming, error)
            return
        if redelivered and not self._closed:
            # A consumer died (or let go) holding this message: that delivery counts.
            message = replace(message, attempt=message.attempt + 1)
            if message.attempt <= self.policy.max_attempts:
                await self._quietly(
                    self._settle_by(incoming, self._publish_to(self.queue_name, message))
                )
                return
        await self.pool.run(message, incoming)

    async def _quietly(self, settling: Awaitable[None]) -> None:
        try:
            await settling
        except Exception as exc:
            _log.warning(
                "could not settle a message; RabbitMQ delivers it again later",
                group=self.group,
                error=error_text(exc),
            )

    async def _settle_by(self, incoming: AmqpDelivery, publishing: Awaitable[object]) -> None:
        """Publish (confirmed), then ack; on failure give the delivery back (requeue), so
        that it cannot sit unacknowledged in a prefetch slot of a live channel."""
        try:
            await publishing
            await incoming.ack()
        except Exception:
            with contextlib.suppress(*_QUIET):
                await incoming.nack(requeue=True)
            raise

    async def _publish_to(self, queue: str, message: Message) -> None:
        await self.channel.default_exchange.publish(
            amqp_message(message), queue, timeout=self.broker.timeout
        )

    async def _retry_queue(self, delay: float) -> str:
        """The group's delay queue for ``delay`` seconds, declared on first use."""
        millis = max(1, round(delay * 1000))
        name = f"{self.broker.prefix}.retry.{self.group}.{millis}"
        if name not in self.retry_queues:
            await self.channel.declare_queue(
                name,
                durable=True,
                arguments={
                    "x-message-ttl": millis,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.queue_name,
                },
            )
            self.retry_queues.add(name)
            self.broker.declared.add(name)
        return name

    # -- settlement (see HandlerPool) -----------------------------------------------------

    async def ack(self, incoming: AmqpDelivery, message: Message) -> None:
        await incoming.ack()

    async def retry(self, incoming: AmqpDelivery, message: Message, delay: float) -> None:
        queue = await self._retry_queue(delay)
        again = replace(message, attempt=message.attempt + 1)
        await self._settle_by(incoming, self._publish_to(queue, again))

    async def release(self, incoming: AmqpDelivery, message: Message) -> None:
        await incoming.nack(requeue=True)

    async def dead_letter(
        self, incoming: AmqpDelivery, message: Message, error: str, attempts: int
    ) -> None:
        assert self._dlx is not None
        headers = {
            "x-medianest-group": self.group,
            "x-medianest-error": error,
            "x-medianest-attempts": attempts,
            "x-medianest-failed-at": datetime.now(UTC).isoformat(),
        }
        letter = amqp_message(message, message_id=uuid7(), headers=headers)
        await self._settle_by(incoming, self._dlx.publish(letter, "", timeout=self.broker.timeout))

    async def touch(self, incoming: AmqpDelivery) -> None:
        return None  # RabbitMQ only redelivers when the channel dies (or consumer_timeout)

    async def close(self) -> None:
        """Cancel the consumer, drain the handlers, close the channel (RabbitMQ requeues
        whatever was not acknowledged)."""
        if self._closed:
            return
        self._closed = True
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(*_QUIET):
                await self._queue.cancel(self._tag, timeout=self.broker.timeout)
        await self.pool.drain()
        self.broker.forget(self)
        if self._channel is not None:
            with contextlib.suppress(*_QUIET):
                await self._channel.close()
