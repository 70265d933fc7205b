"""The Uptime Kuma adapter against the Kuma simulator (v1 and v2), over real sockets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from medianest import errors
from medianest.config import UpstreamSettings
from medianest.integrations.kuma import KumaAdapter
from medianest.integrations.models import HealthStatus
from medianest.integrations.registry import build_adapter
from medianest.simulators import ManualClock, SimulatorApp, SimulatorOptions, build_simulator
from tests.integrations.json_rewrite import rewrite_json
from tests.support.servers import serve_asgi

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
PASSWORD = "kuma-password"
FAST = {"timeout": {"attempt": 0.2, "total": 0.5}, "retry": {"enabled": False}}


class Served:
    def __init__(self, url: str, sim: SimulatorApp[Any]) -> None:
        self.url, self.sim = url, sim


Serve = Callable[..., Awaitable[Served]]
Make = Callable[..., Awaitable[KumaAdapter]]


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as exits:
        yield exits


@pytest.fixture
def serve(stack: contextlib.AsyncExitStack) -> Serve:
    """``await serve(version=1, rewrite=(glob, change))``: a Kuma simulator on a real socket."""

    async def start(
        version: int = 2, rewrite: tuple[str, Any] | None = None, **options: Any
    ) -> Served:
        sim = build_simulator(
            "kuma",
            SimulatorOptions(
                kuma_version=version, clock=ManualClock(NOW), hang_limit=5.0, **options
            ),
        )
        app = rewrite_json(sim, *rewrite) if rewrite else sim
        running = await stack.enter_async_context(serve_asgi(app, lifespan="off"))
        return Served(running.url, sim)

    return start


@pytest.fixture
def make(stack: contextlib.AsyncExitStack) -> Make:
    async def build(url: str, *, policy: Any = None, **settings: Any) -> KumaAdapter:
        upstream = UpstreamSettings.model_validate(
            {
                "url": url,
                "options": {"slug": "home"},
                "policy": policy or {"retry": {"enabled": False}},
                **settings,
            }
        )
        adapter = build_adapter("kuma", "kuma", upstream, registry=CollectorRegistry())
        assert isinstance(adapter, KumaAdapter)
        await stack.enter_async_context(adapter)
        return adapter

    return build


async def test_v2_status_page(serve: Serve, make: Make) -> None:
    served = await serve(2)
    kuma = await make(served.url)
    page = await kuma.status_page()
    assert (page.slug, page.title, page.description) == (
        "home",
        "MediaNest Services",
        "Is the media stack up?",
    )
    assert page.incidents == []
    assert page.maintenance == []
    assert [(g.name, [m.id for m in g.monitors]) for g in page.groups] == [
        ("Media", [1, 2, 3]),
        ("Infrastructure", [4, 5]),
    ]
    plex = page.groups[0].monitors[0]
    assert (plex.type, plex.url, plex.tags) == (
        "http",
        "http://plex.lan:32400/identity",
        {"env": "home"},
    )
    overseerr = page.groups[0].monitors[1]
    assert (overseerr.url, overseerr.cert_days_remaining, overseerr.cert_valid) == (None, 45, True)
    served.sim.state.add_incident("Disk full", "The NAS is out of space", style="danger")
    served.sim.state.add_incident("Slow downloads", "Investigating")
    [first, second] = (await kuma.status_page()).incidents
    assert (first.title, first.style, first.pinned, first.active) == (
        "Disk full",
        "danger",
        True,
        True,
    )
    assert second.title == "Slow downloads"
    assert first.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


async def test_v1_single_incident_becomes_a_list(serve: Serve, make: Make) -> None:
    served = await serve(1)
    kuma = await make(served.url)
    assert (await kuma.status_page()).incidents == []
    served.sim.state.add_incident("Old", "first")
    served.sim.state.add_incident("Maintenance tonight", "Plex restarts at 2am", style="info")
    [incident] = (await kuma.status_page()).incidents
    assert (incident.title, incident.content, incident.style) == (
        "Maintenance tonight",
        "Plex restarts at 2am",
        "info",
    )
    assert incident.created_at is not None
    assert incident.created_at.tzinfo == UTC


@pytest.mark.parametrize(("version", "count"), [(1, 50), (2, 100)])
async def test_heartbeats_are_utc_oldest_first(
    serve: Serve, make: Make, version: int, count: int
) -> None:
    kuma = await make((await serve(version)).url)
    beats = await kuma.heartbeats()
    assert sorted(beats) == [1, 2, 3, 4, 5]
    plex = beats[1]
    assert len(plex) == count
    assert plex[-1].time == datetime(2023, 11, 14, 22, 13, 3, 137000, tzinfo=UTC)
    assert plex[0].time < plex[-1].time
    assert all(b.time.tzinfo == UTC for b in plex)
    assert (plex[-1].status, plex[-1].status_code) == (HealthStatus.UP, 1)
    assert plex[-1].ping_ms is not None
    down = beats[5][-1]
    assert (down.status, down.status_code, down.ping_ms) == (HealthStatus.DOWN, 0, None)


async def test_uptime_is_a_ratio(serve: Serve, make: Make) -> None:
    kuma = await make((await serve(2)).url)
    uptime = await kuma.uptime()
    assert uptime[1] == 1.0
    assert uptime[5] == round(1430 / 1440, 4)
    assert all(0 <= ratio <= 1 for ratio in uptime.values())


async def test_monitors_join_page_beats_and_uptime(serve: Serve, make: Make) -> None:
    served = await serve(2)
    kuma = await make(served.url)
    served.sim.state.set_status(2, 3)
    served.sim.state.set_status(3, 7)
    by_id = {m.id: m for m in await kuma.monitors()}
    assert sorted(by_id) == [1, 2, 3, 4, 5]
    plex = by_id[1]
    assert (plex.name, plex.group, plex.type, plex.status) == (
        "Plex Media Server",
        "Media",
        "http",
        HealthStatus.UP,
    )
    assert plex.uptime_24h == 1.0
    assert plex.ping_ms is not None
    assert plex.last_beat_at == datetime(2023, 11, 14, 22, 13, 3, 137000, tzinfo=UTC)
    assert by_id[2].status is HealthStatus.MAINTENANCE
    assert by_id[3].status is HealthStatus.UNKNOWN
    assert (by_id[5].status, by_id[5].group) == (HealthStatus.DOWN, "Infrastructure")


async def test_metrics_with_basic_auth_v2(serve: Serve, make: Make) -> None:
    served = await serve(2)
    kuma = await make(served.url, username="admin", password=PASSWORD)
    by_id = {m.monitor_id: m for m in await kuma.metrics()}
    assert set(by_id) == {1, 2, 3, 4, 5}
    plex, overseerr, downloads = by_id[1], by_id[2], by_id[5]
    assert (plex.name, plex.type, plex.url, plex.hostname, plex.port) == (
        "Plex Media Server",
        "http",
        "http://plex.lan:32400/identity",
        None,
        None,
    )
    assert plex.tags == {"env": "home"}
    assert plex.status is HealthStatus.UP
    assert set(plex.uptime) == {"1d", "30d", "365d"}
    assert plex.uptime["1d"] == 1.0
    assert set(plex.avg_response_s) == {"1d", "30d", "365d"}
    assert (overseerr.cert_days_remaining, overseerr.cert_valid) == (45, True)
    assert (plex.cert_days_remaining, plex.cert_valid) == (None, None)
    assert (downloads.hostname, downloads.port, downloads.status) == (
        "downloads.lan",
        8080,
        HealthStatus.DOWN,
    )
    assert downloads.response_time_ms is None
    assert (await kuma.health()).version == "2.0.2"
    sent = served.sim.requests
    assert all(r.header("authorization") is None for r in sent if r.path != "/metrics")
    await kuma.status_page()
    assert served.sim.requests[-1].header("authorization") is None


async def test_metrics_v1_and_api_key(serve: Serve, make: Make) -> None:
    served = await serve(1, kuma_api_key="uk1_secret")
    kuma = await make(served.url, api_key="uk1_secret")
    metrics = await kuma.metrics()
    assert {m.name for m in metrics} == {
        "Plex Media Server",
        "Overseerr",
        "plex.tv",
        "NAS",
        "Downloads",
    }
    assert all(m.monitor_id is None and m.uptime == {} and m.tags == {} for m in metrics)


async def test_wrong_password_is_an_auth_error(serve: Serve, make: Make) -> None:
    served = await serve(2)
    kuma = await make(served.url, username="admin", password="wrong")
    with pytest.raises(errors.UpstreamAuthError) as caught:
        await kuma.metrics()
    assert caught.value.status == 401
    assert (await kuma.health()).status is HealthStatus.DEGRADED
    anonymous = await make(served.url)
    with pytest.raises(errors.UpstreamAuthError):
        await anonymous.metrics()
    assert (await anonymous.health()).status is HealthStatus.UP


async def test_unknown_slug_v2_is_not_found(serve: Serve, make: Make) -> None:
    kuma = await make((await serve(2)).url)
    with pytest.raises(errors.UpstreamNotFound) as caught:
        await kuma.status_page("nope")
    assert caught.value.status == 404
    assert await kuma.heartbeats("nope") == {}


@pytest.mark.parametrize(("version", "slug", "silent"), [(1, "nope", ()), (2, "quiet", ("quiet",))])
async def test_a_slug_that_never_answers_ends_in_a_timeout(
    serve: Serve, make: Make, version: int, slug: str, silent: tuple[str, ...]
) -> None:
    served = await serve(version, kuma_silent_slugs=silent)
    kuma = await make(served.url, policy=FAST)
    with pytest.raises((errors.TimeoutExceeded, errors.UpstreamTimeout)):
        await kuma.status_page(slug)
    health = await make(served.url, policy=FAST, options={"slug": slug})
    assert (await health.health()).status is HealthStatus.DOWN


async def test_disabled_timeouts_get_the_defaults(make: Make) -> None:
    kuma = await make("http://127.0.0.1:9", policy={"timeout": {"attempt": 0, "total": 0}})
    timeout, total = kuma.http.policy.timeout, kuma.http.policy.total_timeout
    assert timeout is not None
    assert total is not None


@pytest.mark.parametrize(
    ("route", "change", "call", "named"),
    [
        ("/api/status-page/home", lambda d: d.pop("config"), "status_page", "'config'"),
        ("/api/status-page/home", lambda d: d.pop("incidents"), "status_page", "'incidents'"),
        (
            "/api/status-page/home",
            lambda d: d["publicGroupList"][0]["monitorList"][0].pop("id"),
            "status_page",
            "'publicGroupList[0].monitorList[0].id'",
        ),
        (
            "/api/status-page/heartbeat/home",
            lambda d: d["heartbeatList"]["1"][0].pop("time"),
            "heartbeats",
            "'heartbeatList.1[0].time'",
        ),
        (
            "/api/status-page/heartbeat/home",
            lambda d: d["uptimeList"].update({"1_24": 99.5}),
            "heartbeats",
            "uptimeList.1_24",
        ),
    ],
)
async def test_answer_breaking_the_contract(
    serve: Serve, make: Make, route: str, change: Callable[[Any], None], call: str, named: str
) -> None:
    served = await serve(2, rewrite=(route, change))
    kuma = await make(served.url)
    with pytest.raises(errors.UpstreamContractError) as caught:
        await getattr(kuma, call)()
    assert named in str(caught.value)
