"""The Uptime Kuma simulator against NOTES.md section 4 (Kuma has no OpenAPI spec)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re

import aiohttp
import pytest

from medianest.simulators import ManualClock
from tests.simulators.conftest import running

BEAT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")
NOW = 1_735_732_800.0  # 2025-01-01T12:00:00Z


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_v2_status_page_and_heartbeats(http: aiohttp.ClientSession) -> None:
    async with running("kuma", kuma_version=2, kuma_slug="home", clock=ManualClock(NOW)) as kuma:
        async with http.get(f"{kuma.url}/api/status-page/home") as r:
            assert r.status == 200
            page = await r.json()
        kuma.state.add_incident("Plex is slow", "Investigating", style="warning")
        async with http.get(f"{kuma.url}/api/status-page/home") as r:
            with_incident = await r.json()
        async with http.get(f"{kuma.url}/api/status-page/heartbeat/home") as r:
            beats = await r.json()
    assert set(page) == {"config", "incidents", "publicGroupList", "maintenanceList"}
    assert page["incidents"] == []
    assert "incident" not in page
    assert page["config"]["slug"] == "home"
    assert "autoRefreshInterval" in page["config"]
    [incident] = with_incident["incidents"]
    assert incident["style"] == "warning"
    assert incident["pin"] is True
    monitors = [m for group in page["publicGroupList"] for m in group["monitorList"]]
    assert {m["sendUrl"] for m in monitors} == {0, 1}
    assert all(("url" in m) == bool(m["sendUrl"]) for m in monitors)
    for monitor_id, history in beats["heartbeatList"].items():
        assert len(history) == 100
        times = [b["time"] for b in history]
        assert all(BEAT_TIME.match(t) for t in times)
        assert times == sorted(times)
        newest = dt.datetime.strptime(times[-1], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=dt.UTC)
        assert NOW - 120 < newest.timestamp() <= NOW  # a UTC wall time, no zone marker
        assert all(b["msg"] == "" and b["status"] in (0, 1, 2, 3) for b in history)
        assert all((b["ping"] is None) == (b["status"] != 1) for b in history)
        ratio = beats["uptimeList"][f"{monitor_id}_24"]
        assert 0.0 <= ratio <= 1.0
    assert beats["uptimeList"]["1_24"] == 1.0
    assert beats["heartbeatList"]["5"][-1]["status"] == 0  # the monitor that is down


async def test_v1_shapes(http: aiohttp.ClientSession) -> None:
    async with running("kuma", kuma_version=1, clock=ManualClock(NOW)) as kuma:
        async with http.get(f"{kuma.url}/api/status-page/home") as r:
            page = await r.json()
        kuma.state.add_incident("Maintenance tonight", "NAS reboot", style="info")
        async with http.get(f"{kuma.url}/api/status-page/home") as r:
            later = await r.json()
        async with http.get(f"{kuma.url}/api/status-page/heartbeat/home") as r:
            beats = await r.json()
    assert page["incident"] is None
    assert "incidents" not in page
    assert "googleAnalyticsId" in page["config"]
    assert "autoRefreshInterval" not in page["config"]
    assert later["incident"]["title"] == "Maintenance tonight"
    assert {len(b) for b in beats["heartbeatList"].values()} == {50}


async def test_unknown_slug(http: aiohttp.ClientSession) -> None:
    async with running("kuma", kuma_version=2) as kuma:
        async with http.get(f"{kuma.url}/api/status-page/nope") as r:
            assert r.status == 404
            assert await r.json() == {"status": "fail", "msg": "Status Page Not Found"}
        async with http.get(f"{kuma.url}/api/status-page/heartbeat/nope") as r:
            assert await r.json() == {"heartbeatList": {}, "uptimeList": {}}
    async with running("kuma", kuma_version=1) as kuma:
        with pytest.raises(asyncio.TimeoutError):
            async with http.get(
                f"{kuma.url}/api/status-page/nope", timeout=aiohttp.ClientTimeout(total=0.3)
            ) as r:
                await r.read()


async def test_silent_slug_never_answers(http: aiohttp.ClientSession) -> None:
    async with running("kuma", kuma_silent_slugs=("home",)) as kuma:
        for path in ("/api/status-page/home", "/api/status-page/heartbeat/home"):
            with pytest.raises(asyncio.TimeoutError):
                async with http.get(kuma.url + path, timeout=aiohttp.ClientTimeout(total=0.3)) as r:
                    await r.read()


@pytest.mark.parametrize("version", [1, 2])
async def test_metrics_need_basic_auth(http: aiohttp.ClientSession, version: int) -> None:
    async with running(
        "kuma", kuma_version=version, kuma_api_key="uk1_secret", clock=ManualClock(NOW)
    ) as kuma:
        url = f"{kuma.url}/metrics"
        for headers in ({}, basic("admin", "wrong"), {"Authorization": "Bearer x"}):
            async with http.get(url, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Basic")
        async with http.get(url, headers=basic("admin", "kuma-password")) as r:
            assert r.status == 200
            assert r.content_type == "text/plain"
            text = await r.text()
        async with http.get(url, headers=basic("anyone", "uk1_secret")) as r:
            assert r.status == 200
        kuma.state.set_status(1, 0)
        async with http.get(url, headers=basic("admin", "kuma-password")) as r:
            after = await r.text()
    for name in (
        "monitor_status",
        "monitor_response_time",
        "monitor_cert_days_remaining",
        "monitor_cert_is_valid",
    ):
        assert f"# TYPE {name} gauge" in text
    status = re.search(r"^monitor_status\{([^}]*)\} (\d)$", text, re.M)
    assert status is not None
    assert 'monitor_name="Plex Media Server"' in status.group(1)
    assert 'monitor_hostname="null"' in status.group(1)
    assert status.group(2) == "1"
    assert ("monitor_id=" in text) == (version == 2)
    assert ("monitor_uptime_ratio" in text) == (version == 2)
    assert re.search(
        r'^monitor_status\{monitor_(id="1"|name="Plex Media Server").*\} 0$', after, re.M
    )
