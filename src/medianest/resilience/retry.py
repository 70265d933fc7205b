"""Retry with capped exponential backoff, full jitter, ``Retry-After`` and a retry budget.

After the n-th failed attempt (n = 1, 2, ...) :class:`Retry` waits a random time in
``[0, min(max_delay, base_delay * multiplier ** (n - 1)))`` ("full jitter", which spreads
the retries of many clients instead of synchronising them). When the error carries a
``retry_after`` in seconds (:class:`~medianest.errors.UpstreamRateLimited` from a 429,
:class:`~medianest.errors.CircuitOpenError`), the wait is at least that long, capped by
``max_retry_after`` so that a service asking for an hour cannot park a request for an hour.

Three things stop the retries:

* the predicate: only errors for which ``retry_on(exc)`` is true are retried
  (:func:`is_retryable` by default: connection errors, timeouts, 502/503/504, 429);
* idempotency: a call made with ``idempotent=False`` is never retried, whatever failed; the
  caller marks an operation safe to repeat by leaving the flag at ``True``;
* the :class:`RetryBudget`, shared by every call of one upstream: when it refuses, the call
  raises :class:`~medianest.errors.RetryBudgetExhausted` chained from the last error.

When the attempts are used up, the last error itself is raised.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from medianest.errors import (
    RetryBudgetExhausted,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from medianest.resilience.clock import SYSTEM_CLOCK, Clock

__all__ = ["RETRYABLE_STATUSES", "Retry", "RetryBudget", "is_retryable"]

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""HTTP statuses of an :class:`~medianest.errors.UpstreamError` that are worth a retry."""


def is_retryable(exc: BaseException) -> bool:
    """The default retry predicate: failures a second attempt may well not see.

    Connection errors (any :class:`OSError`), timeouts (any :class:`TimeoutError`, which
    includes ``TimeoutExceeded`` and ``UpstreamTimeout``), ``UpstreamUnavailable``,
    ``UpstreamRateLimited`` and an ``UpstreamError`` whose status is 429, 502, 503 or 504.
    """
    if isinstance(exc, OSError | TimeoutError | UpstreamUnavailable | UpstreamRateLimited):
        return True
    return isinstance(exc, UpstreamError) and exc.status in RETRYABLE_STATUSES


class RetryBudget:
    """Caps retries at a fraction of the traffic, Finagle / Linkerd style.

    Over the last ``window`` seconds, retries may number at most ``ratio`` times the first
    attempts made in that window plus ``min_per_second * window`` (a reserve so that a
    quiet service can still be retried). With ratio 0.2 a failing upstream sees at most 20%
    more load from retries instead of ``max_attempts`` times the load, which is what turns a
    brief brown-out into a retry storm.

    Counts live in one bucket per second of the window with running totals, so
    :meth:`deposit` and :meth:`try_withdraw` are O(1) (amortised over elapsed seconds).
    """

    __slots__ = (
        "_deposits",
        "_epoch",
        "_requests",
        "_retries",
        "_withdrawals",
        "clock",
        "min_per_second",
        "ratio",
        "reserve",
        "size",
        "window",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        window: float = 10.0,
        min_per_second: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if ratio < 0 or window <= 0 or min_per_second < 0:
            raise ValueError("ratio and min_per_second must be >= 0 and window > 0")
        self.ratio = ratio
        self.window = window
        self.min_per_second = min_per_second
        self.reserve = min_per_second * window
        self.clock = clock
        self.size = max(1, math.ceil(window))
        self._deposits = [0] * self.size
        self._withdrawals = [0] * self.size
        self._requests = 0
        self._retries = 0
        self._epoch = math.floor(clock.monotonic())

    def _roll(self, second: int) -> None:
        steps = second - self._epoch
        if steps <= 0:
            return
        for offset in range(1, min(steps, self.size) + 1):
            index = (self._epoch + offset) % self.size
            self._requests -= self._deposits[index]
            self._retries -= self._withdrawals[index]
            self._deposits[index] = 0
            self._withdrawals[index] = 0
        self._epoch = second

    def deposit(self) -> None:
        """Count one first attempt (a request that may later want retries)."""
        second = math.floor(self.clock.monotonic())
        if second != self._epoch:
            self._roll(second)
        self._deposits[second % self.size] += 1
        self._requests += 1

    def try_withdraw(self) -> bool:
        """Take room for one retry; ``False`` (and nothing taken) when there is none."""
        second = math.floor(self.clock.monotonic())
        self._roll(second)
        if self._retries + 1 > self.ratio * self._requests + self.reserve:
            return False
        self._withdrawals[second % self.size] += 1
        self._retries += 1
        return True

    @property
    def available(self) -> float:
        """How many more retries the budget would allow right now."""
        self._roll(math.floor(self.clock.monotonic()))
        return max(0.0, self.ratio * self._requests + self.reserve - self._retries)

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, window={self.window:g}, "
            f"min_per_second={self.min_per_second:g})"
        )


