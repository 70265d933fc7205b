"""Resilience for every call to an upstream: timeouts, retries, breaker, bulkhead, fallback.

Each upstream gets one :class:`Policy`, usually built from its configuration with
:meth:`Policy.from_config`, and every adapter call goes through it::

    policy = Policy.from_config("plex", settings.upstreams["plex"].policy)
    sections = await policy.call(lambda: client.library_sections(), key="sections")

The strategies are also usable on their own. All of them read time from an injectable
:class:`Clock`; tests use :class:`FakeClock` to drive them deterministically. No strategy
keeps global state: the state (breaker window, bulkhead slots, retry budget, last good
answers) lives in the objects a policy holds. The one module-level cache maps a Prometheus
registry to its metrics collector (:class:`ResilienceMetrics`), because a registry accepts
each metric name only once.
"""

from medianest.resilience.breaker import CircuitBreaker
from medianest.resilience.bulkhead import Bulkhead, BulkheadSnapshot
from medianest.resilience.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock, TimerClock
from medianest.resilience.config import (
    BreakerConfig,
    BulkheadConfig,
    FallbackConfig,
    PolicyConfig,
    RetryBudgetConfig,
    RetryConfig,
    TimeoutConfig,
)
from medianest.resilience.fallback import (
    Alternate,
    Fallback,
    FallbackStrategy,
    LastGood,
    Recovered,
    Static,
    fallback_errors,
    is_unavailable,
)
from medianest.resilience.metrics import OUTCOMES, STATE_VALUES, ResilienceMetrics
from medianest.resilience.policy import Policy, PolicyResult
from medianest.resilience.retry import Retry, RetryBudget, is_retryable
from medianest.resilience.timeout import Timeout, TimeoutScope
from medianest.resilience.window import (
    BreakerSnapshot,
    BreakerState,
    StateListener,
    default_record_failure,
)

__all__ = [
    "OUTCOMES",
    "STATE_VALUES",
    "SYSTEM_CLOCK",
    "Alternate",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "Bulkhead",
    "BulkheadConfig",
    "BulkheadSnapshot",
    "CircuitBreaker",
    "Clock",
    "FakeClock",
    "Fallback",
    "FallbackConfig",
    "FallbackStrategy",
    "LastGood",
    "Policy",
    "PolicyConfig",
    "PolicyResult",
    "Recovered",
    "ResilienceMetrics",
    "Retry",
    "RetryBudget",
    "RetryBudgetConfig",
    "RetryConfig",
    "StateListener",
    "Static",
    "SystemClock",
    "Timeout",
    "TimeoutConfig",
    "TimeoutScope",
    "TimerClock",
    "default_record_failure",
    "fallback_errors",
    "is_retryable",
    "is_unavailable",
]
