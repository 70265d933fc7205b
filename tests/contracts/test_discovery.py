"""Conformance suite of the service registry, on every backend of ``tests/support/registries``.

The read half runs on every row, seeded with :data:`SEED`; the write half on the read-write
rows only. A new backend is a new row there, not new tests here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError as ModelError

from medianest.discovery import (
    Change,
    Criteria,
    HealthState,
    Registration,
    ServiceInstance,
    ServiceRegistry,
    create_registry,
    parse_instance,
)
from medianest.errors import ConfigurationError, NotFoundError, ValidationError
from tests.support.registries import ROWS, FakeWallClock, RegistryRow

SEED = [
    ServiceInstance(
        id="plex-1",
        name="plex",
        version="1.32.5",
        endpoints=("http://10.0.0.1:32400",),
        tags=("primary", "lan"),
        metadata={"zone": "home"},
    ),
    ServiceInstance(
        id="plex-2",
        name="plex",
        version="1.40.1",
        endpoints=("http://10.0.0.2:32400",),
        tags=("lan",),
        metadata={"zone": "lab"},
        weight=3,
    ),
    ServiceInstance(
        id="overseerr-1",
        name="overseerr",
        version="1.2.0",
        endpoints=("http://10.0.0.3:5055",),
        metadata={"zone": "home"},
    ),
    ServiceInstance(
        id="overseerr-0", name="overseerr", version="2.0.0", endpoints=("http://10.0.0.4:5055",)
    ),
    ServiceInstance(
        id="kuma",
        name="uptime-kuma",
        version="1.23.0",
        endpoints=("http://10.0.0.5:3001",),
        health_check_url="http://10.0.0.5:3001/api/status",
    ),
]
DEADLINE = 20.0


@dataclass
class Subject:
    registry: ServiceRegistry
    clock: FakeWallClock
    row: RegistryRow


@contextlib.asynccontextmanager
async def _subject(
    name: str, tmp_path: Path, seed: list[ServiceInstance]
) -> AsyncIterator[Subject]:
    row, clock = ROWS[name], FakeWallClock()
    async with row.make(tmp_path, seed, clock) as registry:
        yield Subject(registry, clock, row)


@pytest.fixture(params=sorted(ROWS))
async def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    """Every backend, holding :data:`SEED`."""
    async with _subject(request.param, tmp_path, SEED) as subject:
        yield subject


@pytest.fixture(params=sorted(n for n, row in ROWS.items() if row.mode == "rw"))
async def writable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    """Every read-write backend, empty."""
    async with _subject(request.param, tmp_path, []) as subject:
        yield subject


@pytest.fixture
def registry(writable: Subject) -> ServiceRegistry:
    return writable.registry


def ids(found: Sequence[Registration]) -> list[str]:
    return [r.instance.id for r in found]


def svc(instance_id: str, name: str = "svc", **fields: object) -> ServiceInstance:
    defaults: dict[str, object] = {"endpoints": (f"http://{instance_id}.lan:8080",)}
    return ServiceInstance(id=instance_id, name=name, **{**defaults, **fields})


async def next_change(watch: AsyncIterator[Change]) -> Change:
    async with asyncio.timeout(DEADLINE):
        return await anext(watch)


async def stop(watch: AsyncIterator[Change]) -> None:
    """Close a watcher (``aclose`` of the backend's iterator)."""
    close = getattr(watch, "aclose", None)
    if close is not None:
        await close()


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(DEADLINE):
        while not await check():
            await asyncio.sleep(0.02)


async def let_expire(subject: Subject, instance_id: str, ttl: float) -> None:
    """Move past ``ttl`` (fake time) or wait for it (real time) until the entry is gone."""
    if subject.row.fake_time:
        subject.clock.advance(ttl + 1)

    async def gone() -> bool:
        return await subject.registry.health(instance_id) is None

    await eventually(gone)


# -- read half: every backend ---------------------------------------------------------------


async def test_discover_orders_by_service_then_id(seeded: Subject) -> None:
    found = await seeded.registry.discover()
    assert ids(found) == ["overseerr-0", "overseerr-1", "plex-1", "plex-2", "kuma"]
    assert ids(await seeded.registry.discover(Criteria(name="plex"))) == ["plex-1", "plex-2"]
    assert await seeded.registry.discover(Criteria(name="jellyfin")) == []


async def test_discovered_registrations_carry_the_definition(seeded: Subject) -> None:
    by_id = {r.instance.id: r for r in await seeded.registry.discover()}
    for instance in SEED:
        assert by_id[instance.id].instance == instance
        assert by_id[instance.id].state is HealthState.UNKNOWN
        assert by_id[instance.id].usable


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (Criteria(name="overseerr", version=">=1.2,<2"), ["overseerr-1"]),
        (Criteria(version=">=1.30"), ["overseerr-0", "plex-1", "plex-2"]),
        (Criteria(version="~=1.23.0"), ["kuma"]),
        (Criteria(name="plex", version="<1"), []),
        (Criteria(tags=("lan",)), ["plex-1", "plex-2"]),
        (Criteria(tags=("lan", "primary")), ["plex-1"]),
        (Criteria(tags=("missing",)), []),
        (Criteria(metadata={"zone": "home"}), ["overseerr-1", "plex-1"]),
        (Criteria(name="plex", metadata={"zone": "lab"}), ["plex-2"]),
        (
            Criteria(name="plex", version=">=1.40", tags=("lan",), metadata={"zone": "lab"}),
            ["plex-2"],
        ),
    ],
)
async def test_discover_matches_criteria(
    seeded: Subject, criteria: Criteria, expected: list[str]
) -> None:
    assert ids(await seeded.registry.discover(criteria)) == expected


