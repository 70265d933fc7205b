"""Retry: backoff and jitter, Retry-After, the retry budget, idempotency, predicates."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medianest.errors import (
    CircuitOpenError,
    RetryBudgetExhausted,
    TimeoutExceeded,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from medianest.resilience import FakeClock, Retry, RetryBudget, is_retryable


class RecordingClock(FakeClock):
    """A fake clock that also records every sleep asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0))


def failing(times: int, error: Callable[[], Exception]) -> Callable[[], Awaitable[str]]:
    calls = 0

    async def fn() -> str:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise error()
        return f"ok after {calls}"

    return fn


@settings(max_examples=60, deadline=None)
@given(
    failures=st.integers(min_value=1, max_value=30),
    base=st.floats(min_value=0.001, max_value=2),
    cap=st.floats(min_value=0.001, max_value=10),
    multiplier=st.floats(min_value=1, max_value=4),
    seed=st.integers(),
)
def test_backoff_stays_within_full_jitter_bounds(
    failures: int, base: float, cap: float, multiplier: float, seed: int
) -> None:
    retry = Retry(
        5,
        base_delay=base,
        max_delay=cap,
        multiplier=multiplier,
        random=random.Random(seed).random,
    )
    ceiling = min(cap, base * multiplier ** (failures - 1))
    for _ in range(5):
        assert 0 <= retry.backoff(failures) < ceiling or ceiling == 0


def test_seeded_jitter_is_reproducible_and_full() -> None:
    reference = random.Random(42)
    retry = Retry(4, base_delay=0.1, max_delay=0.3, random=random.Random(42).random)
    delays = [retry.backoff(n) for n in (1, 2, 3, 4)]
    expected = [reference.random() * c for c in (0.1, 0.2, 0.3, 0.3)]
    assert delays == expected
    spread = [Retry(2, base_delay=1, max_delay=1, random=random.Random(7).random).backoff(1)]
    spread += [Retry(2, base_delay=1, max_delay=1).backoff(1) for _ in range(50)]
    assert min(spread) < 0.5 < max(spread)


async def test_retries_until_success_sleeping_the_backoffs() -> None:
    clock = RecordingClock()
    retry = Retry(4, base_delay=1, max_delay=3, random=lambda: 0.5, clock=clock)
    result = await retry.call(failing(3, lambda: ConnectionResetError("reset")))
    assert result == "ok after 4"
    assert clock.sleeps == [0.5, 1.0, 1.5]


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    clock = RecordingClock()
    errors = iter([OSError("first"), OSError("second"), OSError("third")])

    async def fn() -> None:
        raise next(errors)

    with pytest.raises(OSError, match="third"):
        await Retry(3, clock=clock).call(fn)
    assert len(clock.sleeps) == 2


async def test_retry_after_is_the_minimum_wait_up_to_a_cap() -> None:
    clock = RecordingClock()
    retry = Retry(
        3,
        base_delay=0.1,
        random=lambda: 0.99,
        max_retry_after=30,
        retry_on=lambda exc: True,
        clock=clock,
    )

    def limited(seconds: float | None) -> Callable[[], UpstreamRateLimited]:
        return lambda: UpstreamRateLimited("429", service="plex", retry_after=seconds)

    await retry.call(failing(1, limited(12.0)))
    await retry.call(failing(1, limited(3600.0)))
    await retry.call(failing(1, limited(None)))
    await retry.call(failing(1, lambda: CircuitOpenError("b", retry_after=0.0)))
    assert clock.sleeps == [12.0, 30.0, 0.099, 0.099]
    assert retry.delay(CircuitOpenError("b", retry_after=2.5), 1) == 2.5


async def test_non_idempotent_calls_are_never_retried() -> None:
    clock = RecordingClock()
    fn = failing(1, lambda: UpstreamUnavailable("down", service="overseerr"))
    with pytest.raises(UpstreamUnavailable):
        await Retry(5, clock=clock).call(fn, idempotent=False)
    assert clock.sleeps == []
    assert await Retry(5, clock=clock).call(fn, idempotent=True) == "ok after 2"


