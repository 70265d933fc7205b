"""Fixtures of the simulator tests: contracts (loaded once), an HTTP client, a runner."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from medianest.simulators import SimulatorApp, SimulatorOptions, build_simulator
from tests.simulators.spec import (
    JELLYSEERR_SPEC,
    OVERSEERR_SPEC,
    PLEX_LEGACY_SPEC,
    PLEX_SPEC,
    Contract,
)
from tests.support.servers import serve_asgi


def _contract(*files: str, rebase: str | None = None, strict_query: bool = False) -> Contract:
    return Contract(files, rebase=rebase, strict_query=strict_query)


@pytest.fixture(scope="session")
def plex_contract() -> Contract:
    return _contract(PLEX_SPEC, PLEX_LEGACY_SPEC)


@pytest.fixture(scope="session")
def plextv_contract() -> Contract:
    return _contract(PLEX_LEGACY_SPEC, rebase="https://plex.tv")


@pytest.fixture(scope="session")
def overseerr_contract() -> Contract:
    return _contract(OVERSEERR_SPEC, strict_query=True)  # its validator rejects unknown params


@pytest.fixture(scope="session")
def jellyseerr_contract() -> Contract:
    return _contract(JELLYSEERR_SPEC, strict_query=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@dataclass
class Running:
    app: SimulatorApp[Any]
    url: str

    @property
    def state(self) -> Any:
        return self.app.state


@contextlib.asynccontextmanager
async def running(name: str, **options: Any) -> AsyncIterator[Running]:
    """Build simulator ``name`` with ``options`` and serve it on a free port."""
    app = build_simulator(name, SimulatorOptions(**options))
    async with serve_asgi(app) as server:
        yield Running(app, server.url)
