"""Fixtures for the OIDC tests: a real OpenID provider and clients configured for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from medianest.config.oidc import OidcSettings
from medianest.database import Database, upgrade
from medianest.security.oidc import OidcClient
from tests.support.oidc_provider import (
    CLIENTS,
    REDIRECT_URI,
    RunningProvider,
    TestClient,
    running_provider,
)
from tests.support.wallclock import Clock

SERVER_SECRET = b"medianest-test-server-secret-0123456789"
ROLE_MAP = {"media-admins": "admin", "family": "user"}


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[RunningProvider]:
    """One provider for the session; tests that rotate keys start their own."""
    with running_provider() as provider:
        yield provider


@dataclass
class RequestLog:
    """Every request an instrumented aiohttp session sent, as ``(method, path)``."""

    requests: list[tuple[str, str]] = field(default_factory=list)

    def count(self, path_end: str) -> int:
        return sum(1 for _, path in self.requests if path.endswith(path_end))


@pytest.fixture
async def traced_session() -> AsyncIterator[tuple[aiohttp.ClientSession, RequestLog]]:
    """An aiohttp session whose requests are recorded through a trace config."""
    log = RequestLog()

    async def on_start(_session: Any, _ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        log.requests.append((params.method, params.url.path))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        yield session, log


def oidc_settings(
    issuer: str, client: TestClient = CLIENTS["basic"], **overrides: Any
) -> OidcSettings:
    values: dict[str, Any] = {
        "issuer": issuer,
        "client_id": client.client_id,
        "client_secret": client.secret,
        "scopes": ["openid", "profile", "email", "offline_access"],
        "redirect_uri": REDIRECT_URI,
        "role_map": ROLE_MAP,
        "allowed_algorithms": [client.alg],
    }
    values.update(overrides)
    return OidcSettings.model_validate(values)


ClientFactory = Callable[..., OidcClient]


@pytest.fixture
async def make_client(
    traced_session: tuple[aiohttp.ClientSession, RequestLog],
) -> AsyncIterator[ClientFactory]:
    """Build OidcClients on the traced session: ``make_client(provider, client, **settings)``."""
    session, _ = traced_session
    made: list[OidcClient] = []

    def make(
        provider: RunningProvider, client: TestClient = CLIENTS["basic"], **overrides: Any
    ) -> OidcClient:
        oidc = OidcClient(
            oidc_settings(overrides.pop("issuer", provider.issuer), client, **overrides),
            session,
            secret=SERVER_SECRET,
        )
        made.append(oidc)
        return oidc

    yield make
    for oidc in made:
        await oidc.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """An empty, migrated database of each kind the hub supports."""
    async with Database(database_url) as database:
        await upgrade(database)
        yield database


@pytest.fixture
def clock() -> Clock:
    """A wall clock that moves only when a test says so."""
    return Clock()
