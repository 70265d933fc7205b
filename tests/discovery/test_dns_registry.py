"""dns+srv:// registry against a real DNS server (Debian's dnsmasq) on a free port.

The records are those Kubernetes publishes for headless services: one SRV record per pod
under ``_<port>._<proto>.<service>.<namespace>.svc.cluster.local`` pointing at per-pod A/AAAA
names, with different priorities and weights.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from medianest.discovery import Criteria, HealthState, ServiceInstance, create_registry
from medianest.discovery.backends.dns import DnsSrvRegistry
from medianest.errors import BackendUnavailable, ConfigurationError
from tests.discovery.changes import ChangeLog
from tests.support.dnsmasq import (
    Address,
    Pod,
    Record,
    RunningDnsmasq,
    Srv,
    dnsmasq_server,
    free_dns_port,
    headless_service,
)

pytestmark = pytest.mark.service("dnsmasq")

DOMAIN = "media.svc.cluster.local"
PLEX_0 = Pod("plex-0", ("10.1.0.10", "fd00::10"), priority=0, weight=10)
PLEX_1 = Pod("plex-1", ("10.1.0.11",), priority=0, weight=30)
PLEX_2 = Pod("plex-2", ("fd00::12",), priority=1, weight=5)
SEERR = headless_service(
    "overseerr", [Pod("overseerr-0", ("10.1.0.20",))], port=5055, port_name="api"
)


def plex(*pods: Pod) -> list[Record]:
    return headless_service("plex", pods, port=32400)


def pod_id(pod: Pod, service: str = "plex", port: int = 32400) -> str:
    return f"{pod.hostname}.{service}.{DOMAIN}:{port}"


@pytest.fixture
async def dnsmasq() -> AsyncIterator[RunningDnsmasq]:
    async with dnsmasq_server([*plex(PLEX_0, PLEX_1, PLEX_2), *SEERR]) as server:
        yield server


def registry_for(server: RunningDnsmasq, query: str = "") -> DnsSrvRegistry:
    names = f"plex,_api._tcp.overseerr.{DOMAIN}"
    registry = create_registry(server.registry_url(f"domain={DOMAIN}&names={names}&{query}"))
    assert isinstance(registry, DnsSrvRegistry)
    return registry


async def test_headless_service_pods_become_instances_by_priority_then_weight(
    dnsmasq: RunningDnsmasq,
) -> None:
    async with registry_for(dnsmasq) as registry:
        found = await registry.discover(Criteria(name="plex"))
        everything = await registry.discover()
    assert [r.instance.id for r in found] == [pod_id(PLEX_1), pod_id(PLEX_0), pod_id(PLEX_2)]
    by_id = {r.instance.id: r.instance for r in found}
    first = by_id[pod_id(PLEX_0)]
    assert first.endpoints == ("http://10.1.0.10:32400", "http://[fd00::10]:32400")  # A + AAAA
    assert by_id[pod_id(PLEX_2)].endpoints == ("http://[fd00::12]:32400",)  # AAAA only
    assert [r.instance.weight for r in found] == [30, 10, 5]
    assert first.metadata == {
        "priority": "0",
        "target": f"plex-0.plex.{DOMAIN}",
        "srv": f"_http._tcp.plex.{DOMAIN}",
    }
    assert {r.state for r in found} == {HealthState.UNKNOWN}
    # The full SRV name of overseerr names the service "overseerr"; services sort by name.
    assert [(r.instance.name, r.instance.endpoints) for r in everything[:1]] == [
        ("overseerr", ("http://10.1.0.20:5055",))
    ]
    assert len(everything) == 4


async def test_targets_missing_from_the_additional_section_are_looked_up() -> None:
    records = [
        Srv(f"_http._tcp.kuma.{DOMAIN}", f"kuma-0.kuma.{DOMAIN}", 3001, 0, 0),
        Address(f"kuma-0.kuma.{DOMAIN}", ("10.1.0.30", "fd00::30")),
    ]
    async with dnsmasq_server(records) as server:
        url = server.registry_url(f"domain={DOMAIN}&names=kuma&scheme=https")
        async with create_registry(url) as registry:
            (kuma,) = await registry.discover()
    assert kuma.instance.id == f"kuma-0.kuma.{DOMAIN}:3001"
    assert kuma.instance.endpoints == ("https://10.1.0.30:3001", "https://[fd00::30]:3001")
    assert kuma.instance.weight == 1  # SRV weight 0 is the lowest share we can express


async def test_a_name_that_does_not_exist_has_no_instances(dnsmasq: RunningDnsmasq) -> None:
    async with registry_for(dnsmasq) as registry:
        assert await registry.discover(Criteria(name="jellyfin")) == []
        assert await registry.health("jellyfin-0.jellyfin:80") is None


@pytest.fixture
def silent_nameserver() -> Iterator[int]:
    """A UDP port that receives queries and never answers them."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_a_nameserver_that_does_not_answer_is_backend_unavailable(
    silent_nameserver: int,
) -> None:
    for port in (silent_nameserver, free_dns_port()):
        url = f"dns+srv://127.0.0.1:{port}/?domain={DOMAIN}&names=plex&timeout=0.3"
        async with create_registry(url) as registry:
            async with asyncio.timeout(10):
                with pytest.raises(BackendUnavailable, match="DNS did not answer"):
                    await registry.discover()
                with pytest.raises(BackendUnavailable):
                    await registry.ping()


