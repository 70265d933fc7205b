"""Acknowledgements of a Redis Streams subscription, sent with its next read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from medianest.messaging.backends.delivery import error_text
from medianest.observability import get_logger

if TYPE_CHECKING:
    from medianest.messaging.backends.redis import RedisStreamsBroker

_log = get_logger("medianest.messaging.redis")


@dataclass(frozen=True, slots=True)
class Entry:
    stream: str
    id: str


class Acks:
    """Acknowledgements waiting to be sent. The consumer's next XREADGROUP carries them in
    the same pipeline (one round trip for both, which is most of what a message costs); if
    it does not come within ``linger`` seconds (its read is blocked: no new message), they
    go on their own. An XACK that fails is tried again with the next ones; a process that
    dies with acks not yet sent has its messages delivered again (at least once)."""

    def __init__(self, broker: RedisStreamsBroker, group: str, linger: float = 0.002) -> None:
        self.broker, self.group, self.linger = broker, group, linger
        self._pending: dict[str, list[str]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, entry: Entry) -> None:
        self._pending.setdefault(entry.stream, []).append(entry.id)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self._send_alone)

    def take(self) -> dict[str, list[str]]:
        pending, self._pending = self._pending, {}
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return pending

    def restore(self, pending: dict[str, list[str]]) -> None:
        for stream, ids in pending.items():
            for entry_id in ids:
                self.add(Entry(stream, entry_id))

    def queue(self, pipe: Any, pending: dict[str, list[str]]) -> None:
        """Add the XACK commands of ``pending`` to ``pipe`` (a redis-py pipeline)."""
        for command in self.commands(pending):
            pipe.execute_command(*command)

    def commands(self, pending: dict[str, list[str]]) -> list[tuple[str, ...]]:
        """The XACK commands of ``pending`` (one per stream), to send with a read."""
        return [("XACK", stream, self.group, *ids) for stream, ids in pending.items()]

    def _send_alone(self) -> None:
        self._timer = None
        task = asyncio.create_task(self.send(self.take()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, pending: dict[str, list[str]]) -> None:
        if not pending:
            return
        try:
            with self.broker.call_timeout.scope():
                async with self.broker.client.pipeline(transaction=False) as pipe:
                    self.queue(pipe, pending)
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            self.restore(pending)
            _log.warning("could not ack messages; trying again", error=error_text(exc))

    async def flush(self) -> None:
        """Send what is pending now, and wait for acks already on their way."""
        await self.send(self.take())
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        self.take()
