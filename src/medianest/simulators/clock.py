"""Time sources for the simulators.

Everything time-dependent in a simulator (PIN expiry, heartbeat timestamps, request
timestamps, relative Plex filters such as ``addedAt>>=-30d``) reads the clock given in
:class:`~medianest.simulators.options.SimulatorOptions` instead of calling ``time.time``
itself, so a test can hold a :class:`ManualClock` and move time forward without sleeping.
A clock is any zero-argument callable returning epoch seconds; ``time.time`` is the default.
"""

from __future__ import annotations

import threading

#: 2025-01-01T00:00:00Z, a fixed and readable starting point for manual clocks.
DEFAULT_EPOCH = 1_735_689_600.0


class ManualClock:
    """A clock that only moves when told to.

    It is safe to read from the simulator's event loop while a test thread advances it.
    """

    def __init__(self, start: float = DEFAULT_EPOCH) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (must not be negative) and return the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """Jump to an absolute epoch time (backwards jumps are allowed on purpose)."""
        with self._lock:
            self._now = float(now)

    def __repr__(self) -> str:
        return f"ManualClock({self():.3f})"
