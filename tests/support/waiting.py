"""Waiting on a condition in tests: never a fixed sleep, always a deadline that names what
was awaited when it passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(check: Callable[[], Awaitable[bool]], what: str, deadline: float = 30.0) -> None:
    """Wait until ``check()`` holds (looked at every 20 ms), failing after ``deadline`` s."""
    end = time.monotonic() + deadline
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
