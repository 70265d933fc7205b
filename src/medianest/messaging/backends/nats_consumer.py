"""The consumer side of :mod:`medianest.messaging.backends.nats`: one subscription.

A subscription pulls from its group's durable consumer through pull requests of its own
(``$JS.API.CONSUMER.MSG.NEXT``) answered on a private inbox, keeping as many messages
requested as it has free handler slots: a request asks for ``batch`` messages and stays
open on the server until it is filled or ``expires`` (30 s), with idle heartbeats. Messages
are handed to handlers the moment they arrive, so an idle consumer answers a publish in one
server hop, and a busy one keeps its slots full without a request per message. (nats-py's
``fetch(n)`` waits for all ``n`` messages or its timeout, which would hold a lone message
back on an idle stream.) The server ends a request with a status (408 expired, 409) that
says how many of its messages were not sent; a request that goes quiet for two heartbeats,
or a reconnection, is forgotten and asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub
from nats.errors import Error as NatsError

from medianest.errors import BackendError, ValidationError
from medianest.messaging.backends.delivery import (
    HandlerPool,
    error_text,
    pause_rounds,
    undecodable,
)
from medianest.messaging.backends.upkeep import Backoff
from medianest.messaging.base import Handler, Message, RetryPolicy, Subscription
from medianest.messaging.wire import decode
from medianest.observability import get_logger

if TYPE_CHECKING:
    from medianest.messaging.backends.nats import NatsBroker

REPLAY_HEADER = "Medianest-Group"
"""Header of a replayed message: the one group that handles it (the others ack it)."""

_log = get_logger("medianest.messaging.nats")
_EXPIRES = 30.0
ACK_PAUSE_ROUNDS = 4
"""Event loop rounds an ack waits for others to go with it (:func:`pause_rounds`)."""
_QUIET = (NatsError, BackendError, OSError)


def delivery_count(msg: Msg) -> int:
    """How many times JetStream has delivered ``msg``: the token of its ack subject that
    nats-py's ``msg.metadata`` reads (``$JS.ACK.<stream>.<consumer>.<delivered>...``, or
    with the domain and account first), without the rest of that parse -- a timestamp and
    two dataclasses for every message. Anything else goes to nats-py."""
    tokens = msg.reply.split(".") if msg.reply else []
    if (len(tokens) == 9 or len(tokens) >= 11) and tokens[:2] == ["$JS", "ACK"]:
        delivered = tokens[4] if len(tokens) == 9 else tokens[6]
        if delivered.isdigit():
            return int(delivered) or 1
    return msg.metadata.num_delivered or 1


class NatsSubscription(Subscription):
    """One member of ``group`` pulling from its durable consumer (module docstring)."""

    def __init__(
        self,
        broker: NatsBroker,
        group: str,
        durable: str,
        handler: Handler,
        retry: RetryPolicy,
        concurrency: int,
    ) -> None:
        self.broker, self.group, self.durable, self.policy = broker, group, durable, retry
        self.pool: HandlerPool[Msg] = HandlerPool(
            handler,
            self,
            group=group,
            retry=retry,
            concurrency=concurrency,
            drain_timeout=broker.drain_timeout,
            metrics=broker.metrics,
            touch_every=broker.visibility_timeout / 3,
            on_room=self._wake_up,
        )
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{broker.stream}.{durable}"
        self._inbox = ""
        self._inbox_sub: NatsSub | None = None
        self._outstanding = 0
        self._heard = time.monotonic()
        self._wake = asyncio.Event()
        self._puller: asyncio.Task[None] | None = None
        self._acks: list[Msg] = []
        self._closed = False

    async def start(self) -> None:
        self._inbox = self.broker.nc.new_inbox()
        self._inbox_sub = await self.broker.nc.subscribe(self._inbox, cb=self._on_inbox)
        self._puller = asyncio.create_task(self._pull_loop(), name=f"nats puller {self.group}")

    def _wake_up(self) -> None:
        """A handler slot freed up: pull again once enough slots are free (not for each)."""
        want = self.pool.free - self._outstanding
        if want > 0 and (self._outstanding == 0 or want >= max(1, self.pool.concurrency // 2)):
            self._wake.set()

    def reconnected(self) -> None:
        """Pull requests die with a server restart: ask again."""
        self._outstanding = 0
        self._wake.set()

    async def _pull_loop(self) -> None:
        heartbeat = self.broker.heartbeat
        request = {"expires": int(_EXPIRES * 1e9), "idle_heartbeat": int(heartbeat * 1e9)}
        backoff = Backoff()
        while not self._closed:
            want = self.pool.free - self._outstanding
            enough = self._outstanding == 0 or want >= max(1, self.pool.concurrency // 2)
            pause = heartbeat
            if want > 0 and enough and self.broker.nc.is_connected:
                try:
                    payload = json.dumps({"batch": want, **request}).encode()
                    await self.broker.nc.publish(self._next_subject, payload, reply=self._inbox)
                    self._outstanding += want
                    self._heard = time.monotonic()
                    backoff.reset()
                except (NatsError, OSError) as exc:
                    pause = backoff.next()
                    _log.debug("broker_pull_failed", group=self.group, error=error_text(exc))
            elif self._outstanding and time.monotonic() - self._heard > 2 * heartbeat + 1:
                self._outstanding = 0  # the request died with a connection: ask again
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wake.wait()

    async def _on_inbox(self, msg: Msg) -> None:
        self._heard = time.monotonic()
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._outstanding = max(0, self._outstanding - 1)
            self._deliver(msg)
            return
        if status == "100":
            return  # idle heartbeat
        assert msg.headers is not None
        unsent = msg.headers.get("Nats-Pending-Messages")
        self._outstanding = max(0, self._outstanding - int(unsent)) if unsent else 0
        if status not in ("404", "408"):
            _log.debug("broker_pull_status", group=self.group, status=status, headers=msg.headers)
        self._wake.set()

    def _deliver(self, msg: Msg) -> None:
        try:
            message = decode(msg.data, delivery_count(msg))
        except ValidationError as exc:
            error = f"undecodable envelope: {error_text(exc)}"
            stand_in = undecodable(self.broker.topic_of(msg.subject), msg.data)
            self.pool.background(self.pool.reject(stand_in, msg, error))
            return
        target = msg.headers.get(REPLAY_HEADER) if msg.headers else None
        if target is not None and target != self.group:
            self.pool.background(msg.ack())  # a replay for another group
            return
        self.pool.submit(message, msg)

    # -- settlement (see HandlerPool) -----------------------------------------------------

    async def ack(self, msg: Msg, message: Message) -> None:
        """Queue the ack; :meth:`_send_acks` sends the queue a few loop rounds later, in
        one socket write (a JetStream ack is a message of its own, unanswered)."""
        self._acks.append(msg)
        if len(self._acks) == 1:
            self.pool.background(self._send_acks())

    async def _send_acks(self) -> None:
        await pause_rounds(ACK_PAUSE_ROUNDS)
        acks, self._acks = self._acks, []
        for msg in acks:
            try:
                await msg.ack()
            except _QUIET as exc:  # not acked: the server delivers it again after ack_wait
                _log.warning(
                    "could not ack a message; the server delivers it again later",
                    group=self.group,
                    error=error_text(exc),
                )

    async def retry(self, msg: Msg, message: Message, delay: float) -> None:
        await msg.nak(delay=delay)

    async def release(self, msg: Msg, message: Message) -> None:
        await msg.nak()

    async def dead_letter(self, msg: Msg, message: Message, error: str, attempts: int) -> None:
        try:
            await self.broker.dead.add(message, self.group, error, attempts)
        except Exception:
            with contextlib.suppress(*_QUIET):
                await msg.nak(delay=self.policy.delay(attempts))
            raise
        await msg.ack()

    async def touch(self, msg: Msg) -> None:
        await msg.in_progress()

    async def close(self) -> None:
        """Stop pulling, drain the handlers (what never finished is given back, nak)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        puller, self._puller = self._puller, None
        if puller is not None:
            puller.cancel()
            await asyncio.gather(puller, return_exceptions=True)
        if self._inbox_sub is not None:
            with contextlib.suppress(*_QUIET):
                await self._inbox_sub.unsubscribe()
        await self.pool.drain()
        self.broker.forget(self)
