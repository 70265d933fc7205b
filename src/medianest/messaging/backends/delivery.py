"""What the server brokers (Redis Streams, RabbitMQ, NATS JetStream) share.

* :class:`HandlerPool`: runs handlers, at most ``concurrency`` at a time, and settles each
  delivery through the backend's :class:`Settlement` the way the embedded brokers'
  :class:`~medianest.messaging.consumer.Consumer` does (same outcomes, logs, metrics and
  trace spans): the handler **returns** → ack; **raises** → a delayed retry, or a dead
  letter once ``attempt`` reached ``max_attempts``; is **cancelled** (by itself, or by a
  drain that ran out of time) → released unacknowledged, to come back at once; a delivery
  whose attempt is already beyond ``max_attempts`` (its earlier consumers died) is
  dead-lettered without running. Deliveries beyond the free slots wait in a backlog, in
  order; handlers running longer than ``touch_every`` are "touched" so that the server does
  not hand their message to another consumer meanwhile (the visibility timeout);
* :func:`pause_rounds`: how a consumer lets a few event loop rounds pass before its next
  request to the server, so that requests come fuller under load;
* :func:`undecodable`: a stand-in message for a body that is not an envelope, so that it
  can be dead-lettered (nothing is silently dropped);
* :func:`envelope`: the JSON of a message being delivered again (its attempt kept).

The wire form is :mod:`medianest.messaging.wire`'s, as on every backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from medianest.errors import ValidationError
from medianest.messaging.base import Handler, Message, RetryPolicy, uuid7
from medianest.messaging.consumer import MAX_ERROR_TEXT, describe_error, run_handler
from medianest.messaging.metrics import MessagingMetrics
from medianest.observability import get_logger

D = TypeVar("D")
D_contra = TypeVar("D_contra", contravariant=True)
_log = get_logger("medianest.messaging")


class Settlement(Protocol[D_contra]):
    """What a backend does with a delivery once its handler is done (or will never be)."""

    async def ack(self, delivery: D_contra, message: Message) -> None: ...

    async def retry(self, delivery: D_contra, message: Message, delay: float) -> None:
        """Deliver ``message`` to the group again after ``delay`` s, ``attempt`` + 1."""

    async def dead_letter(
        self, delivery: D_contra, message: Message, error: str, attempts: int
    ) -> None: ...

    async def release(self, delivery: D_contra, message: Message) -> None:
        """Give back an unfinished delivery, unacknowledged, to be delivered again now."""

    async def touch(self, delivery: D_contra) -> None:
        """Tell the server the handler of ``delivery`` is still running."""


async def pause_rounds(rounds: int) -> None:
    """Let the event loop run ``rounds`` times before going on.

    A consumer that has just been handed messages waits this long before it asks the
    server again (a read, a batch of acks): meanwhile its handlers start and return, so
    their acks go with that request, and the publishers of this process get their turn, so
    it finds more messages waiting. Under load each round takes a while and requests come
    fuller and fewer (every one is a socket write, the dearest part of a message here);
    on an idle loop the rounds pass in microseconds, so a lone message does not wait."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def undecodable(topic: str, body: bytes | str) -> Message:
    """A stand-in for a body that is not an envelope, so that it can be dead-lettered."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return Message(topic=topic, payload=text, id=uuid7(), headers={"medianest-undecodable": "1"})


def error_text(exc: BaseException) -> str:
    return describe_error(exc)


def consumer_name() -> str:
    """A consumer name unique to this subscription: host, process and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class HandlerPool(Generic[D]):
    """Runs ``handler`` for each submitted delivery of ``group`` (module docstring);
    ``on_room`` is called whenever a slot frees up."""

    def __init__(
        self,
        handler: Handler,
        settlement: Settlement[D],
        *,
        group: str,
        retry: RetryPolicy,
        concurrency: int,
        drain_timeout: float,
        metrics: MessagingMetrics,
        touch_every: float | None = None,
        on_room: Callable[[], None] | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(
                f"concurrency must be a positive integer, not {concurrency!r}",
                errors={"concurrency": "invalid"},
            )
        self.handler, self.settlement, self.group, self.retry = handler, settlement, group, retry
        self.concurrency, self.drain_timeout, self.metrics = concurrency, drain_timeout, metrics
        self._touch_every, self._on_room = touch_every, on_room
        self._running: dict[asyncio.Task[None], tuple[D, float]] = {}
        self._backlog: deque[tuple[Message, D]] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._toucher: asyncio.Task[None] | None = None
        self._helpers: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def free(self) -> int:
        """How many more deliveries this pool can take now (running + backlog < slots)."""
        return max(0, self.concurrency - len(self._running) - len(self._backlog))

    @property
    def busy(self) -> int:
        return len(self._running) + len(self._backlog)

    async def wait_free(self) -> None:
        """Return once a slot is free."""
        while self.free <= 0:
            self._room.clear()
            await self._room.wait()

    def submit(self, message: Message, delivery: D) -> None:
        """Run the handler on ``message`` now, or as soon as a slot is free."""
        if self._closed:
            self.background(self._quietly("release", self.settlement.release(delivery, message)))
        elif message.attempt > self.retry.max_attempts:
            self.background(self._poisoned(message, delivery))
        elif len(self._running) < self.concurrency:
            self._start(message, delivery)
        else:
            self._backlog.append((message, delivery))
        if self._touch_every is not None and self._toucher is None and not self._closed:
            self._toucher = asyncio.create_task(self._touch_loop(self._touch_every))

    async def run(self, message: Message, delivery: D) -> None:
        """Run the handler in the calling task, for a driver that already gives every
        delivery its own task and bounds them (AMQP prefetch); drained like the others."""
        task = asyncio.current_task()
        if self._closed or task is None:
            await self._quietly("release", self.settlement.release(delivery, message))
            return
        if message.attempt > self.retry.max_attempts:
            await self._poisoned(message, delivery)
            return
        self._running[task] = (delivery, time.monotonic())
        try:
            await self._process(message, delivery)
        finally:
            self._running.pop(task, None)
            self._room.set()

    async def reject(self, message: Message, delivery: D, error: str) -> None:
        """Dead-letter a delivery that cannot even be read (not an envelope): ``message``
        is its :func:`undecodable` stand-in."""
        await self._give_up(message, delivery, error, 1)

    def background(self, work: Awaitable[object]) -> None:
        """Run a settling operation outside any handler slot (kept until it is done)."""

        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    def _start(self, message: Message, delivery: D) -> None:
        task = asyncio.create_task(self._process(message, delivery))
        self._running[task] = (delivery, time.monotonic())
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if self._backlog and not self._closed:
            self._start(*self._backlog.popleft())
        self._room.set()
        if self._on_room is not None:
            self._on_room()

    async def _process(self, message: Message, delivery: D) -> None:
        try:
            failure = await run_handler(self.handler, message, self.group, self.metrics)
        except BaseException:
            await self._quietly("release", self.settlement.release(delivery, message))
            raise
        if failure is not None:
            await self._failed(message, delivery, failure)
            return
        try:  # what _quietly does, without a coroutine more for every message
            await self.settlement.ack(delivery, message)
        except Exception as exc:
            self._could_not("ack", exc)

    async def _failed(self, message: Message, delivery: D, exc: Exception) -> None:
        error = describe_error(exc)
        if message.attempt >= self.retry.max_attempts:
            await self._give_up(message, delivery, error, message.attempt, exc)
            return
        delay = self.retry.delay(message.attempt)
        _log.info(
            "message handler failed; retrying later",
            topic=message.topic,
            group=self.group,
            message_id=message.id,
            attempt=message.attempt,
            retry_in=delay,
            error=error,
        )
        await self._quietly("retry", self.settlement.retry(delivery, message, delay))

    async def _poisoned(self, message: Message, delivery: D) -> None:
        attempts = message.attempt - 1
        error = (
            f"delivered {attempts} times without an ack (its consumers were stopped or died "
            "mid-handler)"
        )
        made = dataclasses.replace(message, attempt=attempts)
        await self._give_up(made, delivery, error, attempts)

    async def _give_up(
        self,
        message: Message,
        delivery: D,
        error: str,
        attempts: int,
        exc: BaseException | None = None,
    ) -> None:
        error = error[:MAX_ERROR_TEXT]
        dead = self.settlement.dead_letter(delivery, message, error, attempts)
        if await self._quietly("dead-letter", dead):
            self.metrics.dead_lettered(message.topic, self.group)
            _log.error(
                "message dead-lettered",
                topic=message.topic,
                group=self.group,
                message_id=message.id,
                attempts=attempts,
                error=error,
                exc_info=exc,
            )

    async def _quietly(self, action: str, operation: Awaitable[None]) -> bool:
        try:
            await operation
        except Exception as exc:
            self._could_not(action, exc)
            return False
        return True

    def _could_not(self, action: str, exc: Exception) -> None:
        _log.warning(
            f"could not {action} a message; the server delivers it again later",
            group=self.group,
            error=error_text(exc),
        )

    async def _touch_loop(self, every: float) -> None:
        while not self._closed:
            await asyncio.sleep(every)
            old = time.monotonic() - every
            for delivery, started in list(self._running.values()):
                if started <= old:
                    await self._quietly("extend the visibility of", self.settlement.touch(delivery))

    async def drain(self) -> None:
        """Stop taking deliveries; release the backlog; wait ``drain_timeout`` for running
        handlers, then cancel the rest (their deliveries are released, never acked)."""
        self._closed = True
        backlog, self._backlog = list(self._backlog), deque()
        for message, delivery in backlog:
            await self._quietly("release", self.settlement.release(delivery, message))
        if self._running:
            _, unfinished = await asyncio.wait(list(self._running), timeout=self.drain_timeout)
            if unfinished:
                _log.warning(
                    "handlers still running at shutdown were cancelled; their messages "
                    "go back to the group unacked",
                    group=self.group,
                    cancelled=len(unfinished),
                    drain_timeout=self.drain_timeout,
                )
                for task in unfinished:
                    task.cancel()
                await asyncio.wait(unfinished)
        if self._toucher is not None:
            self._toucher.cancel()
            await asyncio.gather(self._toucher, return_exceptions=True)
        if self._helpers:
            await asyncio.wait(set(self._helpers), timeout=self.drain_timeout)
        self._room.set()


def envelope(message: Message) -> str:
    """The JSON envelope of a message already checked by :func:`~medianest.messaging.wire.
    encode` once (a redelivery keeps its ``attempt``, which ``encode`` would reset)."""
    return json.dumps(message.to_wire(), ensure_ascii=False)
