"""Every operation of the OpenAPI document, called without credentials and as guest, user and
admin: each answers 401 / 403 exactly as the scope it needs says, and nothing is left open."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from medianest.app import Hub, create_app
from medianest.config import load_settings
from medianest.security.identity import Identity
from medianest.security.roles import (
    ADMIN,
    CATALOG_READ,
    GATEWAY_ADMIN,
    KEYS_ADMIN,
    REQUESTS_READ,
    REQUESTS_WRITE,
    ROLE_SCOPES,
    SERVICES_READ,
    USERS_ADMIN,
    Role,
    grants,
)
from tests.support.servers import serve_asgi
from tests.support.stack import simulated_stack

OPEN = {
    "/health",
    "/ready",
    "/metrics",
    "/.well-known/jwks.json",
    "/api/v1/auth/providers",
    "/api/v1/auth/login",
    "/api/v1/auth/token",
    "/api/v1/auth/plex/pin",
    "/api/v1/auth/plex/pin/{pin_id}",
    "/api/v1/auth/oidc/login",
    "/api/v1/auth/oidc/callback",
}
SIGNED_IN = {"/api/v1/auth/me", "/api/v1/auth/password", "/api/v1/auth/logout"}
PREFIX_SCOPES = (
    ("/api/v1/admin/keys", KEYS_ADMIN),
    ("/api/v1/admin/gateway", GATEWAY_ADMIN),
    ("/api/v1/admin/users", USERS_ADMIN),
    ("/api/v1/admin/", ADMIN),  # services, dead letters
    ("/api/v1/services", SERVICES_READ),
    ("/api/v1/", CATALOG_READ),
)
SAMPLE_PARAMS = {"media_type": "movie"}


def needed_scope(method: str, path: str) -> str | None:
    """What the walk expects ``method path`` to need (None: signed in, any role)."""
    if path in SIGNED_IN:
        return None
    if path.startswith("/api/v1/requests"):
        return REQUESTS_WRITE if method == "POST" else REQUESTS_READ
    return next(scope for prefix, scope in PREFIX_SCOPES if path.startswith(prefix))


@pytest.fixture
async def hub_url(tmp_path: Path) -> AsyncIterator[tuple[str, Hub]]:
    async with simulated_stack(size=30, seed=5) as stack:
        settings = load_settings(
            overrides={"data_dir": str(tmp_path), "upstreams": stack.upstreams}
        )
        hub = Hub(settings, simulated=True)
        async with serve_asgi(create_app(settings, hub=hub, configure_logs=False)) as server:
            yield server.url, hub


async def token_for(identity: Identity, role: Role) -> dict[str, str]:
    """A fresh bearer session of a person with ``role`` (fresh: a walked logout ends one)."""
    name = f"walker-{role.value}"
    try:
        user = await identity.users.get_by_username(name)
    except Exception:
        user = await identity.users.create_local(
            name, "walker-password-1", role=role, must_change_password=False
        )
    sign_in = await identity.open_session(user, "bearer", user_agent="walker", ip="127.0.0.1")
    return {"Authorization": f"Bearer {sign_in.access_token}"}


async def test_every_operation_needs_what_it_declares(hub_url: tuple[str, Hub]) -> None:
    url, hub = hub_url
    assert hub.identity is not None
    await token_for(hub.identity, Role.ADMIN)  # the first person is made admin anyway
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/openapi.json") as answer:
            document = await answer.json()
        operations = [
            (method.upper(), path)
            for path, item in document["paths"].items()
            for method in item
            if method in ("get", "post", "put", "patch", "delete")
        ]
        assert len(operations) > 20
        walked = 0
        for method, path in operations:
            concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMS.get(m.group(1), "1"), path)
            if path in OPEN or not path.startswith("/api/"):
                continue
            walked += 1
            async with http.request(method, url + concrete, json={}) as answer:
                assert answer.status == 401, (method, path, answer.status)
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            scope = needed_scope(method, path)
            for role in Role:
                allowed = scope is None or grants(ROLE_SCOPES[role], scope)
                headers = await token_for(hub.identity, role)
                async with http.request(method, url + concrete, json={}, headers=headers) as answer:
                    if allowed:
                        assert answer.status not in (401, 403), (role, method, path)
                    else:
                        assert answer.status == 403, (role, method, path, answer.status)
        assert walked > 15
