"""Timeouts: a per-attempt limit and a total deadline, both driven by a :class:`Clock`.

A :class:`Timeout` is a cancel scope in the manner of ``asyncio.timeout``: when its time is
up it cancels the task running the block and turns that cancellation into
:class:`~medianest.errors.TimeoutExceeded` (also a builtin :class:`TimeoutError`) whose
message names the limit. The timer comes from the clock: the event loop's timers for the
:class:`~medianest.resilience.clock.SystemClock`, the fake clock's own timers under test, so
a test decides exactly when a timeout fires.

The scope is a plain ``with`` block (nothing needs awaiting to arm or disarm it, which
keeps it cheap on the hot path), usable only inside a running task::

    with Timeout(10.0).scope():
        answer = await client.get(...)

A cancellation that does not come from the scope (the caller gave up, an outer deadline
passed) propagates untouched.
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from asyncio import CancelledError, current_task
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Literal, TypeVar

from medianest.errors import TimeoutExceeded
from medianest.resilience.clock import (
    SYSTEM_CLOCK,
    Cancellable,
    Clock,
    TimerClock,
)

__all__ = ["Timeout", "TimeoutScope", "schedule"]

T = TypeVar("T")
TimeoutKind = Literal["attempt", "total"]
_LABELS: dict[str, str] = {"attempt": "per-attempt timeout", "total": "total deadline"}
_EPSILON = 1e-9
"""Deadlines closer than this count as reached (timers may fire a hair early)."""


class _Watcher:
    """A timer for clocks without ``call_later``: a task that sleeps on the clock."""

    __slots__ = ("_task",)

    def __init__(self, clock: Clock, delay: float, callback: Callable[[], object]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(clock, delay, callback))

    @staticmethod
    async def _run(clock: Clock, delay: float, callback: Callable[[], object]) -> None:
        await clock.sleep(delay)
        callback()

    def cancel(self) -> None:
        self._task.cancel()


def schedule(clock: Clock, delay: float, callback: Callable[[], object]) -> Cancellable:
    """Run ``callback`` after ``delay`` seconds of ``clock`` time (its timer, or a watcher)."""
    if isinstance(clock, TimerClock):
        return clock.call_later(delay, callback)
    return _Watcher(clock, delay, callback)


class Timeout:
    """A time limit on a block of async code: ``kind`` is ``"attempt"`` or ``"total"``.

    The kind only changes the error message ("per-attempt timeout of 10s" or "total deadline
    of 30s"), so a reader of a log line knows which limit fired; :class:`~.policy.Policy`
    puts the total deadline around all attempts and backoff sleeps, and the per-attempt
    timeout around each attempt. ``name`` (the upstream) prefixes the message when given.

    Arming one event-loop timer per call costs microseconds (the loop's timer heap is pure
    Python), so a Timeout keeps, per event loop, one watchdog timer for all its running
    scopes. All scopes of one Timeout have the same length, so their deadlines come in the
    order they were entered: the watchdog only ever needs to wake for the oldest one.
    """

    __slots__ = (
        "_current",
        "_lock",
        "_monotonic",
        "_watchdogs",
        "clock",
        "kind",
        "message",
        "name",
        "seconds",
    )

    def __init__(
        self,
        seconds: float,
        *,
        kind: TimeoutKind = "attempt",
        name: str = "",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not seconds > 0:
            raise ValueError(f"a timeout must be positive, not {seconds!r}")
        self.seconds = float(seconds)
        self.kind = kind
        self.name = name
        self.clock = clock
        prefix = f"{name}: " if name else ""
        self.message = f"{prefix}{_LABELS[kind]} of {self.seconds:g}s exceeded"
        self._monotonic = clock.monotonic
        self._current: tuple[asyncio.AbstractEventLoop | None, _Watchdog] = (None, _Watchdog(clock))
        self._lock = threading.Lock()
        self._watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watchdog] = (
            weakref.WeakKeyDictionary()
        )

    def scope(self) -> TimeoutScope:
        """A fresh cancel scope that starts counting when its ``with`` block is entered."""
        return TimeoutScope(self)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` within this limit."""
        with TimeoutScope(self):
            return await fn()

    def _watchdog_for(self, loop: asyncio.AbstractEventLoop) -> _Watchdog:
        with self._lock:
            watchdog = self._watchdogs.get(loop)
            if watchdog is None:
                watchdog = self._watchdogs[loop] = _Watchdog(self.clock)
            self._current = (loop, watchdog)
            return watchdog

    def __repr__(self) -> str:
        return f"Timeout({self.seconds:g}, kind={self.kind!r})"


class _Watchdog:
    """The running scopes of one Timeout on one loop, oldest first, and their one timer."""

    __slots__ = ("_call_later", "_clock", "_handle", "scopes")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._call_later = clock.call_later if isinstance(clock, TimerClock) else None
        self._handle: Cancellable | None = None
        self.scopes: dict[TimeoutScope, None] = {}

    def watch(self, scope: TimeoutScope, delay: float) -> None:
        self.scopes[scope] = None
        if self._handle is None:
            self._arm(delay)

    def _arm(self, delay: float) -> None:
        if self._call_later is not None:
            self._handle = self._call_later(delay, self._fire)
        else:
            self._handle = _Watcher(self._clock, delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        scopes = self.scopes
        now = self._clock.monotonic()
        while scopes:
            scope = next(iter(scopes))
            if scope.deadline - now > _EPSILON:
                self._arm(scope.deadline - now)
                return
            del scopes[scope]
            scope._expire()


class TimeoutScope:
    """One running :class:`Timeout`: cancels its task at expiry, raises ``TimeoutExceeded``.

    It follows ``asyncio.Timeout``: the cancellation is counted on the task and withdrawn
    with ``Task.uncancel`` on exit, so a cancellation requested by someone else at the same
    time still propagates as :class:`asyncio.CancelledError`.
    """

    __slots__ = ("_cancelling", "_expired", "_task", "_watchdog", "deadline", "timeout")

    def __init__(self, timeout: Timeout) -> None:
        self.timeout = timeout
        self._expired = False
        self.deadline = math.inf

    @property
    def expired(self) -> bool:
        """Whether the limit passed while the block ran."""
        return self._expired

    @property
    def remaining(self) -> float:
        """Seconds of clock time left before the scope expires (negative once it has)."""
        return self.deadline - self.timeout._monotonic()

    def __enter__(self) -> TimeoutScope:
        task = current_task()
        if task is None:
            raise RuntimeError("a timeout scope must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        timeout = self.timeout
        self.deadline = timeout._monotonic() + timeout.seconds
        loop = task.get_loop()
        current_loop, watchdog = timeout._current
        if current_loop is not loop:
            watchdog = timeout._watchdog_for(loop)
        self._watchdog = watchdog
        watchdog.watch(self, timeout.seconds)
        return self

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._expired:
            if self._task.uncancel() <= self._cancelling and exc_type is CancelledError:
                raise TimeoutExceeded(self.timeout.message, timeout=self.timeout.seconds) from exc
        else:
            self._watchdog.scopes.pop(self, None)