class Retry:
    """How often and how patiently to repeat a failed attempt (see the module docstring).

    ``random`` returns a float in ``[0, 1)``; pass ``random.Random(seed).random`` for a
    reproducible jitter. ``max_attempts`` counts the first attempt (1 disables retries).
    """

    __slots__ = (
        "base_delay",
        "budget",
        "clock",
        "max_attempts",
        "max_delay",
        "max_retry_after",
        "multiplier",
        "name",
        "random",
        "retry_on",
    )

    def __init__(
        self,
        max_attempts: int = 3,
        *,
        base_delay: float = 0.1,
        max_delay: float = 5.0,
        multiplier: float = 2.0,
        max_retry_after: float = 30.0,
        retry_on: Callable[[BaseException], bool] = is_retryable,
        budget: RetryBudget | None = None,
        random: Callable[[], float] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "",
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts counts the first attempt and must be >= 1")
        if base_delay < 0 or max_delay < 0 or multiplier < 1 or max_retry_after < 0:
            raise ValueError("delays must be >= 0 and the multiplier >= 1")
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.multiplier = multiplier
        self.max_retry_after = max_retry_after
        self.retry_on = retry_on
        self.budget = budget
        self.random = random if random is not None else _fresh_random()
        self.clock = clock
        self.name = name

    def backoff(self, failures: int) -> float:
        """The jittered wait after the ``failures``-th failed attempt (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * self.multiplier ** (failures - 1))
        return self.random() * ceiling

    def delay(self, exc: BaseException, failures: int) -> float:
        """The wait before the next attempt: the backoff, or ``retry_after`` if longer."""
        wait = self.backoff(failures)
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            wait = max(wait, min(float(retry_after), self.max_retry_after))
        return wait

    def next_delay(self, exc: Exception, failures: int, idempotent: bool) -> float | None:
        """The wait before another attempt, or ``None`` when ``exc`` should be raised.

        Raises :class:`~medianest.errors.RetryBudgetExhausted` (chained from ``exc``) when a
        retry is warranted but the budget refuses it.
        """
        if not idempotent or failures >= self.max_attempts or not self.retry_on(exc):
            return None
        if self.budget is not None and not self.budget.try_withdraw():
            prefix = f"{self.name}: " if self.name else ""
            raise RetryBudgetExhausted(
                f"{prefix}retry budget exhausted after {failures} attempt(s)",
                attempts=failures,
            ) from exc
        return self.delay(exc, failures)

    def deposit(self) -> None:
        """Tell the budget (if any) that a new call starts."""
        if self.budget is not None:
            self.budget.deposit()

    async def call(self, fn: Callable[[], Awaitable[T]], *, idempotent: bool = True) -> T:
        """Await ``fn()``, retrying it as configured."""
        self.deposit()
        failures = 0
        while True:
            try:
                return await fn()
            except Exception as exc:
                failures += 1
                wait = self.next_delay(exc, failures, idempotent)
                if wait is None:
                    raise
            await self.clock.sleep(wait)

    def __repr__(self) -> str:
        return (
            f"Retry({self.max_attempts}, base_delay={self.base_delay:g}, "
            f"max_delay={self.max_delay:g}, budget={self.budget!r})"
        )


def _fresh_random() -> Callable[[], float]:
    return random.Random().random
