"""Following one service in the registry: the loop the gateway and the adapters share.

:func:`follow` subscribes to ``registry.watch(service)`` *before* reading (so no change can
fall between the read and the subscription), calls ``refresh`` once, then again on every
change. When the registry fails the loop logs, pauses (doubling up to 30 s, back to the
first pause after a change arrives) and starts over; whoever follows keeps what it last
knew meanwhile. It runs until cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from medianest.discovery.base import ServiceRegistry
from medianest.errors import BackendError
from medianest.observability import get_logger

_log = get_logger("medianest.discovery.follow")


async def follow(
    registry: ServiceRegistry,
    service: str,
    refresh: Callable[[], Awaitable[Any]],
    *,
    retry: float = 1.0,
) -> None:
    """Call ``refresh`` now and on every change of ``service``, until cancelled."""
    pause = retry
    while True:
        try:
            changes = registry.watch(service)
            try:
                await refresh()
                async for _change in changes:
                    await refresh()
                    pause = retry
            finally:
                await _close(changes)
        except BackendError as exc:
            _log.warning("registry watch failed; retrying", service=service, error=exc.message)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 30.0)


async def _close(changes: AsyncIterator[Any]) -> None:
    """End a watch (the registry stops queueing its changes), as its contract asks."""
    aclose = getattr(changes, "aclose", None)
    if aclose is not None:
        await aclose()


async def stop_following(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel the :func:`follow` loops of ``tasks`` and wait until each has ended (a
    cancellation of the caller itself still propagates; a loop that had died of an
    unexpected error is logged)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception):
            _log.error("registry follower had failed", error=repr(outcome))
