"""Every answer of the hub carries the security headers; the docs page gets its own CSP."""

from __future__ import annotations

import aiohttp
import pytest

from medianest.api.security_headers import API_POLICY, DOCS_POLICY
from medianest.app import create_app
from medianest.config import Settings
from tests.support.servers import serve_asgi

pytestmark = pytest.mark.asyncio

EXPECTED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


@pytest.fixture
async def base_url(sqlite_url: str):  # type: ignore[no-untyped-def]
    settings = Settings(database={"url": sqlite_url}, allow_anonymous=True)
    async with serve_asgi(create_app(settings, configure_logs=False)) as server:
        yield server.url


@pytest.mark.parametrize(
    ("path", "status"), [("/health", 200), ("/api/v1/nowhere", 404), ("/openapi.json", 200)]
)
async def test_api_answers_and_errors_carry_the_headers(
    base_url: str, path: str, status: int
) -> None:
    async with aiohttp.ClientSession() as http, http.get(base_url + path) as answer:
        assert answer.status == status
        for name, value in EXPECTED.items():
            assert answer.headers[name] == value
        assert answer.headers["content-security-policy"] == API_POLICY


async def test_docs_page_gets_a_policy_that_lets_it_load_but_not_be_framed(base_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(base_url + "/docs") as answer:
        assert answer.status == 200
        policy = answer.headers["content-security-policy"]
        assert policy == DOCS_POLICY
        assert "frame-ancestors 'none'" in policy
        assert "cdn.jsdelivr.net" in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
