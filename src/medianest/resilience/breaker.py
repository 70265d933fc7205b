"""The circuit breaker: stop calling an upstream that keeps failing, probe it, recover.

States (:class:`~.window.BreakerState`), modelled on resilience4j::

    CLOSED ──failure or slow-call rate >= threshold (after minimum_calls)──▶ OPEN
    OPEN ──open duration elapsed, on the next call or state read──▶ HALF_OPEN
    HALF_OPEN ──all probes done, rates below thresholds──▶ CLOSED
    HALF_OPEN ──all probes done, a rate at/above threshold──▶ OPEN (longer, if growing)
    HALF_OPEN ──max_half_open_wait elapsed before the probes finished──▶ OPEN
    any ──force_open()──▶ FORCED_OPEN      any ──disable()──▶ DISABLED
    any ──close() / reset()──▶ CLOSED

While CLOSED, outcomes go into a sliding window (by call count or by seconds). A call fails
when ``record_failure(exc)`` is true (by default for every exception but a 404 or a
rejected request, so connection errors and timeouts count and a dead service trips the
breaker); ``ignore(exc)`` exceptions count as neither. A call is slow when it takes longer
than ``slow_call_duration``, whatever its outcome.

OPEN refuses calls with :class:`~medianest.errors.CircuitOpenError` whose ``retry_after``
says when a probe may go. The open duration grows by ``open_duration_multiplier`` on each
trip in a row, up to ``max_open_duration``, and is shortened by up to
``open_duration_jitter`` (a fraction) so that hub instances do not all probe at once.
HALF_OPEN admits ``half_open_probes`` calls and refuses the rest. Time-driven transitions
happen lazily, on calls and on reads of ``state`` / ``snapshot()``: no timer task exists.

Each transition bumps a generation number handed out by :meth:`CircuitBreaker.acquire`;
outcomes of calls admitted under an older generation (a probe that hung past the half-open
wait, a call running when the breaker was forced open) are counted in the metrics but do
not influence the new state.
"""

from __future__ import annotations

import logging
import random as _random
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal, TypeVar

from prometheus_client import CollectorRegistry

from medianest.errors import CircuitOpenError
from medianest.resilience.clock import SYSTEM_CLOCK, Clock
from medianest.resilience.metrics import (
    FAILURE,
    IGNORED,
    NOT_PERMITTED,
    SLOW_FAILURE,
    SLOW_SUCCESS,
    SUCCESS,
    ResilienceMetrics,
)
from medianest.resilience.window import (
    BreakerSnapshot,
    BreakerState,
    CountWindow,
    OutcomeWindow,
    StateListener,
    TimeWindow,
    default_record_failure,
    never,
)

__all__ = ["CircuitBreaker"]

T = TypeVar("T")
log = logging.getLogger(__name__)

_CLOSED, _OPEN, _HALF_OPEN, _FORCED_OPEN, _DISABLED = BreakerState


