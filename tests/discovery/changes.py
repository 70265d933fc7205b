"""Collect the changes of a registry watch in a background task, and wait on them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import TracebackType

from medianest.discovery import Change


class ChangeLog:
    """Consumes ``changes`` in a task; ``await wait_for(...)`` blocks until a condition holds.

    Used as ``async with ChangeLog(registry.watch()) as log``; leaving the block cancels the
    task and closes the iterator. An error of the iterator is raised by the next wait.
    """

    def __init__(self, changes: AsyncIterator[Change]) -> None:
        self.iterator = changes
        self.changes: list[Change] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChangeLog:
        self._task = asyncio.create_task(self._consume())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        aclose = getattr(self.iterator, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _consume(self) -> None:
        try:
            async for change in self.iterator:
                self.changes.append(change)
                self._arrived.set()
        finally:
            self._arrived.set()

    @property
    def summary(self) -> list[tuple[str, str, str]]:
        """``(kind, name, instance_id)`` of every change so far, in order."""
        return [(c.kind, c.name, c.instance_id) for c in self.changes]

    async def wait_for(
        self, condition: Callable[[list[Change]], bool], *, within: float = 30.0
    ) -> list[Change]:
        """Wait until ``condition(changes)`` is true (fail after ``within`` seconds)."""
        assert self._task is not None
        try:
            async with asyncio.timeout(within):
                while not condition(self.changes):
                    if self._task.done():
                        self._task.result()
                        raise AssertionError(f"the watch ended; changes: {self.summary}")
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(f"no such change in {within}s; got {self.summary}") from None
        return self.changes

    async def finished(self) -> None:
        """Wait until the watch ends on its own (raising what it raised)."""
        assert self._task is not None
        await asyncio.shield(self._task)

    async def wait_count(self, count: int, *, within: float = 30.0) -> list[Change]:
        return await self.wait_for(lambda changes: len(changes) >= count, within=within)
