"""Dead letters of :mod:`medianest.messaging.backends.amqp`: the queue ``p.dead-letters``.

Every group's dead letters go through the fanout exchange ``p.dlx`` into one durable queue,
with the group, error, attempts and time in ``x-medianest-*`` headers and the dead letter's
id as ``message_id``; messages RabbitMQ dead-letters itself (a reject, an expiry, a length
limit on a group's queue) arrive there too, described by their ``x-death`` header.

AMQP cannot read a queue without taking messages, so reading **browses**: ``basic.get``
every message on a channel of its own without acknowledging it, then close the channel,
and RabbitMQ puts them back in their places. Replay and purge acknowledge (remove) the ones
they take. A browse reads the whole queue: fine for an operator's dead letters, not for a
million of them (the management API would page).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from medianest.errors import NotFoundError, ValidationError
from medianest.messaging.backends.amqp_consumer import amqp_message
from medianest.messaging.backends.delivery import undecodable
from medianest.messaging.base import DeadLetter, Message
from medianest.messaging.wire import decode, encode

if TYPE_CHECKING:
    from medianest.messaging.backends.amqp import AmqpBroker

Incoming = AbstractIncomingMessage


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def dead_letter_of(broker: AmqpBroker, raw: Incoming) -> DeadLetter:
    """Read a message of the dead-letter queue: ours (``x-medianest-*`` headers) or one
    RabbitMQ dead-lettered itself (``x-death``: rejected, expired, over a length limit)."""
    headers = dict(raw.headers or {})
    try:
        message = decode(raw.body)
    except ValidationError:
        message = undecodable(raw.routing_key or "unknown", raw.body)
    deaths = headers.get("x-death")
    first = deaths[0] if isinstance(deaths, list) and deaths else None
    death: dict[str, Any] = dict(first) if isinstance(first, dict) else {}
    group = _text(headers.get("x-medianest-group", "")) or _text(
        death.get("queue", "")
    ).removeprefix(broker.group_queue(""))
    error = headers.get("x-medianest-error")
    failed_at = headers.get("x-medianest-failed-at")
    return DeadLetter(
        id=raw.message_id or message.id,
        message=message,
        group=group,
        error=_text(error)
        if error is not None
        else f"dead-lettered by RabbitMQ: {death.get('reason')}",
        attempts=int(str(headers.get("x-medianest-attempts", message.attempt))),
        failed_at=datetime.fromisoformat(_text(failed_at)) if failed_at else datetime.now(UTC),
    )


class AmqpDeadLetters:
    """The dead-letter queue of one broker (module docstring)."""

    def __init__(self, broker: AmqpBroker) -> None:
        self.broker = broker

    @contextlib.asynccontextmanager
    async def _browse(self, doing: str) -> AsyncIterator[tuple[AbstractChannel, list[Incoming]]]:
        """A channel of its own and every dead letter, unacknowledged: put back in place
        when the channel closes, unless acknowledged inside the block."""
        async with self.broker.temporary_channel(doing) as channel:
            queue = await channel.declare_queue(self.broker.dead_letter_queue, durable=True)
            count = queue.declaration_result.message_count or 0
            letters: list[Incoming] = []
            for _ in range(count):
                got = await queue.get(no_ack=False, fail=False, timeout=self.broker.timeout)
                if got is None:
                    break
                letters.append(got)
            yield channel, letters

    async def scan(self, topic: str | None, group: str | None, limit: int) -> list[DeadLetter]:
        async with self._browse("reading dead letters") as (_, letters):
            found = [dead_letter_of(self.broker, raw) for raw in letters]
        wanted = [
            d
            for d in found
            if (topic is None or d.message.topic == topic) and (group is None or d.group == group)
        ]
        return wanted[:limit]

    async def get(self, dead_letter_id: str) -> DeadLetter:
        """One dead letter by id; NotFoundError if there is none."""
        async with self._browse("reading a dead letter") as (_, letters):
            for raw in letters:
                if raw.message_id == dead_letter_id:
                    return dead_letter_of(self.broker, raw)
        raise NotFoundError(f"no dead letter {dead_letter_id!r}")

    async def replay(self, dead_letter_id: str) -> Message:
        """Publish the message (attempt 1) straight to its group's queue, confirmed, then
        acknowledge (remove) the dead letter."""
        async with self._browse("replaying a dead letter") as (channel, letters):
            for raw in letters:
                if raw.message_id != dead_letter_id:
                    continue
                letter = dead_letter_of(self.broker, raw)
                message, text = encode(letter.message)
                queue = await channel.declare_queue(
                    self.broker.group_queue(letter.group),
                    durable=True,
                    arguments=self.broker.group_arguments(),
                )
                self.broker.declared.add(queue.name)
                await channel.default_exchange.publish(
                    amqp_message(message, text), queue.name, timeout=self.broker.timeout
                )
                await raw.ack()
                return message
        raise NotFoundError(f"no dead letter {dead_letter_id!r}")

    async def purge(self, topic: str | None, group: str | None) -> int:
        if topic is None and group is None:
            async with self.broker.temporary_channel("purging dead letters") as channel:
                queue = await channel.declare_queue(self.broker.dead_letter_queue, durable=True)
                result = await queue.purge(timeout=self.broker.timeout)
                return int(result.message_count or 0)
        purged = 0
        async with self._browse("purging dead letters") as (_, letters):
            for raw in letters:
                letter = dead_letter_of(self.broker, raw)
                if (topic is None or letter.message.topic == topic) and (
                    group is None or letter.group == group
                ):
                    await raw.ack()
                    purged += 1
        return purged
