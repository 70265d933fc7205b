"""Health checking: active HTTP probes and passive reports, with hysteresis, into the registry.

A :class:`HealthChecker` keeps one tracker per registered instance (refreshed from the
registry every ``interval``) and two kinds of evidence feed the same counters:

* **active**: a ``GET`` of the instance's ``health_check_url`` (one shared aiohttp session,
  no redirects followed, ``timeout`` seconds at most); any 2xx answer is a success;
* **passive**: :meth:`HealthChecker.report` from whoever talks to the instance anyway (the
  gateway reports each proxied call's outcome).

The state flips only after ``rise`` consecutive successes (to ``healthy``) or ``fall``
consecutive failures (to ``unhealthy``), so one blip changes nothing. A flip is written with
:meth:`~medianest.discovery.base.ServiceRegistry.set_health` and then handed as a ``health``
:class:`~medianest.discovery.base.Change` to every ``on_change`` hook (plain or async
callables; today a log line and whatever the app adds, broker events once messaging
lands). A hook that raises is logged and does not stop the others.

Each instance is probed on its own schedule: the first probe after a random delay of up to
``jitter * interval``, then every ``interval * (1 ± jitter)`` (uniformly spread), so checks
of many instances do not line up. Sleeping goes through a
:class:`~medianest.resilience.clock.Clock`, so tests drive the schedule with a ``FakeClock``
and never wait for real intervals. If the registry is unreachable the checker keeps its last
known view (and the metric :mod:`medianest.discovery.metrics` computes from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import CollectorRegistry

from medianest.backends import BackendBase
from medianest.discovery.base import Change, Criteria, HealthState, Registration, ServiceRegistry
from medianest.discovery.metrics import DiscoveryMetrics
from medianest.errors import BackendError, ConfigurationError
from medianest.observability.logging import get_logger
from medianest.resilience.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from medianest.config.discovery import DiscoverySettings

Hook = Callable[[Change], Awaitable[None] | None]
_log = get_logger("medianest.discovery.health")


@dataclass
class _Tracker:
    name: str
    url: str | None
    state: HealthState
    successes: int = 0
    failures: int = 0
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one active probe: ``ok`` and, on failure, why."""

    instance_id: str
    ok: bool
    reason: str = ""


