"""One :class:`Policy` per upstream: every resilience strategy, composed in a fixed order.

From the outside in::

    fallback            answers (stale or default) when everything below failed
      bulkhead          one slot per logical call: retries do not queue again
        total timeout   bounds the whole call: every attempt and every backoff sleep
          retry         repeats failed attempts (backoff, jitter, Retry-After, budget)
            breaker     sees and judges every attempt; refuses when open
              attempt timeout   bounds one attempt; a timeout counts as a breaker failure
                call

Every component is optional (``None`` means absent). The order is fixed on purpose, each
position is what makes the others behave: a call holds one bulkhead slot through all its
retries and never queues twice; the total timeout bounds every attempt *and* every backoff
sleep; the breaker sees (and may refuse) each attempt, not each logical call; the attempt
timeout sits inside the breaker so that a hung upstream counts as a failing one.

The policy itself is an immutable value; the breaker, bulkhead, retry budget and last-good
cache it holds carry the state, so two policies built with :func:`dataclasses.replace`
share them. :meth:`Policy.call` returns the value; :meth:`Policy.execute` returns a
:class:`PolicyResult` that also says who served it, whether it is stale, and how many
attempts were made. Pass ``idempotent=False`` for an operation that must not be repeated
(it will not be retried) and a ``key`` to let a ``LastGood`` fallback remember and serve it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, replace
from typing import Generic, NamedTuple, TypeVar, cast

from prometheus_client import CollectorRegistry

from medianest.resilience.breaker import CircuitBreaker
from medianest.resilience.bulkhead import Bulkhead
from medianest.resilience.clock import SYSTEM_CLOCK, Clock
from medianest.resilience.config import PolicyConfig
from medianest.resilience.fallback import Fallback, FallbackStrategy, LastGood
from medianest.resilience.retry import Retry, RetryBudget
from medianest.resilience.timeout import Timeout
from medianest.resilience.window import StateListener

__all__ = ["Policy", "PolicyResult"]

T = TypeVar("T")


class PolicyResult(NamedTuple, Generic[T]):
    """The outcome of :meth:`Policy.execute` (a named tuple: cheap to build, immutable)."""

    value: T
    served_by: str
    """``"primary"`` when the call itself answered, else the name of the fallback."""
    stale: bool
    """Whether the value is an old one (``LastGood``), not a fresh answer."""
    attempts: int
    """Attempts made at the primary call (0 when refused before the first one)."""
    error: Exception | None = None
    """The error a fallback answered for (``None`` when served by the primary)."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The resilience strategies of one upstream (see the module docstring for the order)."""

    name: str
    timeout: Timeout | None = None
    """Per-attempt timeout."""
    total_timeout: Timeout | None = None
    """Deadline over all attempts and backoff sleeps."""
    retry: Retry | None = None
    breaker: CircuitBreaker | None = None
    bulkhead: Bulkhead | None = None
    fallback: Fallback | None = None

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        idempotent: bool = True,
        key: Hashable | None = None,
    ) -> T:
        """Await ``fn()`` under the policy and return its value (or a fallback's).

        Raises what the call raised when no fallback could answer; when fallbacks were tried
        and failed, their errors ride on it (see :func:`~.fallback.fallback_errors`).
        """
        fallback = self.fallback
        if fallback is None:
            return await self._protected(fn, idempotent, [0])
        try:
            value = await self._protected(fn, idempotent, [0])
        except Exception as exc:
            return cast(T, (await fallback.recover(exc, key)).value)
        if key is not None:
            fallback.remember(key, value)
        return value

    async def execute(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        idempotent: bool = True,
        key: Hashable | None = None,
    ) -> PolicyResult[T]:
        """Await ``fn()`` under the policy and say who answered and how."""
        attempts = [0]
        fallback = self.fallback
        try:
            value = await self._protected(fn, idempotent, attempts)
        except Exception as exc:
            if fallback is None:
                raise
            recovered = await fallback.recover(exc, key)
            return PolicyResult(
                cast(T, recovered.value), recovered.served_by, recovered.stale, attempts[0], exc
            )
        if fallback is not None and key is not None:
            fallback.remember(key, value)
        return PolicyResult(value, "primary", False, attempts[0])

    async def _protected(
        self, fn: Callable[[], Awaitable[T]], idempotent: bool, attempts: list[int]
    ) -> T:
        bulkhead = self.bulkhead
        if bulkhead is not None and not bulkhead.try_acquire():
            await bulkhead.acquire()
        try:
            total = self.total_timeout
            if total is None:
                return await self._attempts(fn, idempotent, attempts)
            with total.scope():
                return await self._attempts(fn, idempotent, attempts)
        finally:
            if bulkhead is not None:
                bulkhead.release()

    async def _attempts(
        self, fn: Callable[[], Awaitable[T]], idempotent: bool, attempts: list[int]
    ) -> T:
        retry, breaker, timeout = self.retry, self.breaker, self.timeout
        if retry is not None:
            retry.deposit()
        failures = 0
        while True:
            attempts[0] = failures + 1
            try:
                if breaker is None:
                    if timeout is None:
                        return await fn()
                    with timeout.scope():
                        return await fn()
                permit = breaker.acquire()
                monotonic = breaker.clock.monotonic
                start = monotonic()
                try:
                    if timeout is None:
                        value = await fn()
                    else:
                        with timeout.scope():
                            value = await fn()
                except Exception as exc:
                    breaker.on_error(permit, monotonic() - start, exc)
                    raise
                except BaseException:
                    breaker.release(permit)
                    raise
                breaker.on_success(permit, monotonic() - start)
                return value
            except Exception as exc:
                if retry is None:
                    raise
                failures += 1
                wait = retry.next_delay(exc, failures, idempotent)
                if wait is None:
                    raise
            await retry.clock.sleep(wait)

    def with_fallback(self, *strategies: FallbackStrategy) -> Policy:
        """This policy with ``strategies`` appended to its fallback chain (same state)."""
        current = self.fallback.strategies if self.fallback is not None else ()
        raise_original = self.fallback.raise_original if self.fallback is not None else True
        chain = Fallback(*current, *strategies, raise_original=raise_original)
        return replace(self, fallback=chain)

    @classmethod
    def from_config(
        cls,
        name: str,
        config: PolicyConfig,
        *,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        listeners: tuple[StateListener, ...] = (),
    ) -> Policy:
        """Build the policy of upstream ``name`` from its validated configuration.

        ``registry`` receives the breaker metrics (the default Prometheus registry when
        ``None``); ``listeners`` observe the breaker's state changes.
        """
        clock = clock or SYSTEM_CLOCK
        t, r, b, h, f = (
            config.timeout,
            config.retry,
            config.breaker,
            config.bulkhead,
            config.fallback,
        )
        retry = None
        if r.enabled and r.max_attempts > 1:
            budget = None
            if r.budget.enabled:
                budget = RetryBudget(
                    ratio=r.budget.ratio,
                    window=r.budget.window,
                    min_per_second=r.budget.min_per_second,
                    clock=clock,
                )
            retry = Retry(
                r.max_attempts,
                base_delay=r.base_delay,
                max_delay=r.max_delay,
                multiplier=r.multiplier,
                max_retry_after=r.max_retry_after,
                budget=budget,
                clock=clock,
                name=name,
            )
        breaker = None
        if b.enabled:
            breaker = CircuitBreaker(
                name,
                failure_rate_threshold=b.failure_rate_threshold,
                slow_call_rate_threshold=b.slow_call_rate_threshold,
                slow_call_duration=b.slow_call_duration,
                window_type=b.window_type,
                window_size=b.window_size,
                minimum_calls=b.minimum_calls,
                open_duration=b.open_duration,
                open_duration_multiplier=b.open_duration_multiplier,
                max_open_duration=b.max_open_duration,
                open_duration_jitter=b.open_duration_jitter,
                half_open_probes=b.half_open_probes,
                max_half_open_wait=b.max_half_open_wait or None,
                listeners=listeners,
                clock=clock,
                metrics=registry,
            )
        bulkhead = None
        if h.enabled:
            bulkhead = Bulkhead(
                h.max_concurrent,
                max_queued=h.max_queued,
                max_wait=h.max_wait,
                name=name,
                clock=clock,
            )
        fallback = None
        if f.last_good:
            last_good = LastGood(max_entries=f.max_entries, max_age=f.max_age or None, clock=clock)
            fallback = Fallback(last_good)
        return cls(
            name=name,
            timeout=Timeout(t.attempt, name=name, clock=clock) if t.attempt else None,
            total_timeout=Timeout(t.total, kind="total", name=name, clock=clock)
            if t.total
            else None,
            retry=retry,
            breaker=breaker,
            bulkhead=bulkhead,
            fallback=fallback,
        )
