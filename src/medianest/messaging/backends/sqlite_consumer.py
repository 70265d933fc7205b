"""The subscriptions of :class:`~medianest.messaging.backends.sqlite.SqliteBroker`.

Each one claims under a lease owner id of its own (a fresh UUID), so acks, retries and
releases apply only while it still holds the lease: a consumer whose lease ran out (it was
too slow, or its process froze) cannot settle a delivery that another consumer has taken
since. Leases of running handlers are renewed every third of the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from medianest.errors import NotFoundError, ValidationError
from medianest.messaging.backends import sqlite_store as sql
from medianest.messaging.base import Message, uuid7
from medianest.messaging.consumer import Consumer, Delivery
from medianest.messaging.wire import decode
from medianest.observability.logging import get_logger

if TYPE_CHECKING:
    from medianest.messaging.backends.sqlite import SqliteBroker

_log = get_logger("medianest.messaging")


class SqliteConsumer(Consumer):
    """A subscription of :class:`SqliteBroker`: claims under its own lease owner id."""

    def __init__(self, broker: SqliteBroker, **options: Any) -> None:
        super().__init__(**options)
        self._broker = broker
        self._store = broker.store
        self._owner = uuid.uuid4().hex
        self._renewer: asyncio.Task[None] | None = None

    def start(self) -> None:
        super().start()
        self._renewer = asyncio.create_task(self._renew_forever(), name=f"lease {self.group}")

    async def _claim(self, limit: int) -> list[Delivery]:
        now = time.time()
        rows = await self._store.run(
            sql.CLAIM,
            {
                "owner": self._owner,
                "until": now + self._broker.lease,
                "grp": self.group,
                "now": now,
                "limit": limit,
            },
        )
        deliveries = []
        for row_id, _seq, topic, attempt, last_error, envelope in sorted(rows, key=lambda r: r[1]):
            try:
                message = decode(envelope, attempt)
            except ValidationError as exc:
                stub = Message(topic=topic, payload=envelope, attempt=attempt)
                await self._give_up(Delivery(stub, row_id), f"unreadable envelope: {exc}")
                continue
            deliveries.append(Delivery(message, row_id, last_error))
        return deliveries

    def _idle_timeout(self) -> float:
        return self._broker.poll_interval

    async def _ack(self, delivery: Delivery) -> None:
        await self._ack_many([delivery])

    async def _ack_many(self, deliveries: list[Delivery]) -> None:
        """One DELETE for all of them (while this consumer still holds their leases)."""
        ids = json.dumps([delivery.handle for delivery in deliveries])
        await self._store.run(sql.ACK, (self._owner, ids))
        if any(delivery.message.key is not None for delivery in deliveries):
            # the next message of those keys may go now
            self._broker._wake(self.group)

    async def _retry(self, delivery: Delivery, delay: float, error: str) -> None:
        due = time.time() + delay
        await self._store.run(sql.RETRY, (due, error, delivery.handle, self._owner))
        for consumer in self._broker._consumers:
            if consumer.group == self.group:
                consumer.look_within(delay)

    async def _release(self, delivery: Delivery) -> None:
        await self._store.run(sql.RELEASE, (time.time(), delivery.handle, self._owner))
        self._broker._wake(self.group)

    async def _dead_letter(self, delivery: Delivery, error: str) -> None:
        message = delivery.message
        envelope = json.dumps(message.to_wire(), ensure_ascii=False)
        async with self._store.transaction() as tx:
            taken = await tx.statement(sql.TAKE_FOR_DEAD, (delivery.handle, self._owner))
            if taken:
                group, topic = taken[0]
                await tx.statement(
                    sql.ADD_DEAD,
                    (
                        uuid7(),
                        group,
                        topic,
                        message.id,
                        envelope,
                        error,
                        message.attempt,
                        time.time(),
                    ),
                )
        if not taken:
            raise NotFoundError("the delivery's lease was lost before it could be dead-lettered")
        if message.key is not None:
            self._broker._wake(self.group)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._broker.lease / 3)
            if not self.in_flight:
                continue
            try:
                await self._store.run(sql.RENEW, (time.time() + self._broker.lease, self._owner))
            except Exception as exc:
                _log.warning("renewing message leases failed", group=self.group, error=str(exc))

    async def _stopped(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        self._broker._consumers.discard(self)
