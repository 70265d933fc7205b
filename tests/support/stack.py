"""Every simulator on its own loopback port, and the upstream settings that point at them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from medianest.cli.demo import DEMO_SIMULATORS, demo_upstreams
from medianest.simulators import SimulatorApp, SimulatorOptions, build_simulator
from tests.support.servers import serve_asgi


@dataclass
class SimulatedStack:
    options: SimulatorOptions
    apps: dict[str, SimulatorApp[Any]]
    urls: dict[str, str]
    upstreams: dict[str, Any]


@contextlib.asynccontextmanager
async def simulated_stack(**options: Any) -> AsyncIterator[SimulatedStack]:
    """Plex, plex.tv, Overseerr and Kuma simulators built from one set of options."""
    async with contextlib.AsyncExitStack() as stack:
        base = SimulatorOptions(**options)
        apps: dict[str, SimulatorApp[Any]] = {}
        urls: dict[str, str] = {}
        # Plex first: plex.tv must advertise its real URL.
        plex = build_simulator("plex", base)
        server = await stack.enter_async_context(serve_asgi(plex, lifespan="off"))
        apps["plex"], urls["plex"] = plex, server.url
        final = base.model_copy(update={"plex_url": server.url})
        for name in DEMO_SIMULATORS:
            if name == "plex":
                continue
            app = build_simulator(name, final)
            server = await stack.enter_async_context(serve_asgi(app, lifespan="off"))
            apps[name], urls[name] = app, server.url
        ports = {name: int(url.rsplit(":", 1)[1]) for name, url in urls.items()}
        yield SimulatedStack(final, apps, urls, demo_upstreams(ports, final))