class HealthChecker(BackendBase):
    """Active and passive health of every instance of ``registry`` (module docstring)."""

    def __init__(
        self,
        registry: ServiceRegistry,
        *,
        interval: float = 10.0,
        timeout: float = 2.0,
        rise: int = 2,
        fall: int = 3,
        jitter: float = 0.1,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        on_change: Iterable[Hook] = (),
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        problems = [
            (key, repr(value), expected)
            for key, value, ok, expected in (
                ("interval", interval, interval > 0, "> 0 seconds"),
                ("timeout", timeout, 0 < timeout <= interval, "> 0 and <= interval"),
                ("rise", rise, rise >= 1, ">= 1"),
                ("fall", fall, fall >= 1, ">= 1"),
                ("jitter", jitter, 0 <= jitter < 1, "a fraction in [0, 1)"),
            )
            if not ok
        ]
        if problems:
            keys = ", ".join(key for key, _, _ in problems)
            raise ConfigurationError(f"invalid health check settings: {keys}", problems=problems)
        self.registry = registry
        self.interval, self.timeout, self.rise, self.fall = interval, timeout, rise, fall
        self.jitter = jitter
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_change: list[Hook] = list(on_change)
        self._trackers: dict[str, _Tracker] = {}
        self._session: aiohttp.ClientSession | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._metrics = DiscoveryMetrics.for_registry(metrics_registry)
        self._metrics.attach(self)

    @classmethod
    def from_settings(
        cls, registry: ServiceRegistry, settings: DiscoverySettings, **options: Any
    ) -> HealthChecker:
        """A checker configured by the ``discovery`` settings section."""
        return cls(
            registry,
            interval=settings.health_interval,
            timeout=settings.health_timeout,
            rise=settings.rise,
            fall=settings.fall,
            jitter=settings.jitter,
            **options,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the registry and start probing on schedule (idempotent)."""
        if self._supervisor is not None:
            return
        self._metrics.attach(self)
        self._supervisor = asyncio.create_task(self._supervise(), name="health-supervisor")
        with contextlib.suppress(BackendError):
            await self.refresh()

    async def close(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        tasks = [t.task for t in self._trackers.values() if t.task is not None]
        if supervisor is not None:
            tasks.append(supervisor)
        for tracker in self._trackers.values():
            tracker.task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._metrics.detach(self)

    # -- evidence -------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read the registry: track new instances, forget gone ones, adopt stored states."""
        try:
            registrations = await self.registry.discover(Criteria(healthy_only=False))
        except BackendError as exc:
            _log.warning("health checker keeps its last known view", error=str(exc))
            raise
        current = {r.instance.id: r for r in registrations}
        for instance_id in [i for i in self._trackers if i not in current]:
            self._forget(instance_id)
        for registration in registrations:
            self._track(registration)

    async def check(self, instance_id: str | None = None) -> list[CheckResult]:
        """Probe now: every registered instance with a health URL, or just ``instance_id``.

        Probing everything re-reads the registry first (keeping the last known view when
        it cannot be read).
        """
        if instance_id is None:
            with contextlib.suppress(BackendError):
                await self.refresh()
        elif instance_id not in self._trackers:
            registration = await self.registry.health(instance_id)
            if registration is not None:
                self._track(registration)
        ids = [
            i for i, t in self._trackers.items() if t.url is not None and instance_id in (None, i)
        ]
        return list(await asyncio.gather(*(self._check_one(i) for i in ids)))

    async def report(self, instance_id: str, ok: bool, reason: str = "") -> None:
        """A passive outcome (a proxied call that worked or failed) for ``instance_id``."""
        if instance_id not in self._trackers:
            try:
                registration = await self.registry.health(instance_id)
            except BackendError as exc:
                _log.warning("passive health report dropped", instance=instance_id, error=str(exc))
                return
            if registration is None:
                return
            self._track(registration)
        await self._record(instance_id, ok, reason or ("" if ok else "calls are failing"))

    def next_delay(self) -> float:
        """Seconds until an instance's next probe: ``interval * (1 ± jitter)``."""
        return self.interval * (1 + self.rng.uniform(-self.jitter, self.jitter))

    def known_states(self) -> Mapping[str, tuple[str, HealthState]]:
        """The last known (service, state) of every tracked instance (for the metric)."""
        return {i: (t.name, t.state) for i, t in self._trackers.items()}

    # -- internals ------------------------------------------------------------------------

    def _track(self, registration: Registration) -> None:
        instance = registration.instance
        tracker = self._trackers.get(instance.id)
        if tracker is None:
            tracker = self._trackers[instance.id] = _Tracker(
                instance.name, instance.health_check_url, registration.state
            )
        elif tracker.url != instance.health_check_url or tracker.name != instance.name:
            tracker.name, tracker.url = instance.name, instance.health_check_url
            tracker.successes = tracker.failures = 0
        tracker.state = registration.state
        if self._supervisor is not None and tracker.url is not None and tracker.task is None:
            tracker.task = asyncio.create_task(
                self._check_forever(instance.id), name=f"health-check:{instance.id}"
            )

    def _forget(self, instance_id: str) -> None:
        tracker = self._trackers.pop(instance_id, None)
        if tracker is not None and tracker.task is not None:
            tracker.task.cancel()

    async def _supervise(self) -> None:
        while True:
            await self.clock.sleep(self.interval)
            with contextlib.suppress(BackendError):
                await self.refresh()

    async def _check_forever(self, instance_id: str) -> None:
        await self.clock.sleep(self.rng.uniform(0, self.interval * self.jitter))
        while (tracker := self._trackers.get(instance_id)) is not None and tracker.url:
            try:
                await self._check_one(instance_id)
            except Exception:
                _log.exception("health check failed unexpectedly", instance=instance_id)
            await self.clock.sleep(self.next_delay())

    async def _check_one(self, instance_id: str) -> CheckResult:
        tracker = self._trackers[instance_id]
        assert tracker.url is not None
        ok, reason = await self._probe(tracker.url)
        await self._record(instance_id, ok, reason)
        return CheckResult(instance_id, ok, reason)

    async def _probe(self, url: str) -> tuple[bool, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.get(
                url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                status = response.status
        except TimeoutError:
            return False, f"no answer within {self.timeout:g} s"
        except aiohttp.ClientError as exc:
            return False, f"unreachable: {exc or type(exc).__name__}"
        if 200 <= status < 300:
            return True, ""
        return False, f"health check answered HTTP {status}"

    async def _record(self, instance_id: str, ok: bool, reason: str) -> None:
        """Count one result; flip the state after ``rise``/``fall`` in a row."""
        tracker = self._trackers.get(instance_id)
        if tracker is None:
            return
        if ok:
            tracker.successes, tracker.failures = tracker.successes + 1, 0
            target = HealthState.HEALTHY if tracker.successes >= self.rise else None
        else:
            tracker.successes, tracker.failures = 0, tracker.failures + 1
            target = HealthState.UNHEALTHY if tracker.failures >= self.fall else None
        if target is None or tracker.state is target:
            return
        previous, tracker.state = tracker.state, target
        reason = "" if ok else reason
        try:
            known = await self.registry.set_health(instance_id, target, reason)
            registration = await self.registry.health(instance_id) if known else None
        except BackendError as exc:
            tracker.state = previous
            _log.warning("health verdict not recorded", instance=instance_id, error=str(exc))
            return
        if not known:
            self._forget(instance_id)
            return
        _log.info(
            "instance health changed",
            instance=instance_id,
            service=tracker.name,
            previous=previous.value,
            state=target.value,
            reason=reason,
        )
        await self._notify(Change("health", instance_id, tracker.name, registration))

    async def _notify(self, change: Change) -> None:
        for hook in list(self.on_change):
            try:
                result = hook(change)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("health change hook failed", instance=change.instance_id)
