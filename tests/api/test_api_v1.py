"""The first REST API over real sockets, against the four simulators."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from medianest.app import Hub, create_app
from medianest.config import load_settings
from tests.support.servers import serve_asgi
from tests.support.stack import SimulatedStack, simulated_stack


@pytest.fixture
async def stack() -> AsyncIterator[SimulatedStack]:
    async with simulated_stack(size=120, seed=7) as running:
        yield running


def hub_settings(tmp_path: Path, stack: SimulatedStack, **extra: Any) -> Any:
    return load_settings(
        overrides={
            "data_dir": str(tmp_path),
            "upstreams": stack.upstreams,
            "search": {"deadline": 1.0},
            **extra,
        }
    )


@pytest.fixture
async def api(tmp_path: Path, stack: SimulatedStack) -> AsyncIterator[str]:
    """The API with guest access on: reading the catalog and services needs no sign-in."""
    settings = hub_settings(tmp_path, stack, allow_anonymous=True)
    app = create_app(settings, hub=Hub(settings, simulated=True), configure_logs=False)
    async with serve_asgi(app) as server:
        yield f"{server.url}/api/v1"


async def call(url: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        return r.status, await r.json(content_type=None)


async def test_services_lists_every_upstream_with_health_and_breaker(api: str) -> None:
    status, body = await call(f"{api}/services")
    assert status == 200
    assert body["simulated"] is True
    by_name = {s["service"]: s for s in body["services"]}
    assert set(by_name) == {"plex", "plextv", "overseerr", "kuma"}
    for service in by_name.values():
        assert service["status"] == "up", service
        assert service["breaker"] == "closed"
        assert service["latency_ms"] >= 0


async def test_libraries_and_paged_items(api: str) -> None:
    status, libraries = await call(f"{api}/plex/libraries")
    assert status == 200
    movies = next(lib for lib in libraries if lib["type"] == "movie")
    status, first = await call(f"{api}/plex/libraries/{movies['key']}/items?limit=7")
    assert status == 200
    assert len(first["items"]) == 7
    assert first["total"] > 7
    status, second = await call(f"{api}/plex/libraries/{movies['key']}/items?offset=7&limit=7")
    keys_one = {i["rating_key"] for i in first["items"]}
    keys_two = {i["rating_key"] for i in second["items"]}
    assert not keys_one & keys_two
    status, recent = await call(f"{api}/plex/recently-added?limit=5")
    assert status == 200
    assert 0 < len(recent["items"]) <= 5


async def test_search_merges_library_and_requestable(api: str, stack: SimulatedStack) -> None:
    status, libraries = await call(f"{api}/plex/libraries")
    movies = next(lib for lib in libraries if lib["type"] == "movie")
    _, page = await call(f"{api}/plex/libraries/{movies['key']}/items?limit=1")
    title = page["items"][0]["title"]
    status, result = await call(f"{api}/search", params={"q": title})
    assert status == 200
    assert result["sources"]["plex"]["status"] == "ok"
    assert result["sources"]["overseerr"]["status"] == "ok"
    hit = next(h for h in result["items"] if h["title"] == title)
    assert hit["availability"] == "available"
    assert "plex" in hit["sources"]
    assert hit["rating_key"] == page["items"][0]["rating_key"]


async def test_media_details_and_unknown_tmdb_id(api: str) -> None:
    _, result = await call(f"{api}/search", params={"q": "the"})
    movie = next(h for h in result["items"] if h["type"] == "movie" and h["ids"]["tmdb"])
    status, details = await call(f"{api}/media/movie/{movie['ids']['tmdb']}")
    assert status == 200
    assert details["ids"]["tmdb"] == movie["ids"]["tmdb"]
    status, problem = await call(f"{api}/media/movie/999999999")
    assert status == 404
    assert problem["type"] == "/problems/upstream-not-found"
    assert problem["service"] == "overseerr"


async def test_bad_parameters_are_problem_json(api: str) -> None:
    status, problem = await call(f"{api}/search")
    assert status == 422
    assert "query.q" in problem["errors"]
    status, problem = await call(f"{api}/plex/libraries/1/items?limit=100000")
    assert status == 422
    status, problem = await call(f"{api}/media/book/1")
    assert status == 422


async def test_sign_in_is_required_unless_guests_are_allowed(
    tmp_path: Path, stack: SimulatedStack
) -> None:
    settings = hub_settings(tmp_path, stack)
    hub = Hub(settings, simulated=True)
    async with serve_asgi(create_app(settings, hub=hub, configure_logs=False)) as server:
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/api/v1/services") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == 'Bearer realm="medianest"'
            assert (await r.json(content_type=None))["type"] == "/problems/unauthenticated"
        assert hub.api_keys is not None
        _, reader = await hub.api_keys.create("reader", "tests", ["services:read"])
        status, _ = await call(f"{server.url}/api/v1/services", headers={"X-Api-Key": reader})
        assert status == 200
        status, problem = await call(
            f"{server.url}/api/v1/plex/libraries", headers={"X-Api-Key": reader}
        )
        assert status == 403
        assert "catalog:read" in problem["detail"]
        status, _ = await call(f"{server.url}/health")
        assert status == 200
    open_settings = hub_settings(tmp_path, stack, allow_anonymous=True)
    app = create_app(open_settings, configure_logs=False)
    async with serve_asgi(app) as server:
        status, _ = await call(f"{server.url}/api/v1/services")
        assert status == 200
        status, _ = await call(f"{server.url}/api/v1/admin/users")
        assert status == 401


async def test_unconfigured_service_is_503(tmp_path: Path) -> None:
    settings = load_settings(overrides={"data_dir": str(tmp_path), "allow_anonymous": True})
    app = create_app(settings, configure_logs=False)
    async with serve_asgi(app) as server:
        status, problem = await call(f"{server.url}/api/v1/plex/libraries")
        assert status == 503
        assert problem["type"] == "/problems/not-configured"
        status, body = await call(f"{server.url}/api/v1/services")
        assert (status, body) == (200, {"simulated": False, "services": []})
        status, result = await call(f"{server.url}/api/v1/search", params={"q": "x"})
        assert status == 200
        assert result["items"] == []
