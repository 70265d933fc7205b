"""What the circuit breaker measures: its states, what counts as a failure, the windows.

Both windows keep running totals (calls, failures, slow calls), so reading them is O(1)
whatever the window size; recording is O(1) too (the time window clears the buckets of the
seconds that went by, at most one pass over the window however long the pause).

* :class:`CountWindow` remembers the last ``size`` calls in a ring.
* :class:`TimeWindow` remembers the calls of the last ``size`` seconds in one bucket per
  second (the current second included, so the window spans ``size - 1`` to ``size`` seconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from medianest.errors import UpstreamBadRequest, UpstreamNotFound

__all__ = [
    "BreakerSnapshot",
    "BreakerState",
    "CountWindow",
    "OutcomeWindow",
    "StateListener",
    "TimeWindow",
    "default_record_failure",
    "never",
]

_FAILED = 1
_SLOW = 2


class BreakerState(StrEnum):
    """The states of a :class:`~.breaker.CircuitBreaker` (values are stable, for APIs and logs)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker at one instant. Counts cover the window (the probes when half-open)."""

    name: str
    state: BreakerState
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    """Percent of ``calls`` that failed (0 when there were none)."""
    slow_rate: float
    """Percent of ``calls`` slower than the slow-call duration."""
    retry_after: float | None
    """Seconds until an open breaker admits a probe; ``None`` when not timed."""

    @classmethod
    def of(
        cls, name: str, state: BreakerState, window: OutcomeWindow, retry_after: float | None
    ) -> BreakerSnapshot:
        """The snapshot of a breaker whose counts are in ``window``."""
        calls, failures, slow = window.calls, window.failures, window.slow
        return cls(
            name=name,
            state=state,
            calls=calls,
            failures=failures,
            slow_calls=slow,
            failure_rate=100.0 * failures / calls if calls else 0.0,
            slow_rate=100.0 * slow / calls if calls else 0.0,
            retry_after=retry_after,
        )


StateListener = Callable[[str, BreakerState, BreakerState], object]
"""Called synchronously with ``(breaker name, old state, new state)`` on every transition."""


def default_record_failure(exc: BaseException) -> bool:
    """Every exception is a failure except 404s and rejected requests (the service is up)."""
    return not isinstance(exc, UpstreamNotFound | UpstreamBadRequest)


def never(exc: BaseException) -> bool:
    """The default ``ignore`` predicate: no exception is ignored."""
    return False


class OutcomeWindow(Protocol):
    """What the breaker needs from a window; ``now`` is clock time in seconds."""

    calls: int
    failures: int
    slow: int

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Add one call's outcome, dropping whatever fell out of the window."""
        ...

    def refresh(self, now: float) -> None:
        """Drop what fell out of the window by ``now`` (a no-op for count windows)."""
        ...

    def reset(self) -> None:
        """Forget every recorded call."""
        ...


class CountWindow:
    """The outcomes of the last ``size`` calls."""

    __slots__ = ("_filled", "_index", "_ring", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a count window holds at least one call")
        self.size = size
        self.reset()

    def reset(self) -> None:
        self._ring = [0] * self.size
        self._index = 0
        self._filled = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def refresh(self, now: float) -> None:
        return None

    def record(self, now: float, failed: bool, slow: bool) -> None:
        index = self._index
        if self._filled == self.size:
            old = self._ring[index]
            self.failures -= old & _FAILED
            self.slow -= (old & _SLOW) >> 1
        else:
            self._filled += 1
            self.calls += 1
        self._ring[index] = (_FAILED if failed else 0) | (_SLOW if slow else 0)
        self.failures += failed
        self.slow += slow
        self._index = 0 if index + 1 == self.size else index + 1


class TimeWindow:
    """The outcomes of the calls made in the last ``size`` seconds (per-second buckets)."""

    __slots__ = ("_calls", "_epoch", "_failures", "_slow", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a time window spans at least one second")
        self.size = size
        self.reset()
        self._epoch = 0

    def reset(self) -> None:
        self._calls = [0] * self.size
        self._failures = [0] * self.size
        self._slow = [0] * self.size
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def refresh(self, now: float) -> None:
        second = math.floor(now)
        steps = second - self._epoch
        if steps <= 0:
            return
        if steps >= self.size:
            self.reset()
        else:
            for offset in range(1, steps + 1):
                index = (self._epoch + offset) % self.size
                self.calls -= self._calls[index]
                self.failures -= self._failures[index]
                self.slow -= self._slow[index]
                self._calls[index] = self._failures[index] = self._slow[index] = 0
        self._epoch = second

    def record(self, now: float, failed: bool, slow: bool) -> None:
        self.refresh(now)
        index = self._epoch % self.size
        self._calls[index] += 1
        self.calls += 1
        if failed:
            self._failures[index] += 1
            self.failures += 1
        if slow:
            self._slow[index] += 1
            self.slow += 1
