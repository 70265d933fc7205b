"""The gateway inside the hub: API keys, scopes, rate limits, cache, transforms, admin, reload."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from medianest.app import Hub, create_app
from medianest.config import load_settings
from tests.gateway.test_proxy import fetch
from tests.support.servers import RunningServer, serve_asgi
from tests.support.upstream import upstream_app


def routes_toml(url: str, *, extra: str = "") -> str:
    return f"""
[[routes]]
name = "media"
match = {{ path_prefix = "/media/" }}
target = {{ instances = [{{ url = "{url}" }}] }}
strip_prefix = true
auth = {{ required = true, scopes = ["media:read"] }}
rate_limits = [{{ limit = "3/minute", per = "key" }}]
policy = {{ timeout = {{ attempt = 1.0, total = 2.0 }}, retry = {{ max_attempts = 1 }} }}
cache = {{ ttl = 0.001, stale_if_error = 600 }}
[routes.transforms.response_headers]
set = {{ x-served-by = "medianest" }}
remove = ["x-instance"]
[routes.transforms.json_body]
remove = ["secret"]
rename = {{ instance = "origin" }}
{extra}
"""


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, str, RunningServer, Path]]:
    async with serve_asgi(upstream_app("up")) as upstream:
        routes = tmp_path / "routes.toml"
        routes.write_text(routes_toml(upstream.url))
        settings = load_settings(
            overrides={"data_dir": str(tmp_path), "gateway": {"routes_file": str(routes)}}
        )
        hub = Hub(settings)
        app = create_app(settings, hub=hub, configure_logs=False)
        async with serve_asgi(app) as server:
            yield hub, server.url, upstream, routes


async def key(hub: Hub, *scopes: str) -> str:
    assert hub.api_keys is not None
    _, plaintext = await hub.api_keys.create("test", "tester", scopes)
    return plaintext


async def test_keys_scopes_and_challenges(hub: tuple[Hub, str, RunningServer, Path]) -> None:
    running, url, _, _ = hub
    status, headers, body = await fetch("GET", f"{url}/media/document")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="medianest"'
    assert json.loads(body)["route"] == "media"
    status, headers, _ = await fetch(
        "GET", f"{url}/media/document", headers={"Authorization": "Bearer mn_garbage"}
    )
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    wrong = await key(running, "other:read")
    status, headers, _ = await fetch("GET", f"{url}/media/document", headers={"X-Api-Key": wrong})
    assert status == 403
    assert 'error="insufficient_scope"' in headers["www-authenticate"]
    assert 'scope="media:read"' in headers["www-authenticate"]
    good = await key(running, "media:read")
    status, headers, body = await fetch("GET", f"{url}/media/document", headers={"X-Api-Key": good})
    assert status == 200
    document = json.loads(body)
    assert document["origin"] == "up"
    assert "secret" not in document
    assert headers["x-served-by"] == "medianest"
    assert "x-instance" not in headers
    assert headers["ratelimit-limit"] == "3"


async def test_rate_limit_per_key_then_429(hub: tuple[Hub, str, RunningServer, Path]) -> None:
    running, url, _, _ = hub
    one, two = await key(running, "media:read"), await key(running, "media:read")
    statuses = []
    for _ in range(4):
        status, headers, _ = await fetch("GET", f"{url}/media/echo", headers={"X-Api-Key": one})
        statuses.append(status)
    assert statuses == [200, 200, 200, 429]
    assert int(headers["retry-after"]) >= 1
    assert headers["ratelimit-remaining"] == "0"
    status, _, _ = await fetch("GET", f"{url}/media/echo", headers={"X-Api-Key": two})
    assert status == 200


async def test_stale_if_error_serves_the_last_good_answer(
    hub: tuple[Hub, str, RunningServer, Path],
) -> None:
    running, url, upstream, _ = hub
    good = await key(running, "media:read")
    status, _, fresh = await fetch("GET", f"{url}/media/document", headers={"X-Api-Key": good})
    assert status == 200
    upstream.kill()
    status, headers, stale = await fetch(
        "GET", f"{url}/media/document", headers={"X-Api-Key": good}
    )
    assert status == 200
    assert stale == fresh
    assert headers["x-medianest-cache"] == "STALE"
    assert "age" in headers


async def test_admin_api_and_reload(hub: tuple[Hub, str, RunningServer, Path]) -> None:
    running, url, upstream, routes = hub
    admin = await key(running, "admin")
    auth = {"X-Api-Key": admin}
    async with aiohttp.ClientSession(headers=auth) as s:
        async with s.get(f"{url}/api/v1/admin/gateway/routes") as r:
            assert r.status == 200
            listed = await r.json()
        assert [r["name"] for r in listed] == ["media"]
        assert listed[0]["instances"][0]["ejected"] is False
        async with s.post(f"{url}/api/v1/admin/gateway/routes/media/breaker/open") as r:
            assert (await r.json())["breaker"]["state"] == "forced_open"
        async with s.post(f"{url}/api/v1/admin/gateway/routes/media/breaker/close") as r:
            assert (await r.json())["breaker"]["state"] == "closed"
        routes.write_text(routes_toml(upstream.url) + '\n[[routes]]\nname = "bad"\n')
        async with s.post(f"{url}/api/v1/admin/gateway/reload") as r:
            assert r.status == 500
            problem = await r.json()
        assert "routes.1.match" in problem["detail"]
        status, _, _ = await fetch(
            "GET", f"{url}/media/echo", headers={"X-Api-Key": await key(running, "media:read")}
        )
        assert status == 200
        extra = "\n".join(
            [
                "[[routes]]",
                'name = "open"',
                'match = { path_prefix = "/open/" }',
                f'target = {{ instances = [{{ url = "{upstream.url}" }}] }}',
                "auth = { required = false }",
                "strip_prefix = true",
            ]
        )
        routes.write_text(routes_toml(upstream.url, extra=extra))
        async with s.post(f"{url}/api/v1/admin/gateway/reload") as r:
            assert r.status == 200
            assert (await r.json())["added"] == ["open"]
    status, _, body = await fetch("GET", f"{url}/open/x")
    assert status == 200
    assert json.loads(body)["path"] == "/x"
    status, _, _ = await fetch("GET", f"{url}/api/v1/admin/gateway/routes")
    assert status == 401


async def test_metrics_name_routes(hub: tuple[Hub, str, RunningServer, Path]) -> None:
    running, url, _, _ = hub
    await fetch("GET", f"{url}/media/echo", headers={"X-Api-Key": await key(running, "media:read")})
    _, _, text = await fetch("GET", f"{url}/metrics")
    assert b'gateway_requests_total{method="GET",route="media",status="200"}' in text
    assert b"gateway_request_duration_seconds_bucket" in text


async def test_hub_access_tokens_pass_by_role(hub: tuple[Hub, str, RunningServer, Path]) -> None:
    running, url, _, _ = hub
    assert running.identity is not None
    users = running.identity.users
    tokens = {}
    for name, role in (("ada", "admin"), ("bo", "user")):
        person = await users.create_local(
            name, "long-password-99", role=role, must_change_password=False
        )
        opened = await running.identity.open_session(person, "bearer", user_agent=None, ip=None)
        tokens[role] = {"Authorization": f"Bearer {opened.access_token}"}
    status, _, _ = await fetch("GET", f"{url}/media/echo", headers=tokens["admin"])
    assert status == 200
    status, headers, _ = await fetch("GET", f"{url}/media/echo", headers=tokens["user"])
    assert status == 403
    assert 'scope="media:read"' in headers["www-authenticate"]
    forged = {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}
    status, headers, _ = await fetch("GET", f"{url}/media/echo", headers=forged)
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
