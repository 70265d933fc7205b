"""Rate limits of gateway routes, counted by the ``limits`` library in memory or in Redis.

A route declares limits such as ``{limit = "10/second;1000/hour", per = "key", strategy =
"moving_window"}``. :meth:`RateLimiter.check` counts a request against each of them and
answers a :class:`RateDecision`: refused if any limit is exceeded, reporting the most
restrictive one. A refused request still counts against the route's other limits (hammering
a short window also spends the long one). Counters are named ``<route>/<strategy>/<per>/
<subject>`` (see :func:`counter_subject`).

Storage is chosen by URL: ``memory://`` for one instance, ``redis://`` / ``rediss://``
shared by every instance. **When Redis fails** the limiter neither stops limiting (fail
open) nor refuses everything (fail closed): it enforces the same limits with counters local
to this instance, so a client gets at most the limit times the number of instances.
``degraded`` is then true, the ``medianest_gateway_rate_limit_degraded`` gauge is 1,
:meth:`RateLimiter.readiness` fails with the reason, and each failed Redis call counts in
``medianest_gateway_rate_limit_storage_errors_total``. Requests never wait for Redis to come
back: at most once every ``probe_interval`` seconds a background ping tries it, and the first
answer switches counting back to Redis. Redis calls have short timeouts and no retries: a
retry would only delay a request that a local counter can answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from limits import RateLimitItem, parse_many
from limits.aio import strategies
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.errors import StorageError
from prometheus_client import CollectorRegistry

from medianest.backends import BackendBase, mask_url, url_scheme
from medianest.config.gateway import RateLimit as RateLimitConfig
from medianest.errors import BackendUnavailable, ConfigurationError
from medianest.gateway.ratelimit_headers import (
    RateDecision,
    RateIdentity,
    RateLimitMetrics,
    client_ip,
    most_restrictive,
)
from medianest.observability import get_logger
from medianest.resilience.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["RateDecision", "RateIdentity", "RateLimitMetrics", "RateLimiter", "client_ip"]

SCHEMES = ("memory", "redis", "rediss")
DEGRADED_REASON = "redis rate-limit storage unreachable; enforcing local limits"
_log = get_logger("medianest.gateway.ratelimit")
_STRATEGIES: dict[str, type[strategies.RateLimiter]] = {
    "fixed_window": strategies.FixedWindowRateLimiter,
    "moving_window": strategies.MovingWindowRateLimiter,
    "sliding_window_counter": strategies.SlidingWindowCounterRateLimiter,
}


@lru_cache(maxsize=512)
def _items(limit: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(limit))


def counter_subject(per: str, identity: RateIdentity) -> str:
    """Whose counter a request of ``identity`` spends for a limit ``per`` key/user/ip/route.

    ``key=<api key id>``, ``user=<user>``, ``ip=<address>`` or ``*`` (``per = "route"``: one
    counter for everyone). A ``per = "key"`` or ``"user"`` limit on a request without a key
    or user counts the client address instead, so an anonymous caller cannot escape a limit
    by not authenticating, nor share one bucket with every other anonymous caller. Values
    are percent-encoded, so no value can forge another's counter name.
    """
    if per == "route":
        return "*"
    if per == "key" and identity.key_id is not None:
        return "key=" + quote(identity.key_id, safe="")
    if per == "user" and identity.user is not None:
        return "user=" + quote(identity.user, safe="")
    return "ip=" + quote(identity.ip, safe=".:")


Plan = list[tuple[RateLimitItem, str, tuple[str, ...]]]
Outcome = tuple[bool, int, int, float, str]


class RateLimiter(BackendBase):
    """Counts requests against route limits; see the module docstring for degradation.

    ``timeout`` bounds each Redis call (connect and answer), ``key_prefix`` starts every
    Redis key, ``probe_interval`` is how often a degraded limiter tries Redis again.
    """

    def __init__(
        self,
        url: str,
        *,
        registry: CollectorRegistry | None = None,
        key_prefix: str = "medianest:ratelimit",
        timeout: float = 0.5,
        probe_interval: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        scheme = url_scheme(url)
        if scheme not in SCHEMES:
            known, shown = ", ".join(f"{s}://" for s in SCHEMES), scheme or repr(mask_url(url))
            raise ConfigurationError(
                f"unknown rate-limit storage {shown}://; known schemes: {known}",
                problems=[("gateway.rate_limit_storage", mask_url(url), f"one of {known}")],
            )
        self.url = url
        self.probe_interval = probe_interval
        self._clock = clock
        self._local = MemoryStorage()
        self._local_strategies = {n: s(self._local) for n, s in _STRATEGIES.items()}
        self._redis: aioredis.Redis | None = None
        self._shared_strategies: dict[str, strategies.RateLimiter] = {}
        self._errors: tuple[type[Exception], ...] = ()
        if scheme != "memory":
            self._open_redis(key_prefix, timeout)
        self._degraded = False
        self._next_probe = 0.0
        self._probe_task: asyncio.Task[bool] | None = None
        self._metrics = RateLimitMetrics.for_registry(registry)
        self._metrics.track(self)

    def _open_redis(self, key_prefix: str, timeout: float) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError as exc:
            raise ConfigurationError(
                "the rate-limit storage redis:// needs the redis driver; "
                "install it with: pip install 'medianest[redis]'"
            ) from exc

        pool = aioredis.ConnectionPool.from_url(
            self.url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = aioredis.Redis.from_pool(pool)
        options: dict[str, Any] = {"connection_pool": pool}
        shared = RedisStorage(
            f"async+{self.url}", implementation="redispy", key_prefix=key_prefix, **options
        )
        self._shared_strategies = {n: s(shared) for n, s in _STRATEGIES.items()}
        self._errors = (RedisError, StorageError, OSError)

    def __repr__(self) -> str:
        return f"RateLimiter({mask_url(self.url)!r}, degraded={self._degraded})"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RateLimiter:
        """A limiter on ``memory://`` or ``redis(s)://...``; else a ConfigurationError."""
        return cls(url, **options)

    @property
    def shared(self) -> bool:
        """True when counters live in Redis, shared by every hub instance."""
        return self._redis is not None

    @property
    def degraded(self) -> bool:
        """True while Redis fails and this instance's local counters decide instead."""
        return self._degraded

    async def start(self) -> None:
        """Probe Redis; an unreachable one starts the limiter degraded, not failed."""
        await self.probe()

    async def close(self) -> None:
        task, self._probe_task = self._probe_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()
        timer = getattr(self._local, "timer", None)
        if timer is not None:
            timer.cancel()
        self._metrics.untrack(self)

    async def ping(self) -> None:
        """Raise :class:`~medianest.errors.BackendUnavailable` when Redis does not answer."""
        if self._redis is None:
            return
        try:
            await self._redis.ping()
        except self._errors as exc:
            raise BackendUnavailable(
                f"redis rate-limit storage unreachable: {type(exc).__name__}: {exc}",
                backend=mask_url(self.url),
            ) from exc

    async def probe(self) -> bool:
        """Ping Redis now and enter or leave degraded mode by its answer."""
        try:
            await self.ping()
        except BackendUnavailable as exc:
            self._failed(exc)
            return False
        if self._degraded:
            self._degraded = False
            _log.info("rate_limit_storage_recovered", storage=mask_url(self.url))
        return True

    async def wait_for_probe(self) -> None:
        """Wait for a background probe started by :meth:`check`, if one is running."""
        if self._probe_task is not None:
            await asyncio.gather(self._probe_task, return_exceptions=True)

    async def readiness(self) -> str:
        """Readiness probe: raise with :data:`DEGRADED_REASON` while degraded.

        A healthy limiter pings Redis here, so an outage shows even without traffic; a
        degraded one tries again only when its probe interval has passed.
        """
        if not self.shared:
            return "memory rate-limit storage (counters local to this instance)"
        if not self._degraded or self._clock.monotonic() >= self._next_probe:
            await self.probe()
        if self._degraded:
            raise BackendUnavailable(DEGRADED_REASON, backend=mask_url(self.url))
        return "redis rate-limit storage reachable"

    async def check(
        self, route_name: str, limits: Sequence[RateLimitConfig], identity: RateIdentity
    ) -> RateDecision:
        """Count one request of ``identity`` on ``route_name`` against ``limits``."""
        plan: Plan = [
            (
                item,
                cfg.strategy,
                (route_name, cfg.strategy, cfg.per, counter_subject(cfg.per, identity)),
            )
            for cfg in limits
            for item in _items(cfg.limit)
        ]
        if self.shared and not self._degraded:
            try:
                outcomes = await self._count(self._shared_strategies, plan)
                return self._decide(route_name, outcomes, degraded=False)
            except self._errors as exc:
                self._failed(exc)
        elif self._degraded:
            self._probe_if_due()
        outcomes = await self._count(self._local_strategies, plan)
        return self._decide(route_name, outcomes, degraded=self.shared)

    async def _count(self, chosen: dict[str, strategies.RateLimiter], plan: Plan) -> list[Outcome]:
        outcomes = []
        for item, strategy, identifiers in plan:
            limiter = chosen[strategy]
            allowed = await limiter.hit(item, *identifiers)
            stats = await limiter.get_window_stats(item, *identifiers)
            reset_after = max(0.0, stats.reset_time - time.time())
            if reset_after == 0.0 and stats.remaining < item.amount:
                # limits' Redis sliding window reports "now" while its window is brand new
                # (a TTL of exactly two windows, taken modulo one): a full window is honest.
                reset_after = float(item.get_expiry())
            policy = f"{item.amount};w={item.get_expiry()}"
            outcomes.append((allowed, item.amount, stats.remaining, reset_after, policy))
        return outcomes

    def _decide(self, route_name: str, outcomes: list[Outcome], *, degraded: bool) -> RateDecision:
        decision = most_restrictive(outcomes, degraded=degraded)
        if not decision.allowed:
            self._metrics.count_refusal(route_name)
        return decision

    def _failed(self, exc: BaseException) -> None:
        self._metrics.count_storage_error()
        self._next_probe = self._clock.monotonic() + self.probe_interval
        if not self._degraded:
            self._degraded = True
            _log.warning(
                "rate_limit_storage_degraded",
                storage=mask_url(self.url),
                error=f"{type(exc).__name__}: {exc}",
                reason=DEGRADED_REASON,
            )

    def _probe_if_due(self) -> None:
        running = self._probe_task is not None and not self._probe_task.done()
        if running or self._clock.monotonic() < self._next_probe:
            return
        self._next_probe = self._clock.monotonic() + self.probe_interval
        self._probe_task = asyncio.create_task(self.probe(), name="rate-limit storage probe")
