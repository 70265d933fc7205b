"""The hub over a real socket: health, readiness, metrics, docs, errors, request logging."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fastapi import FastAPI
from multidict import CIMultiDict

from medianest.app import Hub, create_app
from medianest.config import load_settings
from medianest.errors import UpstreamRateLimited, UpstreamTimeout, ValidationError
from tests.conftest import LogCapture
from tests.support.servers import serve_asgi


def make_app(tmp_path: Path, **database: Any) -> FastAPI:
    db = {"url": f"sqlite:///{tmp_path / 'hub.db'}", **database}
    settings = load_settings(overrides={"data_dir": str(tmp_path), "database": db})
    return create_app(settings, configure_logs=False)


@pytest.fixture
async def hub_url(tmp_path: Path, logs: LogCapture) -> AsyncIterator[str]:
    app = make_app(tmp_path)

    async def boom() -> None:
        raise RuntimeError("secret internals: token=abc123")

    async def slow_upstream() -> None:
        raise UpstreamTimeout("plex did not answer", service="plex", endpoint="/library/sections")

    async def limited() -> None:
        raise UpstreamRateLimited("busy", service="overseerr", retry_after=2.5)

    async def invalid() -> None:
        raise ValidationError("bad query", errors={"query.q": "must not be empty"})

    app.add_api_route("/t/boom", boom)
    app.add_api_route("/t/upstream", slow_upstream)
    app.add_api_route("/t/limited", limited)
    app.add_api_route("/t/invalid", invalid)
    app.add_api_route("/t/items/{item_id}", lambda item_id: {"id": item_id})
    async with serve_asgi(app) as server:
        yield server.url


async def get(url: str, **kw: Any) -> tuple[int, CIMultiDict[str], Any]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        ctype = r.headers.get("content-type", "")
        body = await r.json(content_type=None) if "json" in ctype else await r.text()
        return r.status, CIMultiDict(r.headers), body


async def test_health_ready_metrics_docs(hub_url: str) -> None:
    status, _, body = await get(f"{hub_url}/health")
    assert (status, body) == (200, {"status": "ok"})
    status, _, body = await get(f"{hub_url}/ready")
    assert status == 200
    assert body["status"] == "ready"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["migrations"]["detail"].startswith("at ")
    await get(f"{hub_url}/t/items/42")
    status, headers, text = await get(f"{hub_url}/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert (
        'medianest_http_requests_total{method="GET",route="/t/items/{item_id}",status="200"}'
        in text
    )
    status, _, html = await get(f"{hub_url}/docs")
    assert status == 200
    assert "swagger" in html.lower()
    status, _, spec = await get(f"{hub_url}/openapi.json")
    assert status == 200
    assert {"/health", "/ready", "/metrics"} <= set(spec["paths"])


async def test_not_ready_when_migrations_pending(tmp_path: Path, logs: LogCapture) -> None:
    app = make_app(tmp_path, migrate_on_start=False)
    async with serve_asgi(app) as server:
        status, _, body = await get(f"{server.url}/ready")
    assert status == 503
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["status"] == "ok"
    assert "pending migrations: 0001" in body["checks"]["migrations"]["reason"]


async def test_not_ready_when_database_unreachable(tmp_path: Path, logs: LogCapture) -> None:
    app = make_app(tmp_path, url="postgresql://mn:pw-hidden@127.0.0.1:1/mn", migrate_on_start=False)
    async with serve_asgi(app) as server:
        status, _, body = await get(f"{server.url}/ready")
        assert (await get(f"{server.url}/health"))[0] == 200
    assert status == 503
    reason = body["checks"]["database"]["reason"]
    assert reason.startswith("database unreachable")
    assert "pw-hidden" not in str(body)


async def test_errors_are_problem_json(hub_url: str) -> None:
    status, headers, body = await get(f"{hub_url}/t/upstream")
    assert status == 504
    assert headers["content-type"] == "application/problem+json"
    assert body["type"] == "/problems/upstream-timeout"
    assert body["service"] == "plex"
    assert body["endpoint"] == "/library/sections"
    assert body["instance"] == "/t/upstream"
    assert body["request_id"] == headers["x-request-id"]

    status, headers, body = await get(f"{hub_url}/t/limited")
    assert (status, headers["retry-after"]) == (503, "3")

    status, _, body = await get(f"{hub_url}/t/invalid")
    assert status == 422
    assert body["errors"] == {"query.q": "must not be empty"}

    status, _, body = await get(f"{hub_url}/nowhere")
    assert status == 404
    assert body["title"] == "Not Found"

    status, _, description = await get(f"{hub_url}/problems/upstream-timeout")
    assert status == 200
    assert "did not answer in time" in description


async def test_request_validation_is_problem_json(tmp_path: Path, logs: LogCapture) -> None:
    app = make_app(tmp_path)

    async def paged(limit: int) -> dict[str, int]:
        return {"limit": limit}

    app.add_api_route("/t/paged", paged)
    async with serve_asgi(app) as server:
        status, headers, body = await get(f"{server.url}/t/paged?limit=lots")
    assert status == 422
    assert headers["content-type"] == "application/problem+json"
    assert "query.limit" in body["errors"]


async def test_unhandled_error_is_a_bare_500_logged_with_request_id(
    hub_url: str, logs: LogCapture
) -> None:
    status, headers, body = await get(f"{hub_url}/t/boom", headers={"X-Request-Id": "req-77"})
    assert status == 500
    assert headers["content-type"] == "application/problem+json"
    assert body["type"] == "/problems/internal"
    assert body["request_id"] == "req-77"
    assert "internals" not in str(body)
    errors = [r for r in logs.records if r.get("event") == "unhandled error"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "req-77"
    assert "RuntimeError" in errors[0]["exception"]
    assert "abc123" not in logs.text


async def test_one_log_line_per_request(hub_url: str, logs: LogCapture) -> None:
    _, headers, _ = await get(f"{hub_url}/t/items/9")
    generated = headers["x-request-id"]
    assert len(generated) == 32
    _, headers, _ = await get(f"{hub_url}/t/items/10", headers={"X-Request-Id": "bad id\u00e9"})
    assert headers["x-request-id"] != "bad id"
    lines = [r for r in logs.records if r.get("event") == "request"]
    mine = [r for r in lines if r["request_id"] == generated]
    assert len(mine) == 1
    line = mine[0]
    assert line["method"] == "GET"
    assert line["route"] == "/t/items/{item_id}"
    assert line["status"] == 200
    assert line["duration_ms"] >= 0
    assert line["level"] == "info"


async def test_hub_start_failure_closes_what_started(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={"database": {"url": "postgresql://u@127.0.0.1:1/x", "migrate_on_start": True}}
    )
    hub = Hub(settings)
    from medianest.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable):
        await hub.start()
    with pytest.raises(Exception, match="not started"):
        _ = hub.database.engine