async def test_healthy_only_drops_unhealthy_instances(seeded: Subject) -> None:
    registry = seeded.registry
    watch = registry.watch("plex")
    assert await registry.set_health("plex-1", HealthState.UNHEALTHY, "refused") is True
    assert ids(await registry.discover(Criteria(name="plex"))) == ["plex-2"]
    everything = await registry.discover(Criteria(name="plex", healthy_only=False))
    assert ids(everything) == ["plex-1", "plex-2"]
    found = await registry.health("plex-1")
    assert found is not None
    assert (found.state, found.reason, found.usable) == (HealthState.UNHEALTHY, "refused", False)
    change = await next_change(watch)
    assert (change.kind, change.instance_id, change.name) == ("health", "plex-1", "plex")
    assert change.registration is not None
    assert change.registration.state is HealthState.UNHEALTHY

    await registry.set_health("plex-1", HealthState.HEALTHY)
    assert ids(await registry.discover(Criteria(name="plex"))) == ["plex-1", "plex-2"]
    await stop(watch)


async def test_unknown_instances(seeded: Subject) -> None:
    assert await seeded.registry.health("nobody") is None
    assert await seeded.registry.set_health("nobody", HealthState.HEALTHY) is False


async def test_invalid_version_constraint_is_a_validation_error(seeded: Subject) -> None:
    with pytest.raises(ValidationError) as info:
        await seeded.registry.discover(Criteria(version=">=1.2,<<2"))
    assert info.value.errors == {"version": "invalid constraint"}


async def test_ping_and_read_only_flag(seeded: Subject) -> None:
    await seeded.registry.ping()
    assert seeded.registry.read_only is (seeded.row.mode == "ro")


async def test_read_only_backends_refuse_writes(seeded: Subject) -> None:
    if seeded.row.mode == "rw":
        return
    for write in (
        seeded.registry.register(svc("x")),
        seeded.registry.heartbeat("plex-1"),
        seeded.registry.deregister("plex-1"),
    ):
        with pytest.raises(ConfigurationError, match="read-only"):
            await write
    assert ids(await seeded.registry.discover(Criteria(name="plex"))) == ["plex-1", "plex-2"]


# -- write half: read-write backends ---------------------------------------------------------


async def test_register_then_read_back(registry: ServiceRegistry) -> None:
    instance = svc("a-1", version="1.2.3", tags=("x",), metadata={"k": "v"})
    await registry.register(instance)
    found = await registry.health("a-1")
    assert found is not None
    assert found.instance == instance
    assert (found.state, found.reason, found.ttl) == (HealthState.UNKNOWN, "", None)
    assert found.registered_at == found.renewed_at
    assert ids(await registry.discover(Criteria(name="svc"))) == ["a-1"]


