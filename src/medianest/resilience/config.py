"""The configuration of an upstream's resilience policy (``[upstreams.<name>.policy]``).

:class:`PolicyConfig` is one section per strategy, each optional with sane defaults, so an
empty table gives the default policy. In ``medianest.toml``::

    [upstreams.plex.policy.timeout]
    attempt = 5          # seconds per attempt
    total = 20           # seconds for the whole call, retries included

    [upstreams.plex.policy.retry]
    max_attempts = 4
    budget = { ratio = 0.1 }

    [upstreams.plex.policy.breaker]
    window_type = "time"
    window_size = 30     # seconds
    open_duration = 15

    [upstreams.plex.policy.bulkhead]
    enabled = false

Every section refuses unknown keys, so a typo is an error at start-up, not a silently
ignored setting. Durations are seconds (floats). The models are frozen: a reload builds and
validates new ones, then swaps.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BreakerConfig",
    "BulkheadConfig",
    "FallbackConfig",
    "PolicyConfig",
    "RetryBudgetConfig",
    "RetryConfig",
    "TimeoutConfig",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeoutConfig(_Section):
    """``[upstreams.<name>.policy.timeout]``: how long one attempt and the whole call may take.

    Both raise ``TimeoutExceeded`` naming the limit that fired. 0 disables a limit.
    """

    attempt: float = Field(
        10.0, ge=0, description="Seconds one attempt may take before it is abandoned (0: none)."
    )
    total: float = Field(
        30.0,
        ge=0,
        description="Seconds the whole call may take, every attempt and backoff included "
        "(0: none).",
    )


class RetryBudgetConfig(_Section):
    """``[upstreams.<name>.policy.retry.budget]``: the cap on retries across all calls.

    Over the last ``window`` seconds, retries may be at most ``ratio`` times the calls made
    plus ``min_per_second`` per second; beyond that a call fails with
    ``RetryBudgetExhausted`` instead of adding load to a struggling upstream.
    """

    enabled: bool = Field(True, description="Whether retries are limited by a budget.")
    ratio: float = Field(
        0.2, ge=0, description="Retries allowed per call made in the window (0.2: +20% load)."
    )
    window: float = Field(10.0, gt=0, description="Seconds over which calls and retries count.")
    min_per_second: float = Field(
        10.0, ge=0, description="Retries per second always allowed, however few the calls."
    )


class RetryConfig(_Section):
    """``[upstreams.<name>.policy.retry]``: repeating failed attempts.

    Retries only errors worth repeating (connection errors, timeouts, 429, 502/503/504) and
    only calls marked idempotent by the code making them. The wait after the n-th failure is
    random in ``[0, min(max_delay, base_delay * multiplier^(n-1)))`` (full jitter), and at
    least the ``Retry-After`` the upstream asked for, up to ``max_retry_after``.
    """

    enabled: bool = Field(True, description="Whether failed attempts are retried at all.")
    max_attempts: int = Field(
        3, ge=1, le=20, description="Attempts per call, the first included (1: no retry)."
    )
    base_delay: float = Field(0.1, ge=0, description="Seconds of backoff after the 1st failure.")
    max_delay: float = Field(5.0, ge=0, description="Cap in seconds on one backoff.")
    multiplier: float = Field(2.0, ge=1, description="Growth of the backoff per failure.")
    max_retry_after: float = Field(
        30.0, ge=0, description="Cap in seconds on a wait requested by the upstream (Retry-After)."
    )
    budget: RetryBudgetConfig = Field(
        default_factory=RetryBudgetConfig, description="The retry budget shared by all calls."
    )

    @model_validator(mode="after")
    def _delays_ordered(self) -> RetryConfig:
        if self.max_delay < self.base_delay:
            raise ValueError("retry.max_delay must be >= retry.base_delay")
        return self


class BreakerConfig(_Section):
    """``[upstreams.<name>.policy.breaker]``: the circuit breaker.

    Trips OPEN when, over the window (the last ``window_size`` calls, or the last
    ``window_size`` seconds with ``window_type = "time"``) and after at least
    ``minimum_calls`` calls, the failure rate or the slow-call rate reaches its threshold.
    Connection errors and timeouts are failures; a 404 or a rejected request is not. After
    ``open_duration`` it lets ``half_open_probes`` calls through and closes if they went
    well. ``/api/v1/services`` shows each breaker's state.
    """

    enabled: bool = Field(True, description="Whether calls go through a circuit breaker.")
    failure_rate_threshold: float = Field(
        50.0, gt=0, le=100, description="Percent of failed calls in the window that trips it."
    )
    slow_call_rate_threshold: float = Field(
        100.0, gt=0, le=100, description="Percent of slow calls in the window that trips it."
    )
    slow_call_duration: float = Field(
        5.0, gt=0, description="Seconds above which a call counts as slow."
    )
    window_type: Literal["count", "time"] = Field(
        "count", description='"count": the last window_size calls; "time": the last seconds.'
    )
    window_size: int = Field(
        20, ge=1, le=3600, description="Calls (count window) or seconds (time window) judged."
    )
    minimum_calls: int = Field(
        10, ge=1, description="Calls needed in the window before the breaker may trip."
    )
    open_duration: float = Field(
        30.0, gt=0, description="Seconds the breaker stays open before probing."
    )
    open_duration_multiplier: float = Field(
        1.0, ge=1, description="Growth of the open duration on each trip in a row (1: none)."
    )
    max_open_duration: float = Field(
        300.0, gt=0, description="Cap in seconds on the grown open duration."
    )
    open_duration_jitter: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Fraction by which each open duration is randomly shortened, so that "
        "several hub instances do not probe at once.",
    )
    half_open_probes: int = Field(
        3, ge=1, description="Calls let through while half-open to test the upstream."
    )
    max_half_open_wait: float = Field(
        60.0,
        ge=0,
        description="Seconds half-open may last before it reopens, e.g. when a probe hangs "
        "(0: no limit).",
    )

    @model_validator(mode="after")
    def _open_durations_ordered(self) -> BreakerConfig:
        if self.max_open_duration < self.open_duration:
            raise ValueError("breaker.max_open_duration must be >= breaker.open_duration")
        return self


class BulkheadConfig(_Section):
    """``[upstreams.<name>.policy.bulkhead]``: a cap on concurrent calls to the upstream.

    Calls beyond ``max_concurrent`` wait in a queue of ``max_queued`` for at most
    ``max_wait`` seconds; others are refused at once with ``BulkheadFull``.
    """

    enabled: bool = Field(True, description="Whether concurrent calls are capped.")
    max_concurrent: int = Field(64, ge=1, description="Calls allowed to run at the same time.")
    max_queued: int = Field(256, ge=0, description="Calls allowed to wait for a free slot.")
    max_wait: float = Field(
        1.0, ge=0, description="Seconds a call may wait for a slot (0: do not wait)."
    )


class FallbackConfig(_Section):
    """``[upstreams.<name>.policy.fallback]``: answering when the upstream cannot.

    With ``last_good``, the last successful answer to the same request (calls made with a
    ``key``) is served marked stale when the upstream is unavailable. Static defaults are
    chosen in code, per endpoint.
    """

    last_good: bool = Field(
        True, description="Serve the last good answer, marked stale, when the upstream is down."
    )
    max_entries: int = Field(
        1024, ge=1, description="Distinct requests whose last good answer is kept."
    )
    max_age: float = Field(
        0.0, ge=0, description="Seconds after which a last good answer is not served (0: never)."
    )


class PolicyConfig(_Section):
    """``[upstreams.<name>.policy]``: the resilience policy of one upstream.

    Applied from the outside in as fallback, bulkhead, total timeout, retry, circuit breaker,
    per-attempt timeout, call. Each strategy has its own sub-table; all keys are optional.
    """

    timeout: TimeoutConfig = Field(
        default_factory=TimeoutConfig, description="Per-attempt and total time limits."
    )
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries of failures.")
    breaker: BreakerConfig = Field(
        default_factory=BreakerConfig, description="The circuit breaker."
    )
    bulkhead: BulkheadConfig = Field(
        default_factory=BulkheadConfig, description="The concurrency cap."
    )
    fallback: FallbackConfig = Field(
        default_factory=FallbackConfig, description="Answers served when the upstream fails."
    )
