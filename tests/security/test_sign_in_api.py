"""Sign-in over real sockets: Plex PIN against the plex.tv and Plex simulators, passwords,
tokens, cookies with CSRF protection, disabling people, and the sign-in rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from medianest.app import Hub, create_app
from medianest.config import load_settings
from medianest.database.schema import users
from medianest.security.identity import Identity
from tests.support.servers import serve_asgi
from tests.support.stack import SimulatedStack, simulated_stack

FRIEND_TOKEN = "plex-friend-token"
OUTSIDER_TOKEN = "plex-outsider-token"


@dataclass
class Running:
    url: str
    hub: Hub
    stack: SimulatedStack

    @property
    def identity(self) -> Identity:
        assert self.hub.identity is not None
        return self.hub.identity

    def claim(self, pin_id: int, token: str | None = None) -> None:
        self.stack.apps["plextv"].state.claim(pin_id, token)


@pytest.fixture
async def stack() -> AsyncIterator[SimulatedStack]:
    async with simulated_stack(size=60, seed=3, pin_claim_after=None) as running:
        yield running


async def start(tmp_path: Path, stack: SimulatedStack, **extra: Any) -> Any:
    settings = load_settings(
        overrides={"data_dir": str(tmp_path), "upstreams": stack.upstreams, **extra}
    )
    hub = Hub(settings, simulated=True)
    return hub, serve_asgi(create_app(settings, hub=hub, configure_logs=False))


@pytest.fixture
async def running(tmp_path: Path, stack: SimulatedStack) -> AsyncIterator[Running]:
    hub, serving = await start(tmp_path, stack)
    async with serving as server:
        yield Running(server.url, hub, stack)


async def send(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.request(method, url, allow_redirects=False, **kw) as response:
        return response.status, await response.json(content_type=None), response


def jar() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def plex_sign_in(
    api: Running, http: aiohttp.ClientSession, token: str | None = None, session: str = "cookie"
) -> tuple[int, Any]:
    status, pin, _ = await send(http, "POST", f"{api.url}/api/v1/auth/plex/pin")
    assert status == 201, pin
    poll = f"{api.url}/api/v1/auth/plex/pin/{pin['id']}?session={session}"
    secret = {"X-Pin-Secret": pin["poll_secret"]}
    status, pending, answer = await send(http, "GET", poll, headers=secret)
    assert (status, pending["status"]) == (202, "pending")
    assert answer.headers["Retry-After"] == "1"
    api.claim(pin["id"], token)
    status, body, _ = await send(http, "GET", poll, headers=secret)
    return status, body


async def test_plex_pin_sign_in_end_to_end(running: Running) -> None:
    async with jar() as http:
        status, pin, _ = await send(http, "POST", f"{running.url}/api/v1/auth/plex/pin")
        assert status == 201
        assert pin["code"] in pin["auth_url"]
        wrong = {"X-Pin-Secret": "0" * 64}
        status, _, _ = await send(
            http, "GET", f"{running.url}/api/v1/auth/plex/pin/{pin['id']}", headers=wrong
        )
        assert status == 401

        status, body = await plex_sign_in(running, http)
        assert status == 200, body
        assert body["user"]["username"] == "owner"
        assert body["user"]["role"] == "admin"  # the first person to sign in
        assert body["refresh_token"] is None
        status, me, _ = await send(http, "GET", f"{running.url}/api/v1/auth/me")
        assert (status, me["user"]["id"]) == (200, body["user"]["id"])
        status, libraries, _ = await send(http, "GET", f"{running.url}/api/v1/plex/libraries")
        assert status == 200
        assert libraries

    owner_token = running.stack.options.token
    assert owner_token not in str(body)
    async with running.hub.database.connect() as conn:
        stored = (await conn.execute(select(users.c.plex_token_enc))).scalar_one()
    assert stored.startswith("v1.")
    assert owner_token not in stored
    assert await running.identity.users.plex_token(body["user"]["id"]) == owner_token


async def test_a_friend_signs_in_as_a_user_with_a_bearer_session(running: Running) -> None:
    async with jar() as http:
        await plex_sign_in(running, http)  # the owner, first: admin
    async with aiohttp.ClientSession() as http:
        status, body = await plex_sign_in(running, http, FRIEND_TOKEN, session="bearer")
        assert status == 200, body
        assert body["user"]["role"] == "user"
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        status, _, _ = await send(
            http, "GET", f"{running.url}/api/v1/plex/libraries", headers=bearer
        )
        assert status == 200
        status, _, answer = await send(
            http, "GET", f"{running.url}/api/v1/admin/users", headers=bearer
        )
        assert status == 403
        assert 'error="insufficient_scope"' in answer.headers["WWW-Authenticate"]

        status, fresh, _ = await send(
            http,
            "POST",
            f"{running.url}/api/v1/auth/token",
            json={"refresh_token": body["refresh_token"]},
        )
        assert status == 200
        assert fresh["access_token"] != body["access_token"]
        status, _, _ = await send(http, "POST", f"{running.url}/api/v1/auth/logout", headers=bearer)
        assert status == 204
        status, _, answer = await send(http, "GET", f"{running.url}/api/v1/auth/me", headers=bearer)
        assert status == 401
        assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
        status, _, _ = await send(
            http,
            "POST",
            f"{running.url}/api/v1/auth/token",
            json={"refresh_token": body["refresh_token"]},
        )
        assert status == 401


async def test_an_account_without_access_to_the_server_is_refused(running: Running) -> None:
    async with aiohttp.ClientSession() as http:
        status, problem = await plex_sign_in(running, http, OUTSIDER_TOKEN)
    assert status == 403
    assert "cannot reach this hub's Plex server" in problem["detail"]
    assert await running.identity.users.count() == 0


async def test_cookie_sessions_refuse_cross_site_unsafe_requests(running: Running) -> None:
    async with jar() as http:
        status, _ = await plex_sign_in(running, http)
        assert status == 200
        logout = f"{running.url}/api/v1/auth/logout"
        status, problem, _ = await send(http, "POST", logout)
        assert status == 403
        assert "Origin" in problem["detail"]
        status, _, _ = await send(http, "POST", logout, headers={"Origin": "https://evil.test"})
        assert status == 403
        status, _, _ = await send(http, "POST", logout, headers={"Origin": running.url})
        assert status == 204
        status, _, _ = await send(http, "GET", f"{running.url}/api/v1/auth/me")
        assert status == 401


async def test_local_admin_must_change_the_password_first(running: Running) -> None:
    await running.identity.users.create_local(
        "root", "first-password-123", must_change_password=True
    )
    async with aiohttp.ClientSession() as http:
        login = f"{running.url}/api/v1/auth/login"
        status, problem, _ = await send(
            http, "POST", login, json={"username": "root", "password": "wrong-password-1"}
        )
        assert (status, problem["detail"]) == (401, "invalid username or password")
        status, body, _ = await send(
            http,
            "POST",
            login,
            json={"username": "root", "password": "first-password-123", "session": "bearer"},
        )
        assert status == 200
        assert body["must_change_password"] is True
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        status, problem, _ = await send(
            http, "GET", f"{running.url}/api/v1/services", headers=bearer
        )
        assert status == 403
        assert "change your password" in problem["detail"]
        status, _, _ = await send(
            http,
            "POST",
            f"{running.url}/api/v1/auth/password",
            headers=bearer,
            json={"current_password": "first-password-123", "new_password": "a-better-secret-42"},
        )
        assert status == 200
        status, _, _ = await send(http, "GET", f"{running.url}/api/v1/services", headers=bearer)
        assert status == 200


async def test_disabling_a_person_stops_their_sessions_and_keys_at_once(running: Running) -> None:
    async with aiohttp.ClientSession() as http:
        _, owner = await plex_sign_in(running, http, session="bearer")
        _, friend = await plex_sign_in(running, http, FRIEND_TOKEN, session="bearer")
        admin = {"Authorization": f"Bearer {owner['access_token']}"}
        friend_auth = {"Authorization": f"Bearer {friend['access_token']}"}
        _, key = await running.identity.api_keys.create(
            "friend's script", friend["user"]["id"], ["catalog:read"]
        )
        libraries = f"{running.url}/api/v1/plex/libraries"
        for headers in (friend_auth, {"X-Api-Key": key}):
            status, _, _ = await send(http, "GET", libraries, headers=headers)
            assert status == 200

        user_url = f"{running.url}/api/v1/admin/users/{friend['user']['id']}"
        status, changed, _ = await send(
            http, "PATCH", user_url, headers=admin, json={"disabled": True}
        )
        assert status == 200
        assert changed["disabled_at"] is not None
        for headers in (friend_auth, {"X-Api-Key": key}):
            status, _, _ = await send(http, "GET", libraries, headers=headers)
            assert status == 401

        own = f"{running.url}/api/v1/admin/users/{owner['user']['id']}"
        status, _, _ = await send(http, "PATCH", own, headers=admin, json={"role": "user"})
        assert status in (403, 422)
        status, _, _ = await send(http, "PATCH", own, headers=admin, json={"disabled": True})
        assert status in (403, 422)
        status, _, _ = await send(http, "DELETE", own, headers=admin)
        assert status == 403
        status, me, _ = await send(http, "GET", f"{running.url}/api/v1/auth/me", headers=admin)
        assert (status, me["user"]["role"]) == (200, "admin")
        status, deleted, _ = await send(http, "DELETE", user_url, headers=admin)
        assert (status, deleted["id"]) == (200, friend["user"]["id"])
        status, _, _ = await send(http, "GET", user_url, headers=admin)
        assert status == 404


async def test_sign_in_attempts_are_rate_limited_per_address(
    tmp_path: Path, stack: SimulatedStack
) -> None:
    _, serving = await start(tmp_path, stack, identity={"sign_in_rate_limit": "3/minute"})
    async with serving as server, aiohttp.ClientSession() as http:
        login = f"{server.url}/api/v1/auth/login"
        attempt = {"username": "nobody", "password": "not-the-password"}
        statuses = [(await send(http, "POST", login, json=attempt))[0] for _ in range(3)]
        assert statuses == [401, 401, 401]
        status, problem, answer = await send(http, "POST", login, json=attempt)
        assert status == 429
        assert problem["type"] == "/problems/rate-limited"
        assert int(answer.headers["Retry-After"]) >= 1


async def test_session_cookie_attributes(running: Running) -> None:
    await running.identity.users.create_local(
        "carol", "carols-password-1", must_change_password=False
    )
    login = f"{running.url}/api/v1/auth/login"
    credentials = {"username": "carol", "password": "carols-password-1"}
    async with aiohttp.ClientSession() as http:
        _, _, remote = await send(
            http, "POST", login, json=credentials, headers={"Host": "media.example.com"}
        )
        _, _, local = await send(http, "POST", login, json=credentials)
    cookie = remote.headers["Set-Cookie"]
    assert cookie.startswith("__Host-mn_session=mns_")
    for attribute in ("HttpOnly", "Path=/", "SameSite=lax", "Secure"):
        assert attribute in cookie
    assert remote.headers["Cache-Control"] == "no-store"
    cookie = local.headers["Set-Cookie"]
    assert cookie.startswith("mn_session=mns_")
    assert "HttpOnly" in cookie
    assert "Secure" not in cookie