async def test_reregistering_replaces_and_keeps_what_still_holds(writable: Subject) -> None:
    registry = writable.registry
    await registry.register(svc("a-1", version="1.0"))
    first = await registry.health("a-1")
    assert first is not None
    await registry.set_health("a-1", HealthState.HEALTHY)
    writable.clock.advance(1)

    await registry.register(svc("a-1", version="1.1", metadata={"build": "2"}))
    second = await registry.health("a-1")
    assert second is not None
    assert (second.instance.version, second.instance.metadata) == ("1.1", {"build": "2"})
    assert second.state is HealthState.HEALTHY
    assert second.registered_at == first.registered_at

    await registry.register(svc("a-1", version="1.2", endpoints=("http://elsewhere:81",)))
    third = await registry.health("a-1")
    assert third is not None
    assert third.state is HealthState.UNKNOWN
    assert len(await registry.discover(Criteria(name="svc"))) == 1


async def test_replacement_is_atomic_for_concurrent_readers(registry: ServiceRegistry) -> None:
    def generation(g: int) -> ServiceInstance:
        return svc(
            "atomic-1",
            version=f"1.{g}",
            endpoints=(f"http://10.1.{g % 250}.1:80", f"http://10.2.{g % 250}.1:80"),
            tags=(f"gen-{g}",),
            metadata={"gen": str(g)},
        )

    def consistent(instance: ServiceInstance) -> bool:
        g = int(instance.metadata["gen"])
        return instance == generation(g)

    await registry.register(generation(0))
    done = asyncio.Event()
    reads = 0

    async def reader() -> None:
        nonlocal reads
        while not done.is_set():
            found = await registry.discover(Criteria(name="svc", healthy_only=False))
            assert len(found) == 1, found
            assert consistent(found[0].instance)
            single = await registry.health("atomic-1")
            assert single is not None
            assert consistent(single.instance)
            reads += 1
            await asyncio.sleep(0)

    async def writer() -> None:
        try:
            for g in range(1, 41):
                await registry.register(generation(g))
                await asyncio.sleep(0)
        finally:
            done.set()

    await asyncio.gather(writer(), reader(), reader())
    assert reads > 0
    last = await registry.health("atomic-1")
    assert last is not None
    assert last.instance == generation(40)


async def test_deregister(registry: ServiceRegistry) -> None:
    await registry.register(svc("a-1"))
    await registry.register(svc("a-2"))
    assert await registry.deregister("a-1") is True
    assert ids(await registry.discover()) == ["a-2"]
    assert await registry.deregister("a-1") is False
    assert await registry.deregister("never-was") is False
    assert await registry.health("a-1") is None


async def test_ttl_expires_unless_renewed(writable: Subject) -> None:
    registry, clock = writable.registry, writable.clock
    if writable.row.fake_time:
        await registry.register(svc("beat-1"), ttl=10)
        found = await registry.health("beat-1")
        assert found is not None
        assert found.ttl == 10
        clock.advance(6)
        await registry.heartbeat("beat-1")
        clock.advance(6)
        renewed = await registry.health("beat-1")
        assert renewed is not None
        assert renewed.renewed_at > found.renewed_at
        await let_expire(writable, "beat-1", 10)
    else:
        await registry.register(svc("beat-1"), ttl=3)
        for _ in range(8):
            await asyncio.sleep(0.5)
            await registry.heartbeat("beat-1")
            assert await registry.health("beat-1") is not None
        await let_expire(writable, "beat-1", 3)
    assert await registry.discover(Criteria(name="svc")) == []
    with pytest.raises(NotFoundError):
        await registry.heartbeat("beat-1")


async def test_heartbeat_of_unknown_or_permanent_registrations(writable: Subject) -> None:
    registry = writable.registry
    with pytest.raises(NotFoundError):
        await registry.heartbeat("nobody")
    await registry.register(svc("forever"))
    writable.clock.advance(3600)
    await registry.heartbeat("forever")
    assert await registry.health("forever") is not None


async def test_ttl_must_be_positive(registry: ServiceRegistry) -> None:
    for ttl in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValidationError) as info:
            await registry.register(svc("bad-ttl"), ttl=ttl)
        assert "ttl" in info.value.errors
    assert await registry.health("bad-ttl") is None


