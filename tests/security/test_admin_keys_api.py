"""``/api/v1/admin/keys`` over a real socket: 401 and 403 with RFC 6750 challenges, the CRUD."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from medianest.app import Hub as HubProcess
from medianest.app import create_app
from medianest.config import load_settings
from medianest.errors import AuthorizationError
from medianest.security import (
    ApiKeyService,
    extract_api_key,
    generate_api_key,
    looks_like_api_key,
    require_scopes,
    www_authenticate,
)
from tests.conftest import LogCapture
from tests.support.servers import serve_asgi

BASE = "/api/v1/admin/keys"
NO_KEY = 'Bearer realm="medianest"'
INVALID = 'Bearer realm="medianest", error="invalid_token"'
NOT_ADMIN = 'Bearer realm="medianest", error="insufficient_scope", scope="keys:admin"'


@dataclass
class Hub:
    url: str
    service: ApiKeyService
    admin_key: str
    reader_key: str

    async def call(
        self, method: str, path: str = "", key: str | None = None, **kw: Any
    ) -> tuple[int, dict[str, str], Any]:
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + BASE + path, headers=headers, **kw) as response,
        ):
            body = await response.json(content_type=None)
            return response.status, dict(response.headers), body


@pytest.fixture
async def hub(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Hub]:
    settings = load_settings(overrides={"data_dir": str(tmp_path), "database": {"url": sqlite_url}})
    running = HubProcess(settings)
    async with serve_asgi(create_app(settings, hub=running, configure_logs=False)) as server:
        service = running.api_keys
        assert service is not None
        _, admin_key = await service.create("root", "ops", ["admin"])
        _, reader_key = await service.create("reader", "bob", ["catalog:read"])
        yield Hub(server.url, service, admin_key, reader_key)


async def test_missing_key_is_401_with_a_bare_challenge(hub: Hub) -> None:
    status, headers, body = await hub.call("GET")
    assert status == 401
    assert headers["WWW-Authenticate"] == NO_KEY
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["type"] == "/problems/unauthenticated"
    status, headers, _ = await hub.call("GET", params={"api_key": hub.admin_key})
    assert status == 401
    assert headers["WWW-Authenticate"] == NO_KEY


async def test_bad_keys_are_401_invalid_token(hub: Hub) -> None:
    corrupted = hub.admin_key[:-1] + ("A" if hub.admin_key[-1] != "A" else "B")
    for key in (corrupted, generate_api_key(), "mn_garbage"):
        status, headers, body = await hub.call("GET", key=key)
        assert status == 401
        assert headers["WWW-Authenticate"] == INVALID
        assert body["detail"] == "invalid API key"


async def test_key_without_admin_scope_is_403_insufficient_scope(hub: Hub) -> None:
    status, headers, body = await hub.call("GET", key=hub.reader_key)
    assert status == 403
    assert headers["WWW-Authenticate"] == NOT_ADMIN
    assert body["type"] == "/problems/forbidden"
    assert "admin" in body["detail"]
    status, _, _ = await hub.call("DELETE", "/" + hub.reader_key[3:15], key=hub.reader_key)
    assert status == 403


async def test_create_list_get_rotate_revoke(hub: Hub) -> None:
    status, headers, created = await hub.call(
        "POST", key=hub.admin_key, json={"name": "ci", "scopes": ["catalog:read"]}
    )
    assert status == 201, created
    assert headers["Cache-Control"] == "no-store"
    key, info = created["key"], created["info"]
    assert looks_like_api_key(key)
    assert info["owner"] == "ops"
    assert info["prefix"] == f"mn_{info['key_id']}"
    assert "hmac" not in info

    status, _, listed = await hub.call(
        "GET", headers={"X-Api-Key": hub.admin_key}, params={"owner": "ops"}
    )
    assert status == 200
    assert [k["name"] for k in listed] == ["root", "ci"]

    status, _, fetched = await hub.call("GET", f"/{info['prefix']}", key=hub.admin_key)
    assert status == 200
    assert fetched["key_id"] == info["key_id"]
    status, _, missing = await hub.call("GET", "/zzzzzzzzzzzz", key=hub.admin_key)
    assert status == 404
    assert missing["type"] == "/problems/not-found"

    status, _, rotated = await hub.call(
        "POST", f"/{info['key_id']}/rotate", key=hub.admin_key, json={"overlap_hours": 1}
    )
    assert status == 201, rotated
    assert rotated["key"] != key
    assert (await hub.service.verify(key)).overlap_until is not None
    assert (await hub.service.verify(rotated["key"])).key_id == rotated["info"]["key_id"]

    status, _, revoked = await hub.call("DELETE", f"/{info['key_id']}", key=hub.admin_key)
    assert status == 200
    assert revoked["revoked_at"] is not None
    status, _, everything = await hub.call(
        "GET", key=hub.admin_key, params={"include_revoked": "true"}
    )
    assert info["key_id"] in [k["key_id"] for k in everything]
    for body in (listed, fetched, rotated["info"], revoked, everything):
        assert key not in str(body)


async def test_revoked_admin_key_is_refused_at_once(hub: Hub) -> None:
    _, _, second = await hub.call(
        "POST", key=hub.admin_key, json={"name": "second", "scopes": ["admin"]}
    )
    assert (await hub.call("GET", key=second["key"]))[0] == 200
    status, _, _ = await hub.call("DELETE", f"/{second['info']['key_id']}", key=hub.admin_key)
    assert status == 200
    status, headers, _ = await hub.call("GET", key=second["key"])
    assert status == 401
    assert headers["WWW-Authenticate"] == INVALID


async def test_invalid_input_is_422(hub: Hub) -> None:
    for body in ({"name": "x", "scopes": ["Bad Scope"]}, {"scopes": []}, {"name": "x", "y": 1}):
        status, _, problem = await hub.call("POST", key=hub.admin_key, json=body)
        assert status == 422, problem


async def test_keys_never_reach_the_logs(hub: Hub, logs: LogCapture) -> None:
    _, _, created = await hub.call("POST", key=hub.admin_key, json={"name": "ci"})
    await hub.call("GET", key=created["key"])
    await hub.call("GET", key=created["key"][:-1] + "0")
    await hub.call("GET", headers={"X-Api-Key": hub.reader_key})
    assert "api key created" in logs.text
    for key in (hub.admin_key, hub.reader_key, created["key"]):
        assert key.split("_")[2][:16] not in logs.text


def test_scopes_and_challenges() -> None:
    require_scopes(["catalog:read", "requests:write"], ["catalog:read"])
    require_scopes(["admin"], ["catalog:read", "anything"])
    require_scopes([], [])
    with pytest.raises(AuthorizationError, match=r"missing scope\(s\): requests:write, x"):
        require_scopes(["catalog:read"], ["catalog:read", "requests:write", "x"])
    assert www_authenticate() == NO_KEY
    assert www_authenticate("invalid_token") == INVALID
    assert www_authenticate("insufficient_scope", "keys:admin") == NOT_ADMIN
    with pytest.raises(ValueError, match="quotes"):
        www_authenticate("x", 'a"b')


def test_extract_api_key_from_headers_only() -> None:
    key = generate_api_key()
    assert extract_api_key({"Authorization": f"Bearer {key}"}) == key
    assert extract_api_key({"authorization": f"bearer  {key} "}) == key
    assert extract_api_key({"X-Api-Key": key}) == key
    assert extract_api_key({"Authorization": "Bearer eyJ.jwt.sig", "X-API-KEY": key}) == key
    assert extract_api_key({"Authorization": "Bearer eyJ.jwt.sig"}) is None
    assert extract_api_key({"Authorization": f"Basic {key}"}) is None
    assert extract_api_key({}) is None