async def test_errors_the_predicate_refuses_are_raised_at_once() -> None:
    clock = RecordingClock()
    with pytest.raises(UpstreamNotFound):
        await Retry(5, clock=clock).call(failing(1, lambda: UpstreamNotFound("?", service="x")))
    with pytest.raises(ValueError, match="nope"):
        await Retry(5, clock=clock).call(failing(1, lambda: ValueError("nope")))
    assert clock.sleeps == []
    custom = Retry(5, retry_on=lambda exc: isinstance(exc, ValueError), clock=clock)
    assert await custom.call(failing(2, lambda: ValueError("again"))) == "ok after 3"


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ConnectionRefusedError(), True),
        (OSError("net down"), True),
        (TimeoutError(), True),
        (TimeoutExceeded("t", timeout=1), True),
        (UpstreamTimeout("t", service="s"), True),
        (UpstreamUnavailable("u", service="s"), True),
        (UpstreamRateLimited("r", service="s"), True),
        (UpstreamError("bad gateway", service="s", status=502), True),
        (UpstreamError("unavailable", service="s", status=503), True),
        (UpstreamError("gateway timeout", service="s", status=504), True),
        (UpstreamError("too many", service="s", status=429), True),
        (UpstreamError("internal", service="s", status=500), False),
        (UpstreamError("no status", service="s"), False),
        (UpstreamBadRequest("400", service="s", status=400), False),
        (CircuitOpenError("b"), False),
        (ValueError(), False),
    ],
)
def test_default_predicate(error: Exception, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_budget_allows_ratio_plus_reserve_over_the_window(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.2, window=10, min_per_second=0, clock=clock)
    assert not budget.try_withdraw()
    for _ in range(10):
        budget.deposit()
    assert budget.available == pytest.approx(2)
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    clock.advance(9)
    assert not budget.try_withdraw()
    clock.advance(1)  # the first second's deposits and withdrawals left the window
    assert budget.available == 0
    budget.deposit()
    assert budget.available == pytest.approx(0.2)

    clock.advance(3.5)
    for _ in range(5):
        budget.deposit()  # a new second: the bucket of the second 10 s ago is reused
        clock.advance(1)
    assert budget.available == pytest.approx(1.2)

    reserve = RetryBudget(ratio=0.0, window=2, min_per_second=1.5, clock=clock)
    assert [reserve.try_withdraw() for _ in range(4)] == [True, True, True, False]
    clock.advance(100)
    assert reserve.available == 3.0
    assert "ratio=0.0" in repr(reserve)


async def test_budget_refusal_raises_chained_from_the_last_error(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.5, window=10, min_per_second=0, clock=clock)
    retry = Retry(5, budget=budget, clock=RecordingClock(), name="plex")
    error = UpstreamUnavailable("down", service="plex")

    async def down() -> None:
        raise error

    with pytest.raises(RetryBudgetExhausted) as caught:
        await retry.call(down)  # one call made: room for half a retry, so none
    assert caught.value.__cause__ is error
    assert str(caught.value) == "plex: retry budget exhausted after 1 attempt(s)"
    with pytest.raises(RetryBudgetExhausted) as caught:
        await retry.call(down)  # two calls made: room for one retry, then refused
    assert caught.value.__cause__ is error
    assert str(caught.value) == "plex: retry budget exhausted after 2 attempt(s)"
    assert budget.available == 0


def test_invalid_settings_are_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="first attempt"):
        Retry(0)
    with pytest.raises(ValueError, match="multiplier"):
        Retry(3, multiplier=0.5)
    with pytest.raises(ValueError, match="window"):
        RetryBudget(window=0, clock=clock)
    assert "Retry(3" in repr(Retry(3))


async def test_cancellation_is_not_retried() -> None:
    clock = RecordingClock()

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await Retry(3, clock=clock).call(cancelled)
    assert clock.sleeps == []