class CircuitBreaker:
    """A circuit breaker for one upstream (see the module docstring for the behaviour).

    Use :meth:`call` to wrap a coroutine, or the synchronous trio :meth:`acquire` /
    :meth:`on_success` / :meth:`on_error` / :meth:`release` when measuring the call yourself
    (that is what :class:`~.policy.Policy` does). Thresholds are percentages.
    ``minimum_calls`` is capped by the window size of a count window.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_rate_threshold: float = 50.0,
        slow_call_rate_threshold: float = 100.0,
        slow_call_duration: float = 5.0,
        window_type: Literal["count", "time"] = "count",
        window_size: int = 20,
        minimum_calls: int = 10,
        open_duration: float = 30.0,
        open_duration_multiplier: float = 1.0,
        max_open_duration: float = 300.0,
        open_duration_jitter: float = 0.0,
        half_open_probes: int = 3,
        max_half_open_wait: float | None = 60.0,
        record_failure: Callable[[BaseException], bool] = default_record_failure,
        ignore: Callable[[BaseException], bool] = never,
        listeners: Iterable[StateListener] = (),
        clock: Clock = SYSTEM_CLOCK,
        metrics: ResilienceMetrics | CollectorRegistry | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        if not (0 < failure_rate_threshold <= 100 and 0 < slow_call_rate_threshold <= 100):
            raise ValueError("rate thresholds are percentages in (0, 100]")
        if minimum_calls < 1 or half_open_probes < 1 or open_duration <= 0:
            raise ValueError("minimum_calls and half_open_probes >= 1, open_duration > 0")
        if open_duration_multiplier < 1 or not 0 <= open_duration_jitter < 1:
            raise ValueError("open_duration_multiplier >= 1 and jitter in [0, 1)")
        self.name = name
        self.failure_rate_threshold = failure_rate_threshold
        self.slow_call_rate_threshold = slow_call_rate_threshold
        self.slow_call_duration = slow_call_duration
        self.timed_window = window_type == "time"
        self._window: OutcomeWindow = (
            TimeWindow(window_size) if self.timed_window else CountWindow(window_size)
        )
        self.minimum_calls = minimum_calls if self.timed_window else min(minimum_calls, window_size)
        self.open_duration = open_duration
        self.open_duration_multiplier = open_duration_multiplier
        self.max_open_duration = max(max_open_duration, open_duration)
        self.open_duration_jitter = open_duration_jitter
        self.half_open_probes = half_open_probes
        self.max_half_open_wait = max_half_open_wait or None
        self.record_failure = record_failure
        self.ignore = ignore
        self.clock = clock
        self._listeners = list(listeners)
        self._random = random if random is not None else _random.Random().random
        if not isinstance(metrics, ResilienceMetrics):
            metrics = ResilienceMetrics.for_registry(metrics)
        self._counters = metrics.breaker(name)
        self._counters.set_state(_CLOSED)
        self._calls = self._counters.calls
        self._state = _CLOSED
        self._generation = self._trips = self._probes_started = 0
        self._open_until = 0.0
        self._since = clock.monotonic()
        self._probes = CountWindow(half_open_probes)

    def acquire(self) -> int:
        """Admit one call or raise :class:`CircuitOpenError`; returns the call's permit."""
        state = self._state
        if state is _CLOSED or state is _DISABLED:
            return self._generation
        now = self.clock.monotonic()
        self._expire(now)
        if self._state is _HALF_OPEN and self._probes_started < self.half_open_probes:
            self._probes_started += 1
            return self._generation
        self._calls[NOT_PERMITTED] += 1
        raise CircuitOpenError(self.name, retry_after=self._retry_after(now))

    def on_success(self, permit: int, duration: float) -> None:
        """Record that the call admitted with ``permit`` returned after ``duration`` s."""
        slow = duration > self.slow_call_duration
        self._calls[SLOW_SUCCESS if slow else SUCCESS] += 1
        if permit == self._generation:
            self._record(False, slow)

    def on_error(self, permit: int, duration: float, exc: BaseException) -> None:
        """Record that the call admitted with ``permit`` raised ``exc`` after ``duration`` s."""
        if self.ignore(exc):
            self._calls[IGNORED] += 1
            self.release(permit)
            return
        failed = self.record_failure(exc)
        slow = duration > self.slow_call_duration
        if failed:
            self._calls[SLOW_FAILURE if slow else FAILURE] += 1
        else:
            self._calls[SLOW_SUCCESS if slow else SUCCESS] += 1
        if permit == self._generation:
            self._record(failed, slow)

    def release(self, permit: int) -> None:
        """Give back a permit without an outcome (the call was cancelled or ignored)."""
        if permit == self._generation and self._state is _HALF_OPEN and self._probes_started:
            self._probes_started -= 1

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` through the breaker, timing it with the breaker's clock."""
        permit = self.acquire()
        monotonic = self.clock.monotonic
        start = monotonic()
        try:
            value = await fn()
        except Exception as exc:
            self.on_error(permit, monotonic() - start, exc)
            raise
        except BaseException:
            self.release(permit)
            raise
        self.on_success(permit, monotonic() - start)
        return value

    def _record(self, failed: bool, slow: bool) -> None:
        state = self._state
        if state is _CLOSED:
            window = self._window
            window.record(self.clock.monotonic() if self.timed_window else 0.0, failed, slow)
            if window.calls >= self.minimum_calls and self._exceeds(window):
                self._trip(self.clock.monotonic())
        elif state is _HALF_OPEN:
            probes = self._probes
            probes.record(0.0, failed, slow)
            if probes.calls >= self.half_open_probes:
                if self._exceeds(probes):
                    self._trip(self.clock.monotonic())
                else:
                    self._trips = 0
                    self._transition(_CLOSED, self.clock.monotonic())

    def _exceeds(self, window: OutcomeWindow) -> bool:
        return (
            window.failures * 100 >= self.failure_rate_threshold * window.calls
            or window.slow * 100 >= self.slow_call_rate_threshold * window.calls
        )

    def _expire(self, now: float) -> None:
        state = self._state
        if state is _OPEN and now >= self._open_until:
            self._transition(_HALF_OPEN, now)
        elif (
            state is _HALF_OPEN
            and self.max_half_open_wait is not None
            and now - self._since >= self.max_half_open_wait
        ):
            self._trip(now)

    def _trip(self, now: float) -> None:
        self._trips += 1
        growth = self.open_duration_multiplier ** (self._trips - 1)
        duration = min(self.max_open_duration, self.open_duration * growth)
        if self.open_duration_jitter:
            duration *= 1.0 - self.open_duration_jitter * self._random()
        self._open_until = now + duration
        self._transition(_OPEN, now)

    def _retry_after(self, now: float) -> float | None:
        return max(0.0, self._open_until - now) if self._state is _OPEN else None

    def _transition(self, new: BreakerState, now: float) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._since = now
        self._window.reset()
        self._probes.reset()
        self._probes_started = 0
        self._counters.set_state(new)
        if old is new:
            return
        log.info("circuit breaker %r: %s -> %s", self.name, old.value, new.value)
        for listener in tuple(self._listeners):
            try:
                listener(self.name, old, new)
            except Exception:
                log.exception("state listener of circuit breaker %r failed", self.name)

    @property
    def state(self) -> BreakerState:
        """The current state, after any time-driven transition that is due."""
        self._expire(self.clock.monotonic())
        return self._state

    def snapshot(self) -> BreakerSnapshot:
        """The state and the counts behind it, in O(1)."""
        now = self.clock.monotonic()
        self._expire(now)
        window = self._probes if self._state is _HALF_OPEN else self._window
        window.refresh(now)
        return BreakerSnapshot.of(self.name, self._state, window, self._retry_after(now))

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener(name, old, new)`` on every later transition."""
        self._listeners.append(listener)

    def force_open(self) -> None:
        """Refuse every call until :meth:`close`, :meth:`reset` or :meth:`disable`."""
        if self._state is not _FORCED_OPEN:
            self._transition(_FORCED_OPEN, self.clock.monotonic())

    def disable(self) -> None:
        """Admit every call and record nothing until :meth:`close` or :meth:`reset`."""
        if self._state is not _DISABLED:
            self._transition(_DISABLED, self.clock.monotonic())

    def close(self) -> None:
        """Go to CLOSED with an empty window, from whatever state (no-op when closed)."""
        if self._state is not _CLOSED:
            self._trips = 0
            self._transition(_CLOSED, self.clock.monotonic())

    def reset(self) -> None:
        """Go to CLOSED and forget everything: the window and the trips in a row."""
        self._trips = 0
        self._transition(_CLOSED, self.clock.monotonic())

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.value})"