async def test_watch_yields_every_change_in_order(writable: Subject) -> None:
    registry = writable.registry
    ttl = 5.0 if writable.row.fake_time else 1.0
    mine, everything, other = registry.watch("svc"), registry.watch(), registry.watch("other")

    await registry.register(svc("a-1", version="1.0"))
    await registry.register(svc("a-1", version="1.1"))
    await registry.set_health("a-1", HealthState.UNHEALTHY, "HTTP 503")
    await registry.set_health("a-1", HealthState.UNHEALTHY, "HTTP 503")  # not news
    await registry.deregister("a-1")
    await registry.register(svc("b-1"), ttl=ttl)
    await let_expire(writable, "b-1", ttl)
    await registry.register(svc("o-1", name="other"))
    await registry.register(svc("c-1"))

    expected = [
        ("registered", "a-1"),
        ("updated", "a-1"),
        ("health", "a-1"),
        ("deregistered", "a-1"),
        ("registered", "b-1"),
        ("expired", "b-1"),
    ]
    seen = [await next_change(mine) for _ in range(len(expected) + 1)]
    assert [(c.kind, c.instance_id) for c in seen] == [*expected, ("registered", "c-1")]
    assert all(c.name == "svc" for c in seen)
    registered, updated, health, deregistered = (c.registration for c in seen[:4])
    assert registered is not None
    assert updated is not None
    assert health is not None
    assert deregistered is not None
    assert [r.instance.version for r in (registered, updated, deregistered)] == [
        "1.0",
        "1.1",
        "1.1",
    ]
    assert (health.state, health.reason) == ("unhealthy", "HTTP 503")

    all_seen = [await next_change(everything) for _ in range(len(expected) + 2)]
    assert [(c.kind, c.instance_id) for c in all_seen] == [
        *expected,
        ("registered", "o-1"),
        ("registered", "c-1"),
    ]
    first_other = await next_change(other)
    assert (first_other.kind, first_other.instance_id) == ("registered", "o-1")
    for watch in (mine, everything, other):
        await stop(watch)


async def test_watch_starts_when_called(registry: ServiceRegistry) -> None:
    await registry.register(svc("before"))
    watch = registry.watch("svc")
    await registry.register(svc("after"))
    change = await next_change(watch)
    assert (change.kind, change.instance_id) == ("registered", "after")
    await stop(watch)
    with pytest.raises(StopAsyncIteration):
        await anext(watch)


async def test_moving_an_id_to_another_service(registry: ServiceRegistry) -> None:
    watch = registry.watch()
    await registry.register(svc("mover", name="svc"))
    await registry.register(svc("mover", name="svc-two"))
    kinds = [(c.kind, c.name) for c in [await next_change(watch) for _ in range(3)]]
    assert kinds == [("registered", "svc"), ("deregistered", "svc"), ("registered", "svc-two")]
    assert await registry.discover(Criteria(name="svc")) == []
    assert ids(await registry.discover(Criteria(name="svc-two"))) == ["mover"]


async def test_closing_the_registry_ends_its_watchers(registry: ServiceRegistry) -> None:
    watch = registry.watch()
    pending = asyncio.ensure_future(anext(watch))
    await registry.close()
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(DEADLINE):
            await pending


# -- the model (backend independent) ---------------------------------------------------------


def test_invalid_definitions_name_their_fields() -> None:
    bad = {
        "id": "has space",
        "name": "Not_A_Label",
        "version": "one",
        "endpoints": ["ftp://x"],
        "health_check_url": "tcp://x:1",
        "weight": 0,
        "surprise": 1,
    }
    with pytest.raises(ModelError) as info:
        ServiceInstance.model_validate(bad)
    fields = {str(error["loc"][0]) for error in info.value.errors()}
    assert fields == {
        "id",
        "name",
        "version",
        "endpoints",
        "health_check_url",
        "weight",
        "surprise",
    }
    assert "not a version: 'one'" in str(info.value)

    with pytest.raises(ValidationError) as ours:
        parse_instance({"id": "ok", "name": "ok", "endpoints": []})
    assert set(ours.value.errors) == {"endpoints"}
    assert "endpoints" in str(ours.value)


def test_unknown_registry_scheme() -> None:
    with pytest.raises(ConfigurationError, match="unknown discovery backend consul://"):
        create_registry("consul://127.0.0.1:8500")
