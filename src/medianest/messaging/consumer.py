"""The consumer loop of the embedded brokers: claim, run the handler, settle, drain.

A backend that stores deliveries itself (memory, SQLite) subclasses :class:`Consumer` and
supplies five operations on its storage -- claim up to *n* deliveries, ack one, retry one
after a delay, dead-letter one, release one -- plus how long to wait when there is no work.
This class keeps the broker contract on top of them, the same way on every such backend:

* a **dispatcher** task claims as many deliveries as there are free handler slots
  (``concurrency``) and starts one task per delivery. It claims again when woken (a publish
  or release in this process), when a retry falls due, when its last claim filled every
  slot, or after the backend's idle timeout (its poll interval); a handler finishing alone
  does not cost a claim;
* a delivery whose **attempt** is beyond ``max_attempts`` (earlier deliveries were never
  settled: their consumer was cancelled or killed) is dead-lettered without running;
* the handler **returns** → ack (the acks of handlers that return while an ack is on its
  way go together in the next one: :meth:`Consumer._ack_many`); it **raises** → retry
  after ``retry.delay(attempt)``, or dead-letter with the error once ``attempt`` reached
  ``max_attempts``; it is **cancelled** → the delivery is released unacked, visible again
  at once;
* :meth:`close` stops claiming, gives running handlers ``drain_timeout`` seconds, then
  cancels the rest: a handler still running has its delivery released, never acked; a task
  cancelled while sending the acks of handlers that returned leaves them to ``close``, which
  sends them before it returns;
* the handler runs in an OpenTelemetry consumer span continuing the message's
  ``traceparent``, and its outcome and duration go to :mod:`medianest.messaging.metrics`.

A settle operation that fails (the storage is down) is logged and dropped: the delivery is
still leased, so it comes back when the lease runs out -- at least once, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace

from medianest.errors import ValidationError
from medianest.messaging.base import Handler, Message, RetryPolicy, Subscription
from medianest.messaging.metrics import MessagingMetrics
from medianest.observability.logging import get_logger

_log = get_logger("medianest.messaging")
_tracer = trace.get_tracer("medianest.messaging")
MAX_ERROR_TEXT = 4000


@dataclass(eq=False)
class Delivery:
    """One claimed delivery: the message (``attempt`` is this delivery's number), the
    backend's handle on it, and the error of the previous attempt if any."""

    message: Message
    handle: Any
    last_error: str | None = None


_tracing = False
_MISSING = object()
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def tracing() -> bool:
    """Whether an OpenTelemetry SDK (a real tracer provider) is installed: without one a
    span records nothing, so no span is made. Once one is installed it stays (OpenTelemetry
    sets the provider once), so only the answer "yes" is kept. While none is set (its
    global still ``None``, no provider named in the environment) the answer is "no" at
    once: ``get_tracer_provider()`` looks the environment up on every call, which cost
    as much as the rest of the handler's bookkeeping."""
    global _tracing
    if not _tracing:
        if getattr(trace, "_TRACER_PROVIDER", _MISSING) is None and not _PROVIDER_FROM_ENV:
            return False
        _tracing = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return _tracing


async def run_handler(
    handler: Handler, message: Message, group: str, metrics: MessagingMetrics
) -> Exception | None:
    """Run ``handler`` on ``message`` -- in an OpenTelemetry consumer span continuing the
    message's ``traceparent`` when :func:`tracing` -- and record its outcome and duration;
    the exception it raised, or ``None`` when it returned. A cancellation propagates: the
    caller gives the delivery back. Every consumer of every backend runs handlers here."""
    started = time.perf_counter()
    try:
        if not tracing():
            await handler(message)
        else:
            with _tracer.start_as_current_span(
                f"{message.topic} process",
                context=propagate.extract(dict(message.headers)),
                kind=trace.SpanKind.CONSUMER,
            ):
                await handler(message)
    except Exception as exc:
        metrics.handled(message.topic, group, time.perf_counter() - started, ok=False)
        return exc
    metrics.handled(message.topic, group, time.perf_counter() - started, ok=True)
    return None


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of a handler's exception, as dead letters keep it."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_TEXT]


class Consumer(Subscription, ABC):
    """One subscription of an embedded broker (module docstring)."""

    def __init__(
        self,
        *,
        pattern: str,
        group: str,
        handler: Handler,
        retry: RetryPolicy,
        concurrency: int,
        drain_timeout: float,
        metrics: MessagingMetrics,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(
                f"concurrency must be a positive integer, not {concurrency!r}",
                errors={"concurrency": "invalid"},
            )
        self.pattern = pattern
        self.group = group
        self.handler = handler
        self.retry = retry
        self.concurrency = concurrency
        self.drain_timeout = drain_timeout
        self.metrics = metrics
        self._event = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._wanted = True
        self._look_at = 0.0
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._acks: list[Delivery] = []
        self._acking = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pattern!r}, group={self.group!r})"

    # -- what a backend supplies ---------------------------------------------------------

    @abstractmethod
    async def _claim(self, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` deliveries of this group, oldest first, incrementing each
        one's attempt."""

    @abstractmethod
    async def _ack(self, delivery: Delivery) -> None: ...

    async def _ack_many(self, deliveries: list[Delivery]) -> None:
        """Ack several deliveries whose handlers returned; a backend that can do it in one
        operation overrides this (the default acks them one by one)."""
        for delivery in deliveries:
            await self._ack(delivery)

    @abstractmethod
    async def _retry(self, delivery: Delivery, delay: float, error: str) -> None:
        """Make ``delivery`` visible again after ``delay`` seconds, remembering ``error``."""

    @abstractmethod
    async def _dead_letter(self, delivery: Delivery, error: str) -> None: ...

    @abstractmethod
    async def _release(self, delivery: Delivery) -> None:
        """Give an unfinished delivery back, visible at once, without acking it."""

    @abstractmethod
    def _idle_timeout(self) -> float:
        """Seconds after a claim before claiming again unprompted (a poll, or the earliest
        retry known to be due), unless :meth:`wake` or :meth:`look_within` say sooner."""

    async def _stopped(self) -> None:
        """Called once when the consumer has drained (backends release resources here)."""
        return None

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        name = f"consumer {self.group} {self.pattern}"
        self._dispatcher = asyncio.create_task(self._dispatch(), name=name)

    def wake(self) -> None:
        """There may be work: claim again now."""
        self._wanted = True
        self._event.set()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def close(self) -> None:
        """Stop claiming, let running handlers finish within ``drain_timeout``, cancel the
        rest (the deliveries of unfinished handlers are released, not acked; acks of
        returned ones that were not sent yet are sent here). Idempotent."""
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        self._closed = asyncio.get_running_loop().create_future()
        try:
            await self._drain()
        finally:
            self._closed.set_result(None)

    async def _drain(self) -> None:
        self._stopping = True
        self._event.set()
        if self._dispatcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        running = set(self._running)
        if running:
            _, unfinished = await asyncio.wait(running, timeout=self.drain_timeout)
            if unfinished:
                _log.warning(
                    "tasks still running at shutdown were cancelled; the messages of "
                    "unfinished handlers go back to the group unacked",
                    group=self.group,
                    pattern=self.pattern,
                    cancelled=len(unfinished),
                    drain_timeout=self.drain_timeout,
                )
                for task in unfinished:
                    task.cancel()
                await asyncio.wait(unfinished)
        if self._acks and not self._acking:  # the task sending them was cancelled
            await self._send_acks()
        await self._stopped()

    # -- the dispatcher -------------------------------------------------------------------

    def look_within(self, seconds: float) -> None:
        """Claim again at the latest ``seconds`` from now (a retry of this group is due)."""
        at = asyncio.get_running_loop().time() + max(0.0, seconds)
        if at < self._look_at:
            self._look_at = at
            self._event.set()

    async def _dispatch(self) -> None:
        """Claim when there may be work -- woken, a poll or a retry due, or the last claim
        filled every free slot -- and there is a free slot; else sleep until one of those."""
        loop = asyncio.get_running_loop()
        failing, more = False, False
        while not self._stopping:
            free = self.concurrency - len(self._running)
            if free > 0 and (self._wanted or more or loop.time() >= self._look_at):
                self._wanted = False
                self._event.clear()
                try:
                    batch = await self._claim(free)
                except Exception as exc:
                    if not failing:
                        _log.warning("claiming messages failed", group=self.group, error=str(exc))
                    failing, more, batch = True, False, []
                else:
                    if failing:
                        _log.info("claiming messages recovered", group=self.group)
                    failing, more = False, len(batch) >= free
                self._look_at = loop.time() + self._idle_timeout()
                if self._stopping:
                    for delivery in batch:
                        await self._settle("release", self._release(delivery), delivery)
                    return
                for delivery in batch:
                    task = asyncio.create_task(self._process(delivery))
                    self._running.add(task)
                    task.add_done_callback(self._finished)
                continue
            self._event.clear()
            if free > 0:
                await self._sleep(self._look_at - loop.time())
            else:
                await self._event.wait()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._event.set()

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()

    # -- one delivery ---------------------------------------------------------------------

    async def _process(self, delivery: Delivery) -> None:
        message = delivery.message
        if message.attempt > self.retry.max_attempts:
            error = (
                f"delivered {message.attempt - 1} times without an ack (its consumers were "
                "stopped or died mid-handler)"
            )
            if delivery.last_error:
                error += f"; last error: {delivery.last_error}"
            made = dataclasses.replace(message, attempt=message.attempt - 1)
            await self._give_up(dataclasses.replace(delivery, message=made), error[:MAX_ERROR_TEXT])
            return
        try:
            failure = await run_handler(self.handler, message, self.group, self.metrics)
        except BaseException:
            await self._settle("release", self._release(delivery), delivery)
            raise
        if failure is not None:
            await self._failed(delivery, failure)
            return
        self._acks.append(delivery)
        if not self._acking:
            await self._send_acks()

    async def _send_acks(self) -> None:
        """Send the acks of returned handlers, those that come in meanwhile with the next
        batch: one ack operation in flight per consumer, run by the handler task that found
        none running (the others return at once, their acks go with its next batch).

        The task sending may be cancelled mid-batch (:meth:`close` cancels it once
        ``drain_timeout`` is up): the batch then goes back to the front of the queue, for
        :meth:`_drain` or the next handler to return to send -- acks that already reached
        the storage are sent twice, which acking allows."""
        self._acking = True
        try:
            while self._acks:
                batch, self._acks = self._acks, []
                try:
                    await self._settle("ack", self._ack_many(batch), batch[0], len(batch))
                except BaseException:
                    self._acks[:0] = batch
                    raise
        finally:
            self._acking = False

    async def _failed(self, delivery: Delivery, exc: Exception) -> None:
        message, error = delivery.message, describe_error(exc)
        if message.attempt >= self.retry.max_attempts:
            await self._give_up(delivery, error, exc)
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
        await self._settle("retry", self._retry(delivery, delay, error), delivery)

    async def _give_up(
        self, delivery: Delivery, error: str, exc: BaseException | None = None
    ) -> None:
        message = delivery.message
        if await self._settle("dead-letter", self._dead_letter(delivery, error), delivery):
            self.metrics.dead_lettered(message.topic, self.group)
            _log.error(
                "message dead-lettered",
                topic=message.topic,
                group=self.group,
                message_id=message.id,
                attempts=message.attempt,
                error=error,
                exc_info=exc,
            )

    async def _settle(
        self, action: str, operation: Awaitable[None], delivery: Delivery, count: int = 1
    ) -> bool:
        try:
            await operation
        except Exception as exc:
            _log.warning(
                f"could not {action} a message; it comes back when its lease runs out",
                group=self.group,
                message_id=delivery.message.id,
                messages=count,
                error=str(exc),
            )
            return False
        return True
