"""What is specific to ``static://`` (configuration, files) and ``memory://`` (sweeper, backlog),
and the ``[discovery]`` settings section."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError as ModelError

from medianest.config.discovery import DiscoverySettings
from medianest.discovery import Criteria, HealthState, ServiceInstance, create_registry
from medianest.discovery.backends.memory import MemoryRegistry
from medianest.discovery.backends.static import StaticRegistry
from medianest.errors import BackendError, ConfigurationError
from tests.support.registries import FakeWallClock
from tests.support.waiting import until

INSTANCES_TOML = """
[[instances]]
id = "plex-main"
name = "plex"
version = "1.40.0"
endpoints = ["http://192.168.1.10:32400"]
health_check_url = "http://192.168.1.10:32400/identity"
tags = ["primary"]
metadata = { zone = "home" }

[[instances]]
id = "overseerr"
name = "overseerr"
endpoints = ["http://192.168.1.11:5055"]
"""


async def test_static_instances_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "instances.toml"
    path.write_text(INSTANCES_TOML)
    extra = {"id": "kuma", "name": "uptime-kuma", "endpoints": ["http://192.168.1.12:3001"]}
    async with create_registry(f"static://?file={path}", instances=[extra]) as registry:
        assert isinstance(registry, StaticRegistry)
        found = await registry.discover()
        assert [r.instance.id for r in found] == ["overseerr", "plex-main", "kuma"]
        plex = await registry.health("plex-main")
        assert plex is not None
        assert plex.instance.metadata == {"zone": "home"}
        assert plex.ttl is None


async def test_static_definitions_are_validated_together(tmp_path: Path) -> None:
    path = tmp_path / "instances.toml"
    path.write_text(
        '[[instances]]\nid = "a"\nname = "Bad Name"\nendpoints = ["ftp://x"]\n'
        '[[instances]]\nid = "b"\nname = "ok"\nendpoints = ["http://b:1"]\nversion = "x.y"\n'
    )
    registry = create_registry(f"static://?file={path}")
    with pytest.raises(ConfigurationError) as info:
        await registry.start()
    keys = [key for key, _, _ in info.value.problems]
    assert keys == [
        f"{path}: instances[0].name",
        f"{path}: instances[0].endpoints",
        f"{path}: instances[1].version",
    ]
    assert "instances[1].version" in str(info.value)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "cannot read the static instances file"),
        ("not toml", "is not valid TOML"),
        ("other table", "must hold only"),
        ("duplicate", "repeat the id(s) a"),
    ],
)
async def test_bad_static_files(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "instances.toml"
    content = {
        "not toml": "[[instances]\n",
        "other table": "[services]\nx = 1\n",
        "duplicate": '[[instances]]\nid = "a"\nname = "a"\nendpoints = ["http://a:1"]\n' * 2,
    }
    if setup in content:
        path.write_text(content[setup])
    registry = create_registry(f"static://?file={path}")
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await registry.start()


def test_static_url_options_and_instances_are_checked_early() -> None:
    with pytest.raises(ConfigurationError, match="unknown static:// option"):
        create_registry("static://?path=/x.toml")
    with pytest.raises(ConfigurationError) as info:
        create_registry("static://", instances=[{"id": "a", "name": "a", "endpoints": []}])
    assert [key for key, _, _ in info.value.problems] == ["discovery.instances[0].endpoints"]


async def test_static_health_is_kept_in_memory() -> None:
    instance = ServiceInstance(id="a", name="api", endpoints=("http://a:1",))
    async with StaticRegistry([instance]) as registry:
        watch = registry.watch("api")
        assert await registry.set_health("a", HealthState.UNHEALTHY, "down") is True
        change = await anext(watch)
        assert (change.kind, change.instance_id) == ("health", "a")
        assert await registry.discover(Criteria(name="api")) == []
        await watch.aclose()


async def test_memory_sweeper_reports_expiry_without_any_read() -> None:
    clock = FakeWallClock()
    async with MemoryRegistry(clock=clock, sweep_interval=0.01) as registry:
        watch = registry.watch()
        await registry.register(
            ServiceInstance(id="a", name="api", endpoints=("http://a:1",)), ttl=1
        )
        clock.advance(2)
        async with asyncio.timeout(10):
            kinds = [(await anext(watch)).kind for _ in range(2)]
        assert kinds == ["registered", "expired"]
        await watch.aclose()


async def test_a_watcher_that_falls_behind_is_told() -> None:
    async with MemoryRegistry() as registry:
        registry._fanout.max_backlog = 3
        watch = registry.watch()
        for n in range(5):
            await registry.register(
                ServiceInstance(id=f"a{n}", name="api", endpoints=("http://a:1",))
            )
        assert [(await anext(watch)).instance_id for _ in range(3)] == ["a0", "a1", "a2"]
        with pytest.raises(BackendError, match="fell more than 3 changes behind"):
            await anext(watch)
        with pytest.raises(StopAsyncIteration):
            await anext(watch)


def test_discovery_settings() -> None:
    settings = DiscoverySettings.model_validate(
        {"url": "static://", "instances": [{"id": "a", "name": "a", "endpoints": ["http://a:1"]}]}
    )
    assert settings.instances[0].id == "a"
    assert (settings.instance_ttl, settings.heartbeat_interval) == (15.0, 5.0)
    for field in DiscoverySettings.model_fields.values():
        assert field.description
    with pytest.raises(ModelError, match="heartbeat_interval must be shorter"):
        DiscoverySettings(heartbeat_interval=20, instance_ttl=15)
    with pytest.raises(ModelError, match="health_timeout must not be longer"):
        DiscoverySettings(health_timeout=20)
    with pytest.raises(ModelError, match="repeat the id"):
        DiscoverySettings.model_validate(
            {"instances": [{"id": "a", "name": "a", "endpoints": ["http://a:1"]}] * 2}
        )
    with pytest.raises(ModelError) as info:
        DiscoverySettings.model_validate({"instances": [{"id": "a", "name": "a", "endpoints": []}]})
    assert info.value.errors()[0]["loc"] == ("instances", 0, "endpoints")


async def test_a_stopped_follower_ends_its_watch() -> None:
    from medianest.discovery.follow import follow, stop_following

    async with create_registry("memory://") as registry:
        assert isinstance(registry, MemoryRegistry)
        seen: list[int] = []

        async def refresh() -> None:
            seen.append(len(await registry.discover(Criteria(name="media"))))

        task = asyncio.create_task(follow(registry, "media", refresh))
        await registry.register(ServiceInstance(id="m1", name="media", endpoints=("http://a",)))

        async def refreshed() -> bool:
            return seen[-1:] == [1]

        await until(refreshed, "the follower to see the registered instance")
        assert registry._fanout.subscribers == 1
        await stop_following([task])
        assert registry._fanout.subscribers == 0, "the registry no longer queues its changes"


async def test_a_follower_that_starts_over_ends_its_old_watch() -> None:
    from medianest.discovery.follow import follow, stop_following

    async with create_registry("memory://") as registry:
        assert isinstance(registry, MemoryRegistry)
        calls = 0

        async def refresh() -> None:
            nonlocal calls
            calls += 1
            if calls <= 3:
                raise BackendError("registry unreachable", backend="memory://")

        task = asyncio.create_task(follow(registry, "media", refresh, retry=0.01))

        async def recovered() -> bool:
            return calls >= 4

        await until(recovered, "the follower to start over three times")
        assert registry._fanout.subscribers == 1, "one watch, not one per start-over"
        await stop_following([task])
