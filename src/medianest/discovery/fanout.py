"""Deliver registry changes to every open ``watch()`` iterator of one process.

Each ``watch()`` call gets its own :class:`Subscription` with its own queue, taken at once
(synchronously), so no change published after ``watch()`` returned can be missed even if
the consumer has not reached its first ``anext`` yet. A consumer that lets more than
``max_backlog`` changes pile up is cut off with :class:`~medianest.errors.BackendError`
after it drained what it had: a watcher either sees every change or learns that it did not.
"""

from __future__ import annotations

import asyncio
from typing import Final

from medianest.discovery.base import Change
from medianest.errors import BackendError

_END: Final = object()


class Subscription:
    """One ``watch(name)`` iterator: changes of service ``name`` (all when None)."""

    def __init__(self, fanout: ChangeFanout, name: str | None) -> None:
        self._fanout = fanout
        self.name = name
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._done = False
        self._error: BaseException | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        if self._done and self._queue.empty():
            self._raise_end()
        item = await self._queue.get()
        if item is _END:
            self._raise_end()
        assert isinstance(item, Change)
        return item

    def _raise_end(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop watching; further ``anext`` calls end the iteration."""
        self._finish(None)

    def _offer(self, change: Change) -> None:
        if self._done or (self.name is not None and change.name != self.name):
            return
        if self._queue.qsize() >= self._fanout.max_backlog:
            self._finish(
                BackendError(
                    f"a registry watcher fell more than {self._fanout.max_backlog} changes "
                    "behind and was stopped; watch again and re-read the registry",
                    backend=self._fanout.backend,
                )
            )
            return
        self._queue.put_nowait(change)

    def _finish(self, error: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._error = error
        self._fanout._subscriptions.discard(self)
        self._queue.put_nowait(_END)


class ChangeFanout:
    """The set of open subscriptions of one registry object."""

    def __init__(self, *, backend: str = "", max_backlog: int = 10_000) -> None:
        self.backend = backend
        self.max_backlog = max_backlog
        self._subscriptions: set[Subscription] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, name: str | None) -> Subscription:
        subscription = Subscription(self, name)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, change: Change) -> None:
        """Queue ``change`` for every subscription interested in its service."""
        for subscription in list(self._subscriptions):
            subscription._offer(change)

    def close(self) -> None:
        """End every subscription (their consumers get ``StopAsyncIteration``)."""
        for subscription in list(self._subscriptions):
            subscription._finish(None)
