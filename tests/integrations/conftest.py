"""Fixtures of the integration adapter tests.

Plex fixtures (``plex_*``): simulators served on real sockets and adapters built the way
the hub builds them (``build_adapter`` with a client identifier and a private metrics
registry). Everything started through ``plex_stack`` is closed after the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from medianest.config import UpstreamSettings
from medianest.integrations.base import HttpAdapter
from medianest.integrations.registry import build_adapter
from medianest.simulators import SimulatorApp, SimulatorOptions, build_simulator
from tests.support.servers import serve_asgi

PLEX_CLIENT_ID = "medianest-test-0b7f3c1e"
# The identification set every request to Plex and plex.tv must carry (NOTES.md 1.1).
IDENTIFICATION = (
    "X-Plex-Client-Identifier",
    "X-Plex-Product",
    "X-Plex-Version",
    "X-Plex-Platform",
    "X-Plex-Platform-Version",
    "X-Plex-Device",
    "X-Plex-Device-Name",
    "X-Plex-Model",
    "X-Plex-Provides",
    "X-Plex-Language",
)


@dataclass
class PlexServed:
    """A running simulator (or any ASGI app) and its base URL."""

    app: Any
    url: str

    @property
    def sim(self) -> SimulatorApp[Any]:
        assert isinstance(self.app, SimulatorApp)
        return self.app


@pytest.fixture
async def plex_stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as stack:
        yield stack


@pytest.fixture
def plex_serve(
    plex_stack: contextlib.AsyncExitStack,
) -> Callable[..., Awaitable[PlexServed]]:
    """``await plex_serve("plex", size=30)`` or ``await plex_serve(asgi_app)``."""

    async def serve(what: str | Any, **options: Any) -> PlexServed:
        app = build_simulator(what, SimulatorOptions(**options)) if isinstance(what, str) else what
        running = await plex_stack.enter_async_context(serve_asgi(app, lifespan="off"))
        return PlexServed(app, running.url)

    return serve


@pytest.fixture
def plex_adapter(
    plex_stack: contextlib.AsyncExitStack,
) -> Callable[..., Awaitable[Any]]:
    """``await plex_adapter("plex", url, token="...")``: a started adapter of that kind.

    Retries are off so that a test sees each upstream answer exactly once.
    """

    async def make(
        kind: str,
        url: str,
        *,
        token: str | None = None,
        client_identifier: str = PLEX_CLIENT_ID,
        **options: Any,
    ) -> Any:
        upstream = UpstreamSettings.model_validate(
            {
                "url": url,
                "token": token,
                "options": options,
                "policy": {"retry": {"enabled": False}},
            }
        )
        adapter: HttpAdapter = build_adapter(
            kind,
            kind,
            upstream,
            client_identifier=client_identifier,
            registry=CollectorRegistry(),
            unrelated_context="ignored",
        )
        await plex_stack.enter_async_context(adapter)
        return adapter

    return make
