"""The hub and its registry over real sockets: self-registration, service-name routes fed by
watch, the last known instances when the registry fails, the CLI, and SIGKILL + TTL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from medianest.app import Hub, create_app
from medianest.config import load_settings
from medianest.database import Database
from medianest.discovery import Criteria, ServiceInstance
from medianest.discovery.backends.sql import SqlRegistry
from tests.support.etcd import etcd_server
from tests.support.servers import serve_asgi
from tests.support.upstream import upstream_app
from tests.support.waiting import until

MEDIANEST = [sys.executable, "-m", "medianest"]


def route_file(tmp_path: Path) -> Path:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[[routes]]\nname = "media"\nmatch = { path_prefix = "/media/" }\n'
        'target = { service = "media" }\nstrip_prefix = true\n'
        "auth = { required = false }\n"
    )
    return routes


async def instance_behind(url: str) -> str | None:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/media/echo") as answer:
        if answer.status != 200:
            return None
        return str((await answer.json())["instance"])


def media(instance_id: str, url: str) -> ServiceInstance:
    return ServiceInstance(id=instance_id, name="media", endpoints=(url,))


async def test_the_hub_registers_itself_and_its_upstreams(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={
            "data_dir": str(tmp_path),
            "upstreams": {"kuma": {"url": "http://127.0.0.1:9", "enabled": True}},
        }
    )
    hub = Hub(settings)
    async with serve_asgi(create_app(settings, hub=hub, configure_logs=False)) as server:
        assert hub.api_keys is not None
        _, key = await hub.api_keys.create("ops", "ops", ["admin"])
        async with (
            aiohttp.ClientSession(headers={"X-Api-Key": key}) as http,
            http.get(f"{server.url}/api/v1/admin/services") as answer,
        ):
            assert answer.status == 200
            listed = await answer.json()
        names = {found["instance"]["name"] for found in listed}
        assert {"medianest-gateway", "medianest-api", "medianest-workers", "kuma"} <= names
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/ready") as answer:
            body = await answer.json()
        assert body["checks"]["discovery"]["status"] == "ok"
    async with Database(settings.database_url) as db, SqlRegistry(db) as registry:
        left = await registry.discover(Criteria(healthy_only=False))
    assert [r.instance.id for r in left] == [], "a graceful stop deregisters everything"


async def test_service_routes_follow_the_registry_without_a_restart(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={
            "data_dir": str(tmp_path),
            "gateway": {"routes_file": str(route_file(tmp_path))},
            "discovery": {"poll_interval": 0.05},
        }
    )
    hub = Hub(settings)
    async with (
        serve_asgi(upstream_app("one")) as one,
        serve_asgi(upstream_app("two")) as two,
        serve_asgi(create_app(settings, hub=hub, configure_logs=False)) as server,
    ):
        registry = hub.registry
        assert registry is not None
        assert await instance_behind(server.url) is None  # no instance yet: 503
        await registry.register(media("one", one.url))

        async def on(name: str) -> bool:
            return await instance_behind(server.url) == name

        await until(lambda: on("one"), "the first instance")
        await registry.register(media("two", two.url))
        await registry.deregister("one")
        await until(lambda: on("two"), "the switch to the second instance")
        for _ in range(5):
            assert await instance_behind(server.url) == "two"


async def test_a_failing_registry_fails_ready_but_the_gateway_keeps_serving(
    tmp_path: Path,
) -> None:
    async with etcd_server(tmp_path) as etcd, serve_asgi(upstream_app("one")) as one:
        settings = load_settings(
            overrides={
                "data_dir": str(tmp_path),
                "gateway": {"routes_file": str(route_file(tmp_path))},
                "discovery": {"url": etcd.registry_url("/hub")},
            }
        )
        hub = Hub(settings)
        async with serve_asgi(create_app(settings, hub=hub, configure_logs=False)) as server:
            assert hub.registry is not None
            await hub.registry.register(media("one", one.url))

            async def serving() -> bool:
                return await instance_behind(server.url) == "one"

            await until(serving, "the instance from etcd")
            await etcd.stop()

            async def not_ready() -> bool:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{server.url}/ready") as answer,
                ):
                    body: dict[str, Any] = await answer.json()
                    return answer.status == 503 and body["checks"]["discovery"]["status"] == "fail"

            await until(not_ready, "/ready to report the registry")
            for _ in range(5):
                assert await instance_behind(server.url) == "one"
            await etcd.start()


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIANEST_")}
    env.update(MEDIANEST_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    return subprocess.run(
        [*MEDIANEST, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_services_cli_round_trip_and_refusals(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "migrate").returncode == 0
    bad = run_cli(
        tmp_path, "services", "register", "Bad Name", "--url", "ftp://x", "--version", "one"
    )
    assert bad.returncode == 2
    for field in ("name", "endpoints", "version"):
        assert field in bad.stderr
    made = run_cli(
        tmp_path,
        "services",
        "register",
        "plex",
        "--url",
        "http://10.0.0.5:32400",
        "--id",
        "plex-1",
        "--version",
        "1.41.2",
        "--tag",
        "home",
    )
    assert made.returncode == 0, made.stderr
    listed = run_cli(tmp_path, "services", "list", "--version", ">=1.40,<2")
    assert "plex-1" in listed.stdout
    assert "plex-1" not in run_cli(tmp_path, "services", "list", "--version", "<1").stdout
    assert run_cli(tmp_path, "services", "deregister", "plex-1").returncode == 0
    gone = run_cli(tmp_path, "services", "deregister", "plex-1")
    assert gone.returncode == 1
    assert "no instance" in gone.stderr


async def test_a_killed_hub_vanishes_after_its_ttl(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIANEST_")}
    env.update(
        MEDIANEST_DATA_DIR=str(tmp_path / "data"),
        MEDIANEST_DISCOVERY__INSTANCE_TTL="2",
        MEDIANEST_DISCOVERY__HEARTBEAT_INTERVAL="0.5",
        MEDIANEST_LOG__LEVEL="warning",
    )
    migrated = subprocess.run(  # noqa: ASYNC221 - before the loop has work to do
        [*MEDIANEST, "migrate"], env=env, capture_output=True, timeout=120, check=False
    )
    assert migrated.returncode == 0, migrated.stderr
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited on
        [*MEDIANEST, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'medianest.db'}"
    try:
        async with Database(url) as db, SqlRegistry(db) as registry:

            async def hub_ids() -> set[str]:
                found = await registry.discover(Criteria(healthy_only=False))
                return {r.instance.id for r in found if r.instance.name.startswith("medianest-")}

            async def registered() -> bool:
                assert process.poll() is None, process.stderr
                return f"-{process.pid}-api" in json.dumps(sorted(await hub_ids()))

            await until(registered, "the hub to register", deadline=60)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            started = time.monotonic()

            async def gone() -> bool:
                return not await hub_ids()

            await until(gone, "the registrations to expire", deadline=30)
            assert time.monotonic() - started < 30
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_adapters_reach_their_service_where_the_registry_says(tmp_path: Path) -> None:
    from medianest.simulators import SimulatorOptions, build_simulator

    settings = load_settings(
        overrides={
            "data_dir": str(tmp_path),
            "upstreams": {
                "kuma": {
                    "url": f"http://127.0.0.1:{_free_port()}",
                    "enabled": True,
                    "options": {"slug": "home"},
                }
            },
        }
    )
    hub = Hub(settings)
    kuma = build_simulator("kuma", SimulatorOptions(kuma_slug="home"))
    async with (
        serve_asgi(kuma, lifespan="off") as moved,
        serve_asgi(create_app(settings, hub=hub, configure_logs=False)) as server,
    ):
        assert hub.registry is not None
        assert hub.api_keys is not None
        _, key = await hub.api_keys.create("ops", "ops", ["admin"])

        async def kuma_status() -> str:
            async with (
                aiohttp.ClientSession(headers={"X-Api-Key": key}) as http,
                http.get(f"{server.url}/api/v1/services") as answer,
            ):
                assert answer.status == 200
                report = await answer.json()
            return str({s["service"]: s["status"] for s in report["services"]}["kuma"])

        assert await kuma_status() == "down", "the configured URL answers nothing"
        await hub.registry.register(
            ServiceInstance(id="kuma-moved", name="kuma", endpoints=(moved.url,))
        )
        await hub.registry.deregister("upstream-kuma")

        async def up() -> bool:
            return await kuma_status() == "up"

        await until(up, "the adapter to follow the registry")
