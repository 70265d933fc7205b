"""``medianest demo`` and ``medianest simulate``: the hub with simulated upstreams.

``demo`` starts the Plex, plex.tv, Overseerr and Uptime Kuma simulators on free loopback
ports in the same process and wires the hub to them, so search, services and libraries
work in one command with nothing else installed. The API marks every answer as simulated
(``/api/v1/services`` says ``"simulated": true``). ``serve --demo-when-unconfigured`` (what
``make run`` does) falls back to this when no upstream is configured.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from medianest.cli.main import ConfigOption, err_console, report_error, settings_from
from medianest.cli.serve import (
    CompanionServer,
    StopCleanlyServer,
    build_overrides,
    uvicorn_config,
)
from medianest.config import Settings

DEMO_SIMULATORS = ("plex", "plextv", "overseerr", "kuma")


def _bound_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def demo_upstreams(ports: dict[str, int], options: Any) -> dict[str, Any]:
    """``[upstreams.*]`` pointing at simulators listening on ``ports``."""
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    return {
        "plex": {"url": base["plex"], "token": options.token},
        "plextv": {"url": base["plextv"]},
        "overseerr": {"url": base["overseerr"], "api_key": options.api_key},
        "kuma": {
            "url": base["kuma"],
            "username": options.kuma_username,
            "password": options.kuma_password,
            "options": {"slug": options.kuma_slug},
        },
    }


async def run_demo(settings_loader: Any, *, seed: int = 1, size: int = 500) -> None:
    """Serve the simulators and the hub until SIGINT/SIGTERM stops the hub."""
    from medianest.app import Hub, create_app
    from medianest.simulators import SimulatorOptions, build_simulator

    sockets = {name: _bound_socket("127.0.0.1") for name in DEMO_SIMULATORS}
    ports = {name: sock.getsockname()[1] for name, sock in sockets.items()}
    options = SimulatorOptions(seed=seed, size=size, plex_url=f"http://127.0.0.1:{ports['plex']}")
    # Guests may browse the simulated catalogue; signing in (Plex PIN, which the simulated
    # plex.tv approves on the third poll) gives the rest.
    settings: Settings = settings_loader(
        {"upstreams": demo_upstreams(ports, options), "allow_anonymous": True}
    )
    simulators = []
    for name, sock in sockets.items():
        config = uvicorn.Config(
            build_simulator(name, options), lifespan="off", log_config=None, access_log=False
        )
        server = CompanionServer(config)
        simulators.append((server, sock))
    hub = Hub(settings, simulated=True)
    hub_server = StopCleanlyServer(uvicorn_config(create_app(settings, hub=hub), settings))
    tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in simulators]
    err_console.print(
        "demo: simulated "
        + ", ".join(f"{n} on :{p}" for n, p in ports.items())
        + f"; hub on http://{settings.server.host}:{settings.server.port}"
    )
    try:
        await hub_server.serve()
    finally:
        for server, _ in simulators:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in sockets.values():
            sock.close()
    if not hub_server.started:
        raise typer.Exit(1)


def demo(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option(help="Interface to bind [default: 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [default: 8080].")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the hub keeps its files.")] = None,
    size: Annotated[
        int, typer.Option(min=0, max=200_000, help="Titles in the fake library.")
    ] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the generated catalogue.")] = 1,
) -> None:
    """Run the hub wired to simulated Plex, plex.tv, Overseerr and Uptime Kuma."""
    overrides = build_overrides(host, port, None, data_dir)
    settings_from(config, overrides)  # fail early (exit 2) on a bad configuration
    asyncio.run(
        run_demo(lambda extra: settings_from(config, {**overrides, **extra}), seed=seed, size=size)
    )


def simulate(
    name: Annotated[str, typer.Argument(help="plex, plextv, overseerr, jellyseerr or kuma.")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="TCP port [default: the real one].")] = None,
    size: Annotated[int, typer.Option(min=0, max=200_000, help="Titles in the library.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 1,
) -> None:
    """Run one simulator (faults steerable at /__sim__/faults)."""
    from medianest.errors import ConfigurationError
    from medianest.simulators import SIMULATORS, SimulatorOptions, run_simulator

    if name not in SIMULATORS:
        report_error(f"unknown simulator {name!r}; choose one of {', '.join(sorted(SIMULATORS))}")
        raise typer.Exit(2)
    try:
        run_simulator(name, host, port, SimulatorOptions(seed=seed, size=size))
    except ConfigurationError as exc:
        report_error(exc.message)
        raise typer.Exit(2) from None
