"""What a server broker needs around its connection, shared by Redis, RabbitMQ and NATS:

* :func:`broker_options`: options given as keywords or URL query parameters, checked;
* :class:`Backoff`: the pause between reconnection attempts of a consumer loop;
* :class:`LagCache`: the lag gauge's numbers, read from the server in the background so
  that :meth:`~medianest.messaging.base.Broker.lag` never blocks a scrape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from medianest.errors import ConfigurationError
from medianest.messaging.backends.delivery import error_text
from medianest.observability import get_logger

_log = get_logger("medianest.messaging")


def split_options(url: str, defaults: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Remove the broker's own options from ``url``'s query; return the URL the driver gets
    and the options, converted to the type of their default (``?visibility_timeout=5``)."""
    parts = urlsplit(url)
    kept: list[tuple[str, str]] = []
    options: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        default = defaults.get(name)
        if not isinstance(default, str | int | float):
            kept.append((name, value))
            continue
        kind = type(default)
        try:
            options[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        except ValueError as exc:
            raise ConfigurationError(
                f"broker option {name}={value!r} is not a valid {kind.__name__}",
                problems=[(f"messaging.{name}", value, kind.__name__)],
            ) from exc
    return urlunsplit(parts._replace(query=urlencode(kept))), options


def broker_options(url: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> Any:
    """Merge ``defaults`` < URL query < keyword options; TypeError for an unknown one.
    Returns ``(driver_url, options)``."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise TypeError(f"unknown broker options: {', '.join(sorted(unknown))}")
    driver_url, from_query = split_options(url, defaults)
    merged = {**defaults, **from_query, **given}
    for name in ("visibility_timeout", "timeout", "lag_interval", "heartbeat", "block"):
        if name in merged and float(merged[name]) <= 0:
            raise ConfigurationError(
                f"broker option {name} must be positive, not {merged[name]}",
                problems=[(f"messaging.{name}", repr(merged[name]), "a positive number")],
            )
    return driver_url, merged


class Backoff:
    """Doubling pauses from ``first`` to ``cap`` seconds between reconnection attempts."""

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self.first, self.cap, self._next = first, cap, first

    def next(self) -> float:
        delay, self._next = self._next, min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.first


class LagCache:
    """The lag per group as last read by ``read`` every ``interval`` seconds in the
    background, so that :meth:`~medianest.messaging.base.Broker.lag` never blocks."""

    def __init__(self, read: Callable[[], Awaitable[dict[str, int]]], interval: float) -> None:
        self._read, self.interval = read, interval
        self.value: dict[str, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="broker lag")

    async def refresh(self) -> dict[str, int]:
        self.value = await self._read()
        return self.value

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.refresh()
            except Exception as exc:
                _log.debug("reading consumer lag failed", error=error_text(exc))
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Stop the loop. A driver call may swallow a cancellation (aio-pika closing a
        channel does, now and then), so the loop also stops at its flag, and the task is
        cancelled again until it has ended."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        await asyncio.gather(task, return_exceptions=True)
