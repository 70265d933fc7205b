"""etcd:// registry against a real etcd (Debian's etcd-server) started on free ports.

What only etcd has: leases renewed by keep-alive and expired by etcd itself (also for a
process killed with SIGKILL), a watch that survives an etcd restart without losing or
repeating events, compare-and-swap health writes, endpoint failover and etcd users. The
behaviour every registry shares is in the conformance suite.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from medianest.discovery import (
    Criteria,
    HealthState,
    ServiceInstance,
    create_registry,
)
from medianest.discovery.backends.etcd import EtcdRegistry
from medianest.errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    NotFoundError,
    ValidationError,
)
from tests.discovery.changes import ChangeLog
from tests.support.etcd import RunningEtcd, etcd_server
from tests.support.servers import free_port

pytestmark = pytest.mark.service("etcd")


def instance(
    instance_id: str, name: str = "plex", version: str = "1.0", **kw: Any
) -> ServiceInstance:
    return ServiceInstance(
        id=instance_id,
        name=name,
        version=version,
        endpoints=kw.pop("endpoints", (f"http://10.0.0.1:{8000 + len(instance_id)}",)),
        **kw,
    )


@pytest.fixture
async def etcd() -> AsyncIterator[RunningEtcd]:
    async with etcd_server() as server:
        yield server


@pytest.fixture
async def registry(etcd: RunningEtcd) -> AsyncIterator[EtcdRegistry]:
    async with EtcdRegistry.from_url(etcd.registry_url("/mn")) as reg:
        yield reg


async def test_register_discover_replace_and_deregister(registry: EtcdRegistry) -> None:
    await registry.register(instance("plex-1", version="1.32.5", tags=("main",)))
    await registry.register(instance("plex-2", version="1.40.0"))
    await registry.register(instance("seerr-1", name="overseerr"))

    ids = [r.instance.id for r in await registry.discover()]
    assert ids == ["seerr-1", "plex-1", "plex-2"]  # by service name, then id
    plex = await registry.discover(Criteria(name="plex", version=">=1.35"))
    assert [r.instance.id for r in plex] == ["plex-2"]
    assert [r.instance.id for r in await registry.discover(Criteria(tags=("main",)))] == ["plex-1"]

    # Replacing moves the instance to its new definition (and service) in one transaction.
    await registry.register(instance("plex-1", name="overseerr", version="2.0"))
    found = await registry.discover(Criteria(healthy_only=False))
    assert [(r.instance.name, r.instance.id) for r in found] == [
        ("overseerr", "plex-1"),
        ("overseerr", "seerr-1"),
        ("plex", "plex-2"),
    ]
    current = await registry.health("plex-1")
    assert current is not None
    assert (current.instance.version, current.state, current.ttl) == ("2.0", "unknown", None)

    # Same endpoints: the replacement keeps registered_at and the health verdict.
    assert await registry.set_health("plex-2", HealthState.HEALTHY, "HTTP 200")
    before = await registry.health("plex-2")
    await registry.register(instance("plex-2", version="1.41.0"))
    kept = await registry.health("plex-2")
    assert before is not None
    assert kept is not None
    assert (kept.instance.version, kept.state, kept.reason) == ("1.41.0", "healthy", "HTTP 200")
    assert kept.registered_at == before.registered_at
    await registry.register(instance("plex-2", endpoints=("http://10.0.0.9:32400",)))
    moved = await registry.health("plex-2")
    assert moved is not None
    assert moved.state == "unknown"
    with pytest.raises(ValidationError, match="ttl"):
        await registry.register(instance("plex-3"), ttl=0)
    await registry.heartbeat("plex-1")  # no lease: nothing to renew, but it exists

    assert await registry.deregister("plex-1") is True
    assert await registry.deregister("plex-1") is False
    assert await registry.health("plex-1") is None
    with pytest.raises(NotFoundError):
        await registry.heartbeat("plex-1")
    assert await registry.set_health("plex-1", HealthState.HEALTHY) is False


async def test_readers_see_the_old_or_the_new_definition_never_a_mix_or_none(
    registry: EtcdRegistry,
) -> None:
    definitions = [instance("x", "plex", "1.0"), instance("x", "overseerr", "2.0")]
    await registry.register(definitions[0])
    done = asyncio.Event()
    reads = 0

    async def read() -> None:
        nonlocal reads
        while not done.is_set():
            found = list(await registry.discover(Criteria(healthy_only=False)))
            assert len(found) == 1
            assert (found[0].instance.name, found[0].instance.version) in {
                ("plex", "1.0"),
                ("overseerr", "2.0"),
            }
            reads += 1

    reader = asyncio.create_task(read())
    for round_ in range(40):
        await registry.register(definitions[(round_ + 1) % 2])
    done.set()
    await reader
    assert reads > 0


async def test_a_leased_registration_lives_while_renewed_and_expires_when_not(
    registry: EtcdRegistry,
) -> None:
    await registry.register(instance("leased"), ttl=2)
    before = await registry.health("leased")
    assert before is not None
    assert before.ttl == 2
    started = time.monotonic()
    while time.monotonic() - started < 5:  # well past two TTLs, renewed all along
        await registry.heartbeat("leased")
        assert await registry.health("leased") is not None
        await asyncio.sleep(0.25)  # the renewal rhythm, not a wait for a condition
    renewed = await registry.health("leased")
    assert renewed is not None
    assert renewed.renewed_at > before.renewed_at

    async with asyncio.timeout(30):
        while await registry.health("leased") is not None:
            await asyncio.sleep(0.1)
    assert await registry.discover(Criteria(name="plex", healthy_only=False)) == []
    with pytest.raises(NotFoundError):
        await registry.heartbeat("leased")


_CHILD = """
import asyncio, sys
from medianest.discovery import ServiceInstance
from medianest.discovery.backends.etcd import EtcdRegistry