async def test_watch_sees_a_pod_added_and_a_pod_removed(dnsmasq: RunningDnsmasq) -> None:
    async with registry_for(dnsmasq, "interval=0.05&timeout=0.5") as registry:
        await registry.discover(Criteria(name="plex"))  # what the watch compares with
        async with ChangeLog(registry.watch("plex")) as log:
            await dnsmasq.reload([*plex(PLEX_1, PLEX_2, Pod("plex-3", ("10.1.0.13",))), *SEERR])
            await log.wait_count(2)
            assert await registry.set_health(pod_id(PLEX_1), HealthState.UNHEALTHY, "HTTP 500")
            await log.wait_count(3)
    assert sorted(log.summary[:2]) == [
        ("deregistered", "plex", pod_id(PLEX_0)),
        ("registered", "plex", pod_id(Pod("plex-3", ()))),
    ]
    assert log.summary[2] == ("health", "plex", pod_id(PLEX_1))
    added = next(c for c in log.changes if c.kind == "registered").registration
    assert added is not None
    assert added.instance.endpoints == ("http://10.1.0.13:32400",)


async def test_watches_end_when_the_registry_is_closed(dnsmasq: RunningDnsmasq) -> None:
    registry = registry_for(dnsmasq, "interval=600")
    async with ChangeLog(registry.watch("plex")) as log:
        assert await registry.set_health(pod_id(PLEX_0), HealthState.HEALTHY)
        await log.wait_count(1)
        await registry.close()
        async with asyncio.timeout(30):
            await log.finished()
    assert log.summary == [("health", "plex", pod_id(PLEX_0))]


async def test_health_verdicts_live_in_an_overlay_until_the_pod_leaves(
    dnsmasq: RunningDnsmasq,
) -> None:
    async with registry_for(dnsmasq) as registry:
        assert await registry.set_health(pod_id(PLEX_0), HealthState.UNHEALTHY, "timeout")
        assert await registry.set_health("nowhere:80", HealthState.HEALTHY) is False
        usable = [r.instance.id for r in await registry.discover(Criteria(name="plex"))]
        assert pod_id(PLEX_0) not in usable
        current = await registry.health(pod_id(PLEX_0))
        assert current is not None
        assert (current.state, current.reason) == ("unhealthy", "timeout")

        await dnsmasq.reload([*plex(PLEX_1), *SEERR])  # the pod leaves...
        assert await registry.health(pod_id(PLEX_0)) is None
        await dnsmasq.reload([*plex(PLEX_0, PLEX_1), *SEERR])  # ...and a new one comes back
        back = await registry.health(pod_id(PLEX_0))
    assert back is not None
    assert back.state == "unknown"


async def test_answers_are_cached_for_the_record_ttl() -> None:
    async with dnsmasq_server(plex(PLEX_0), ttl=600) as server:
        async with create_registry(server.registry_url(f"domain={DOMAIN}&names=plex")) as cached:
            assert len(await cached.discover()) == 1
            await server.reload(plex(PLEX_0, PLEX_1))
            assert len(await cached.discover()) == 1  # still within the TTL
        async with create_registry(server.registry_url(f"domain={DOMAIN}&names=plex")) as fresh:
            assert len(await fresh.discover()) == 2


async def test_write_methods_are_refused(dnsmasq: RunningDnsmasq) -> None:
    registry = registry_for(dnsmasq)
    assert registry.read_only
    pod = ServiceInstance(id="plex-9", name="plex", endpoints=("http://10.1.0.19:32400",))
    with pytest.raises(ConfigurationError, match="read-only"):
        await registry.register(pod)
    with pytest.raises(ConfigurationError, match="read-only"):
        await registry.heartbeat(pod_id(PLEX_0))
    with pytest.raises(ConfigurationError, match="read-only"):
        await registry.deregister(pod_id(PLEX_0))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("dns+srv://127.0.0.1/?names=plex", "needs domain"),
        ("dns+srv://dns.example/?domain=x.local&names=plex", "IP address"),
        ("dns+srv://127.0.0.1/?domain=x.local&names=plex&colour=red", "colour"),
        ("dns+srv://127.0.0.1/?domain=x.local&interval=soon", "seconds"),
        ("dns+srv://127.0.0.1/?domain=x.local&scheme=ftp", "scheme"),
        ("dns+srv://127.0.0.1/?domain=x.local&names=Plex_Server", "not a service name"),
        ("dns+srv://127.0.0.1/?names=_http._tcp", "no service name"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        create_registry(url)
