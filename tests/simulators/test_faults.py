"""Fault injection, the control endpoints and the request log, shared by every simulator."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from medianest.simulators import FaultRule
from medianest.simulators.faults import FaultControl
from tests.simulators.conftest import running

PLEX = {"X-Plex-Token": "plex-owner-token", "Accept": "application/json"}


async def statuses(
    http: aiohttp.ClientSession, url: str, count: int, headers: dict[str, str]
) -> list[int]:
    out = []
    for _ in range(count):
        async with http.get(url, headers=headers) as r:
            await r.read()
            out.append(r.status)
    return out


def test_dice_are_deterministic_per_seed() -> None:
    rule = FaultRule(kind="error", rate=0.3, status=500)

    def pattern(seed: int) -> list[bool]:
        control = FaultControl.of([rule], seed=seed)
        return [not control.decide("GET", "/x").empty for _ in range(200)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)
    assert 30 < sum(pattern(7)) < 90


def test_rules_match_route_globs_methods_and_budgets() -> None:
    control = FaultControl.of(
        [
            FaultRule(kind="error", route="/api/v1/request*", method="POST", times=2),
            FaultRule(kind="latency", route="/library/*", latency=0.5, jitter=0.5),
        ]
    )
    assert control.decide("GET", "/api/v1/request").empty
    assert control.decide("POST", "/api/v1/request").error is not None
    assert control.decide("POST", "/api/v1/request/1/approve").error is not None
    assert control.decide("POST", "/api/v1/request").empty  # budget of 2 spent
    delay = control.decide("GET", "/library/sections").delay
    assert 0.5 <= delay <= 1.0
    assert control.stats() == {"error@POST /api/v1/request*": 2, "latency@* /library/*": 1}


async def test_error_rate_answers_the_services_error(http: aiohttp.ClientSession) -> None:
    rule = FaultRule(kind="error", route="/library/*", rate=0.5, status=502)
    async with running("plex", size=20, faults=(rule,)) as plex:
        first = await statuses(http, f"{plex.url}/library/sections", 20, PLEX)
        async with http.get(f"{plex.url}/identity") as r:
            assert r.status == 200  # another route is not faulted
    async with running("plex", size=20, faults=(rule,)) as plex:
        second = await statuses(http, f"{plex.url}/library/sections", 20, PLEX)
        plex.app.faults.set([FaultRule(kind="error", status=500)])
        async with http.get(f"{plex.url}/library/sections", headers=PLEX) as r:
            assert r.status == 500
            assert r.content_type == "text/html"
            assert "<h1>500 Internal Server Error</h1>" in await r.text()
    assert first == second  # same seed, same request order: same faults
    assert set(first) == {200, 502}


async def test_error_budget_then_recovery(http: aiohttp.ClientSession) -> None:
    rule = FaultRule(
        kind="error",
        status=503,
        times=2,
        body='{"message":"busy"}',
        content_type="application/json",
    )
    async with running("overseerr", faults=(rule,)) as ov:
        url = f"{ov.url}/api/v1/status"
        assert await statuses(http, url, 4, {}) == [503, 503, 200, 200]
        async with http.get(url) as r:
            assert (await r.json())["version"]


async def test_latency_is_added_and_a_client_timeout_sees_it(http: aiohttp.ClientSession) -> None:
    async with running("kuma") as kuma:
        url = f"{kuma.url}/api/status-page/home"
        kuma.app.faults.set([FaultRule(kind="latency", latency=0.01)])
        async with http.get(url) as r:
            assert r.status == 200
        kuma.app.faults.set([FaultRule(kind="latency", latency=30)])
        with pytest.raises(asyncio.TimeoutError):
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=0.2)) as r:
                await r.read()


async def test_hard_down_resets_the_connection(http: aiohttp.ClientSession) -> None:
    async with running("plextv", faults=(FaultRule(kind="down", mode="reset"),)) as tv:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.post(f"{tv.url}/api/v2/pins") as r:
                await r.read()
        tv.app.faults.set([FaultRule(kind="down", mode="503")])
        async with http.post(f"{tv.url}/api/v2/pins") as r:
            assert r.status == 503


async def test_hang_holds_the_request(http: aiohttp.ClientSession) -> None:
    async with running("overseerr", faults=(FaultRule(kind="hang", route="/api/v1/status"),)) as ov:
        with pytest.raises(asyncio.TimeoutError):
            async with http.get(
                f"{ov.url}/api/v1/status", timeout=aiohttp.ClientTimeout(total=0.2)
            ) as r:
                await r.read()


async def test_slow_drip_delivers_the_same_body(http: aiohttp.ClientSession) -> None:
    async with running("plex", size=20) as plex:
        url = f"{plex.url}/library/sections"
        async with http.get(url, headers=PLEX) as r:
            expected = await r.read()
        plex.app.faults.set([FaultRule(kind="drip", chunk_size=64, chunk_delay=0.001)])
        chunks = 0
        async with http.get(url, headers=PLEX) as r:
            received = b""
            async for chunk in r.content.iter_any():
                received += chunk
                chunks += 1
    assert received == expected
    assert chunks >= 1
    assert plex.app.faults.stats() == {"drip@* *": 1}


async def test_http_control_endpoint(http: aiohttp.ClientSession) -> None:
    async with running("overseerr") as ov:
        control = f"{ov.url}/__sim__/faults"
        rules: dict[str, Any] = {
            "rules": [{"kind": "error", "route": "/api/v1/status", "status": 429}]
        }
        async with http.post(control, json=rules) as r:
            assert r.status == 200
            assert (await r.json())["rules"][0]["status"] == 429
        async with http.get(f"{ov.url}/api/v1/status") as r:
            assert r.status == 429
        async with http.post(
            control, json={"rules": [{"kind": "latency", "latency": 0}], "mode": "append"}
        ) as r:
            assert len((await r.json())["rules"]) == 2
        async with http.get(control) as r:
            state = await r.json()
            assert [s["fired"] for s in state["stats"]] == [1, 0]
        async with http.post(control, json={"rules": [{"kind": "explode"}]}) as r:
            assert r.status == 400
        async with http.delete(control) as r:
            assert (await r.json())["rules"] == []
        async with http.get(f"{ov.url}/api/v1/status") as r:
            assert r.status == 200
        async with http.get(f"{ov.url}/__sim__/health") as r:
            assert await r.json() == {"simulator": "overseerr", "ok": True}


async def test_request_log_keeps_the_raw_query(http: aiohttp.ClientSession) -> None:
    async with running("overseerr") as ov:
        target = aiohttp.client.URL(f"{ov.url}/api/v1/search?query=star%20wars", encoded=True)
        async with http.get(target, headers={"X-Api-Key": "overseerr-api-key"}) as r:
            await r.read()
        async with http.get(f"{ov.url}/__sim__/requests") as r:
            log = (await r.json())["requests"]
    [entry] = log
    assert entry["path"] == "/api/v1/search"
    assert entry["query_string"] == "query=star%20wars"
    assert ov.app.requests[0].header("x-api-key") == "overseerr-api-key"