async def main():
    async with EtcdRegistry.from_url(sys.argv[1]) as registry:
        worker = ServiceInstance(id="worker-1", name="workers", endpoints=("http://127.0.0.1:9",))
        await registry.register(worker, ttl=1)
        print("registered", flush=True)
        while True:
            await registry.heartbeat("worker-1")
            await asyncio.sleep(0.2)

asyncio.run(main())
"""


async def test_a_process_killed_with_sigkill_vanishes_after_its_ttl(
    etcd: RunningEtcd, registry: EtcdRegistry
) -> None:
    async with ChangeLog(registry.watch("workers")) as log:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, etcd.registry_url("/mn"), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert child.stdout is not None
            async with asyncio.timeout(30):
                assert (await child.stdout.readline()).strip() == b"registered"
            await log.wait_count(1)
            assert [r.instance.id for r in await registry.discover(Criteria(name="workers"))] == [
                "worker-1"
            ]
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        await log.wait_count(2)
    assert log.summary == [
        ("registered", "workers", "worker-1"),
        ("expired", "workers", "worker-1"),
    ]
    last = log.changes[1].registration
    assert last is not None
    assert last.instance.id == "worker-1"
    assert last.ttl == 1
    assert await registry.discover(Criteria(name="workers")) == []


async def test_watch_reports_every_change_in_order(registry: EtcdRegistry) -> None:
    async with ChangeLog(registry.watch()) as everything, ChangeLog(registry.watch("plex")) as plex:
        await registry.register(instance("a"))
        await registry.register(instance("b", name="overseerr"))
        await registry.register(instance("a", version="1.1"))
        assert await registry.set_health("a", HealthState.UNHEALTHY, "HTTP 503")
        assert await registry.set_health("a", HealthState.UNHEALTHY, "HTTP 503")  # unchanged
        assert await registry.deregister("b")
        await registry.register(instance("a", name="overseerr"))  # moves to another service
        await registry.register(instance("c"), ttl=1)  # never renewed
        expected = [
            ("registered", "plex", "a"),
            ("registered", "overseerr", "b"),
            ("updated", "plex", "a"),
            ("health", "plex", "a"),
            ("deregistered", "overseerr", "b"),
            ("deregistered", "plex", "a"),
            ("registered", "overseerr", "a"),
            ("registered", "plex", "c"),
            ("expired", "plex", "c"),
        ]
        await everything.wait_count(len(expected))
        await plex.wait_for(lambda changes: any(c.kind == "expired" for c in changes))
    assert everything.summary == expected
    assert plex.summary == [change for change in expected if change[1] == "plex"]
    health = everything.changes[3].registration
    assert health is not None
    assert (health.state, health.reason) == ("unhealthy", "HTTP 503")
    gone = everything.changes[4].registration
    assert gone is not None
    assert gone.instance.name == "overseerr"


async def test_watch_resumes_after_an_etcd_restart_without_losing_or_repeating(
    etcd: RunningEtcd, registry: EtcdRegistry
) -> None:
    paused = registry.watch()  # pulled by hand: suspended while etcd goes down and up
    async with ChangeLog(registry.watch()) as live:  # keeps reading and reconnecting
        await registry.register(instance("a"))
        first = await anext(paused)
        await live.wait_count(1)

        await etcd.restart()
        await registry.register(instance("b"))
        assert await registry.set_health("a", HealthState.HEALTHY)
        assert await registry.deregister("a")

        expected = [
            ("registered", "plex", "a"),
            ("registered", "plex", "b"),
            ("health", "plex", "a"),
            ("deregistered", "plex", "a"),
        ]
        await live.wait_count(len(expected))
        rest = [await anext(paused) for _ in range(3)]
        await paused.aclose()  # type: ignore[attr-defined]
    assert live.summary == expected
    assert [(c.kind, c.name, c.instance_id) for c in [first, *rest]] == expected


async def test_set_health_does_not_overwrite_a_concurrent_reregister(
    etcd: RunningEtcd, registry: EtcdRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    await registry.register(instance("a", version="1.0"))
    async with EtcdRegistry.from_url(etcd.registry_url("/mn")) as other:
        gateway = registry._gateway
        real_call = gateway.call
        transactions: list[str] = []

        async def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
            if path == "/v3/kv/txn":
                if not transactions:  # between set_health's read and its write...
                    await other.register(instance("a", version="2.0", weight=7))
                transactions.append(path)
            return await real_call(path, body)

        monkeypatch.setattr(gateway, "call", call)
        assert await registry.set_health("a", HealthState.UNHEALTHY, "probe failed")
        monkeypatch.undo()
        current = await other.health("a")
    assert len(transactions) == 2  # the first compare-and-swap lost, the retry won
    assert current is not None
    assert (current.instance.version, current.instance.weight) == ("2.0", 7)
    assert (current.state, current.reason) == ("unhealthy", "probe failed")


async def test_ping_and_calls_fail_with_backend_unavailable_when_etcd_is_down(
    etcd: RunningEtcd, registry: EtcdRegistry
) -> None:
    await registry.ping()
    await etcd.stop()
    with pytest.raises(BackendUnavailable) as caught:
        await registry.ping()
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    with pytest.raises(BackendUnavailable):
        await registry.discover()
    await etcd.start()
    await registry.ping()


async def test_watches_end_when_the_registry_is_closed(etcd: RunningEtcd) -> None:
    registry = EtcdRegistry.from_url(etcd.registry_url("/mn"))
    await registry.start()
    async with ChangeLog(registry.watch()) as log:
        await registry.register(instance("a"))
        await log.wait_count(1)
        await registry.close()
        async with asyncio.timeout(30):
            await log.finished()
    assert log.summary == [("registered", "plex", "a")]


async def test_url_options_failover_and_masked_password(etcd: RunningEtcd) -> None:
    dead = free_port()
    url = f"etcd://127.0.0.1:{dead},127.0.0.1:{etcd.client_port}/opts?ttl=1&timeout=2"
    async with create_registry(url) as registry:
        assert isinstance(registry, EtcdRegistry)
        await registry.register(instance("a"))  # the first endpoint is down: the second serves
        current = await registry.health("a")
        assert current is not None
        assert current.ttl == 1
    secret = EtcdRegistry.from_url(f"etcd://root:hunter2@127.0.0.1:{etcd.client_port}/x")
    assert "hunter2" not in repr(secret)
    assert "***" in repr(secret)
    with pytest.raises(ConfigurationError, match="colour"):
        create_registry(f"etcd://127.0.0.1:{etcd.client_port}/x?colour=red")
    with pytest.raises(ConfigurationError):
        create_registry("etcd:///no-host")


async def test_etcd_users_authenticate_with_the_credentials_of_the_url(etcd: RunningEtcd) -> None:
    async with aiohttp.ClientSession() as http:
        for path, body in [
            ("/v3/auth/role/add", {"name": "root"}),
            ("/v3/auth/user/add", {"name": "root", "password": "s3cret"}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
            ("/v3/auth/enable", {}),
        ]:
            async with http.post(etcd.url + path, json=body) as response:
                assert response.status == 200, await response.text()

    async with EtcdRegistry.from_url(f"etcd://root:s3cret@127.0.0.1:{etcd.client_port}/a") as reg:
        async with ChangeLog(reg.watch()) as log:
            await reg.register(instance("a"))
            await log.wait_count(1)
            await etcd.restart()  # etcd forgets its tokens: calls and the watch log in again
            await reg.register(instance("b"))
            await log.wait_count(2)
        assert [r.instance.id for r in await reg.discover()] == ["a", "b"]
    for url in (etcd.registry_url("/a"), f"etcd://root:wrong@127.0.0.1:{etcd.client_port}/a"):
        with pytest.raises(BackendError):  # on start (wrong password) or on the first read
            async with EtcdRegistry.from_url(url) as refused:
                await refused.discover()
