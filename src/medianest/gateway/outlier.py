"""Passive outlier detection: take an instance out of rotation after failures in a row.

Modelled on Envoy's consecutive-failure detector. Every answer an instance gives (or fails to
give) is reported: a success resets its count of consecutive failures; the
``consecutive_failures``-th failure in a row ejects it for ``base_ejection * ejections``
seconds, where ``ejections`` counts how often it was ejected, capped at ``max_ejection``. An
instance that then stays admitted for ``max_ejection`` seconds has its multiplier forgotten,
so an old incident does not lengthen the next ejection forever.

Ejection never takes more than ``max_ejected_percent`` of the instances out at once
(``floor(n * percent / 100)``): with the default 50 % one of two instances may be ejected,
the only instance of a route never is, and only 100 % allows every instance to go. A failure
that would exceed the share is still counted, so the instance is ejected as soon as room
frees up.

Re-admission is lazy: nothing is scheduled; an ejection simply ends when the clock passes
``ejected_until``, which :meth:`OutlierDetector.readmit` notices at the next pick. Failures
reported for an instance that is already ejected (requests still in flight when it was
ejected) do not extend its ejection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from prometheus_client import Counter

from medianest.backends import mask_url
from medianest.config.gateway import Outlier
from medianest.observability import get_logger
from medianest.resilience.clock import Clock

if TYPE_CHECKING:
    from medianest.gateway.balancing import Endpoint

FailureKind = Literal["5xx", "gateway", "connect", "timeout"]

EJECTIONS = Counter(
    "medianest_gateway_ejections_total",
    "Instances ejected by passive outlier detection, by route and instance.",
    ("route", "instance"),
)
_log = get_logger("medianest.gateway")


class OutlierDetector:
    """Applies one route's :class:`Outlier` settings to the endpoints of its pool."""

    def __init__(self, config: Outlier, *, clock: Clock, name: str) -> None:
        self.config = config
        self.clock = clock
        self.name = name

    def readmit(self, endpoints: Sequence[Endpoint]) -> None:
        """End every ejection whose time is up (called before each pick and snapshot)."""
        now = self.clock.monotonic()
        for endpoint in endpoints:
            if endpoint.ejected_until is not None and endpoint.ejected_until <= now:
                endpoint.ejected_until = None
                endpoint.readmitted_at = now
                endpoint.consecutive_failures = 0
                _log.info(
                    "gateway_instance_readmitted",
                    route=self.name,
                    instance=mask_url(endpoint.url),
                    ejections=endpoint.ejections,
                )

    def success(self, endpoint: Endpoint) -> None:
        """An answer below 500: the run of failures is broken."""
        endpoint.consecutive_failures = 0

    def failure(self, endpoint: Endpoint, kind: FailureKind, pool: Sequence[Endpoint]) -> bool:
        """Count a failure of ``endpoint``; eject it if due and allowed. True when ejected."""
        now = self.clock.monotonic()
        endpoint.last_failure = kind
        if endpoint.ejected(now):
            return False
        endpoint.consecutive_failures += 1
        if endpoint.consecutive_failures < self.config.consecutive_failures:
            return False
        if not self._room_to_eject(pool, now):
            return False
        if (
            endpoint.readmitted_at is not None
            and now - endpoint.readmitted_at >= self.config.max_ejection
        ):
            endpoint.ejections = 0
        endpoint.ejections += 1
        duration = min(self.config.base_ejection * endpoint.ejections, self.config.max_ejection)
        endpoint.ejected_until = now + duration
        endpoint.consecutive_failures = 0
        EJECTIONS.labels(route=self.name, instance=mask_url(endpoint.url)).inc()
        _log.warning(
            "gateway_instance_ejected",
            route=self.name,
            instance=mask_url(endpoint.url),
            seconds=duration,
            ejections=endpoint.ejections,
            failure=kind,
        )
        return True

    def _room_to_eject(self, pool: Sequence[Endpoint], now: float) -> bool:
        allowed = len(pool) * self.config.max_ejected_percent // 100
        ejected = sum(1 for e in pool if e.ejected(now))
        return ejected + 1 <= allowed
