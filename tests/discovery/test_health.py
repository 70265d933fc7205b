"""Health checks against a real HTTP upstream whose health endpoint the tests flip.

Probes go over a real loopback socket; the schedule runs on a ``FakeClock`` so no test
waits for a real interval, and most tests drive probes directly with ``check()``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from medianest.config.discovery import DiscoverySettings
from medianest.discovery import Change, Criteria, HealthState, ServiceInstance
from medianest.discovery.backends.memory import MemoryRegistry
from medianest.discovery.health import HealthChecker
from medianest.errors import BackendUnavailable, ConfigurationError
from medianest.resilience.clock import FakeClock
from tests.support.servers import free_port, serve_asgi


@dataclass
class Upstream:
    url: str
    status: int = 200
    hang: bool = False
    hits: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream(url="")

    async def health(request: Request) -> Response:
        state.hits += 1
        if state.hang:
            await state.release.wait()
        return JSONResponse({"ok": state.status < 300}, status_code=state.status)

    async with serve_asgi(Starlette(routes=[Route("/health", health)])) as server:
        state.url = f"{server.url}/health"
        try:
            yield state
        finally:
            state.release.set()


@pytest.fixture
async def registry() -> AsyncIterator[MemoryRegistry]:
    async with MemoryRegistry() as registry:
        yield registry


@pytest.fixture
def metrics() -> CollectorRegistry:
    return CollectorRegistry()


def instance(instance_id: str, url: str | None, name: str = "svc") -> ServiceInstance:
    return ServiceInstance(
        id=instance_id, name=name, endpoints=("http://127.0.0.1:9",), health_check_url=url
    )


async def state_of(registry: MemoryRegistry, instance_id: str) -> HealthState:
    found = await registry.health(instance_id)
    assert found is not None
    return found.state


def sample(metrics: CollectorRegistry, service: str, state: str) -> float | None:
    labels = {"service": service, "state": state}
    return metrics.get_sample_value("medianest_service_instances", labels)


async def test_rise_and_fall_need_consecutive_results(
    registry: MemoryRegistry, upstream: Upstream, metrics: CollectorRegistry
) -> None:
    changes: list[Change] = []
    checker = HealthChecker(
        registry, rise=2, fall=3, on_change=[changes.append], metrics_registry=metrics
    )
    await registry.register(instance("a", upstream.url))
    try:
        assert [r.ok for r in await checker.check()] == [True]
        assert await state_of(registry, "a") is HealthState.UNKNOWN
        await checker.check()
        assert await state_of(registry, "a") is HealthState.HEALTHY

        for status in (503, 200, 503, 503):  # a blip, then two failures: not three in a row
            upstream.status = status
            await checker.check()
            assert await state_of(registry, "a") is HealthState.HEALTHY
        [result] = await checker.check()
        assert (result.ok, result.reason) == (False, "health check answered HTTP 503")
        found = await registry.health("a")
        assert found is not None
        assert (found.state, found.reason) == (HealthState.UNHEALTHY, result.reason)
        await checker.check()

        upstream.status = 200
        await checker.check()
        assert await state_of(registry, "a") is HealthState.UNHEALTHY
        await checker.check()
        assert await state_of(registry, "a") is HealthState.HEALTHY
    finally:
        await checker.close()
    assert [(c.kind, c.instance_id) for c in changes] == [("health", "a")] * 3
    states = [c.registration.state for c in changes if c.registration is not None]
    assert states == ["healthy", "unhealthy", "healthy"]
    assert upstream.hits == 10


async def test_passive_reports_feed_the_same_counters(
    registry: MemoryRegistry, upstream: Upstream
) -> None:
    checker = HealthChecker(registry, rise=2, fall=3)
    await registry.register(instance("probed", upstream.url))
    await registry.register(instance("passive-only", None))
    try:
        for ok in (False, False, True, False, False):
            await checker.report("passive-only", ok)
        assert await state_of(registry, "passive-only") is HealthState.UNKNOWN
        await checker.report("passive-only", False, "connection reset")
        found = await registry.health("passive-only")
        assert found is not None
        assert (found.state, found.reason) == (HealthState.UNHEALTHY, "connection reset")
        await checker.report("passive-only", True)
        await checker.report("passive-only", True)
        assert await state_of(registry, "passive-only") is HealthState.HEALTHY

        upstream.status = 500
        await checker.check("probed")
        await checker.report("probed", False, "gateway saw 502")
        assert await state_of(registry, "probed") is HealthState.UNKNOWN
        await checker.check("probed")
        assert await state_of(registry, "probed") is HealthState.UNHEALTHY
        assert await checker.check("passive-only") == []
        await checker.report("nobody", False)
    finally:
        await checker.close()


async def test_unreachable_and_slow_instances_fail_with_the_reason(
    registry: MemoryRegistry, upstream: Upstream
) -> None:
    checker = HealthChecker(registry, fall=1, timeout=0.2)
    await registry.register(instance("closed", f"http://127.0.0.1:{free_port()}/health"))
    await registry.register(instance("slow", upstream.url))
    upstream.hang = True
    try:
        results = {r.instance_id: r for r in await checker.check()}
    finally:
        await checker.close()
    assert results["closed"].reason.startswith("unreachable: ")
    assert results["slow"].reason == "no answer within 0.2 s"
    unhealthy = await registry.discover(Criteria(healthy_only=False))
    assert {r.state for r in unhealthy} == {HealthState.UNHEALTHY}


def test_jitter_spreads_the_schedule() -> None:
    checker = HealthChecker(MemoryRegistry(), interval=10, jitter=0.2, rng=random.Random(7))
    delays = [checker.next_delay() for _ in range(200)]
    assert all(8 <= d <= 12 for d in delays)
    assert max(delays) - min(delays) > 3
    steady = HealthChecker(MemoryRegistry(), interval=10, jitter=0)
    assert {steady.next_delay() for _ in range(10)} == {10}


async def test_the_schedule_runs_on_the_clock_and_does_not_align(
    registry: MemoryRegistry, upstream: Upstream
) -> None:
    clock = FakeClock()
    probed_at: dict[str, list[float]] = {}

    class Recording(HealthChecker):
        async def _probe(self, url: str) -> tuple[bool, str]:
            probed_at.setdefault(url.rpartition("=")[2], []).append(clock.monotonic())
            return await super()._probe(url)

    for name in ("a", "b", "c"):
        await registry.register(instance(name, f"{upstream.url}?id={name}"))
    checker = Recording(
        registry, interval=10, jitter=0.5, rise=1, clock=clock, rng=random.Random(3)
    )
    async with checker:
        await clock.tick()
        assert upstream.hits == 0
        async with asyncio.timeout(20):
            while min((len(v) for v in probed_at.values()), default=0) < 2 or len(probed_at) < 3:
                await clock.tick(1)
                await asyncio.sleep(0.01)
    firsts = sorted(times[0] for times in probed_at.values())
    assert len(set(firsts)) == 3
    assert all(0 <= t <= 5 for t in firsts)
    assert {r.state for r in await registry.discover()} == {HealthState.HEALTHY}


async def test_metric_counts_instances_per_service_and_state(
    registry: MemoryRegistry, upstream: Upstream, metrics: CollectorRegistry
) -> None:
    checker = HealthChecker(registry, rise=1, fall=1, metrics_registry=metrics)
    await registry.register(instance("a", upstream.url))
    await registry.register(instance("b", f"http://127.0.0.1:{free_port()}/"))
    await registry.register(instance("c", None))
    await registry.register(instance("d", None, name="other"))
    await checker.refresh()
    assert sample(metrics, "svc", "unknown") == 3
    await checker.check()
    assert [sample(metrics, "svc", s) for s in ("healthy", "unhealthy", "unknown")] == [1, 1, 1]
    assert [sample(metrics, "other", s) for s in ("healthy", "unhealthy", "unknown")] == [0, 0, 1]
    await registry.deregister("b")
    await checker.refresh()
    assert sample(metrics, "svc", "unhealthy") == 0
    again = HealthChecker(registry, metrics_registry=metrics)  # same registry: no duplicate
    await again.close()
    await checker.close()
    assert sample(metrics, "svc", "healthy") is None


async def test_hooks_are_called_once_per_transition_even_if_one_fails(
    registry: MemoryRegistry,
) -> None:
    seen: list[str] = []

    def broken(change: Change) -> None:
        raise RuntimeError("hook bug")

    async def recorder(change: Change) -> None:
        seen.append(change.instance_id)

    checker = HealthChecker(registry, rise=1, fall=1, on_change=[broken, recorder])
    await registry.register(instance("a", None))
    for ok in (False, False, True, True):
        await checker.report("a", ok)
    await checker.close()
    assert seen == ["a", "a"]


async def test_refresh_follows_the_registry(registry: MemoryRegistry, upstream: Upstream) -> None:
    checker = HealthChecker(registry, rise=2, fall=2)
    await registry.register(instance("a", upstream.url))
    await checker.refresh()
    await registry.set_health("a", HealthState.UNHEALTHY, "said another process")
    await checker.refresh()
    assert checker.known_states()["a"] == ("svc", HealthState.UNHEALTHY)
    await checker.check()
    await registry.register(instance("a", f"{upstream.url}?moved=1"))  # new URL: counters reset
    await checker.refresh()
    await checker.check()
    assert await state_of(registry, "a") is HealthState.UNKNOWN
    await registry.deregister("a")
    await checker.refresh()
    assert checker.known_states() == {}
    await checker.close()


async def test_an_unreachable_registry_keeps_the_last_known_view(upstream: Upstream) -> None:
    class Flaky(MemoryRegistry):
        down = False

        async def discover(self, criteria: Criteria | None = None) -> list:  # type: ignore[type-arg]
            if self.down:
                raise BackendUnavailable("registry down", backend="flaky://")
            return await super().discover(criteria)

        async def set_health(self, instance_id: str, state: HealthState, reason: str = "") -> bool:
            if self.down:
                raise BackendUnavailable("registry down", backend="flaky://")
            return await super().set_health(instance_id, state, reason)

    registry = Flaky()
    checker = HealthChecker(registry, rise=1, fall=1)
    await registry.register(instance("a", upstream.url))
    await checker.refresh()
    registry.down = True
    with pytest.raises(BackendUnavailable):
        await checker.refresh()
    assert checker.known_states() == {"a": ("svc", HealthState.UNKNOWN)}
    await checker.check()  # the verdict cannot be written: it is retried on the next result
    assert checker.known_states() == {"a": ("svc", HealthState.UNKNOWN)}
    registry.down = False
    await checker.check()
    assert await state_of(registry, "a") is HealthState.HEALTHY
    await checker.close()


def test_invalid_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        HealthChecker(MemoryRegistry(), interval=1, timeout=5, rise=0, jitter=1.5)
    assert [key for key, _, _ in info.value.problems] == ["timeout", "rise", "jitter"]
    settings = DiscoverySettings(health_interval=30, health_timeout=3, rise=4, fall=5, jitter=0.3)
    checker = HealthChecker.from_settings(MemoryRegistry(), settings)
    assert (checker.interval, checker.timeout, checker.rise, checker.fall, checker.jitter) == (
        30,
        3,
        4,
        5,
        0.3,
    )
