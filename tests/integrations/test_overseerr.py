"""The Overseerr / Jellyseerr adapter against the simulators, over real sockets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from yarl import URL

from medianest import errors
from medianest.config import UpstreamSettings
from medianest.integrations.models import HealthStatus, MediaType, RequestStatus
from medianest.integrations.overseerr import NoSeasonsToRequest, OverseerrAdapter, RequestExists
from medianest.integrations.overseerr_parse import Flavour
from medianest.integrations.registry import build_adapter
from medianest.simulators import FaultRule, SimulatorApp, SimulatorOptions, build_simulator
from medianest.simulators.catalogue_items import Title
from tests.integrations.json_rewrite import rewrite_json
from tests.simulators.spec import JELLYSEERR_SPEC, OVERSEERR_SPEC, Contract
from tests.support.servers import serve_asgi

KEY = "overseerr-api-key"
SIZE = 40  # library uids 0..39 (uid % 10 == 3 is a show), TMDB-only extras 40..59


class Served:
    def __init__(self, app: Any, url: str, sim: SimulatorApp[Any]) -> None:
        self.app, self.url, self.sim = app, url, sim

    def title(self, uid: int) -> Title:
        found: Title = self.sim.state.catalogue.title(uid)
        return found

    def recorded(self, method: str, path: str) -> list[Any]:
        return [r for r in self.sim.requests if r.method == method and r.path == path]


Serve = Callable[..., Awaitable[Served]]
Make = Callable[..., Awaitable[OverseerrAdapter]]


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as exits:
        yield exits


@pytest.fixture
def serve(stack: contextlib.AsyncExitStack) -> Serve:
    """``await serve("jellyseerr", rewrite=(glob, change))``: a simulator on a real socket."""

    async def start(
        name: str = "overseerr", rewrite: tuple[str, Any] | None = None, **options: Any
    ) -> Served:
        sim = build_simulator(name, SimulatorOptions(size=SIZE, **options))
        app = rewrite_json(sim, *rewrite) if rewrite else sim
        running = await stack.enter_async_context(serve_asgi(app, lifespan="off"))
        return Served(app, running.url, sim)

    return start


@pytest.fixture
def make(stack: contextlib.AsyncExitStack) -> Make:
    """A started adapter built the way the hub builds it; retries off unless a policy says."""

    async def build(
        url: str, *, kind: str = "overseerr", api_key: str = KEY, policy: Any = None, **opts: Any
    ) -> OverseerrAdapter:
        upstream = UpstreamSettings.model_validate(
            {
                "url": url,
                "api_key": api_key,
                "options": opts,
                "policy": policy or {"retry": {"enabled": False}},
            }
        )
        adapter = build_adapter("requests", kind, upstream, registry=CollectorRegistry())
        assert isinstance(adapter, OverseerrAdapter)
        await stack.enter_async_context(adapter)
        return adapter

    return build


@pytest.fixture
async def ov(serve: Serve) -> Served:
    return await serve("overseerr")


@pytest.fixture
async def adapter(ov: Served, make: Make) -> OverseerrAdapter:
    return await make(ov.url)


async def raw_get(url: str) -> int:
    async with (
        aiohttp.ClientSession(headers={"X-Api-Key": KEY}) as session,
        session.get(URL(url, encoded=True)) as response,
    ):
        return response.status


async def test_search_sends_percent_twenty_where_plus_is_refused(
    ov: Served, adapter: OverseerrAdapter
) -> None:
    page = await adapter.search("of the")
    assert (page.page, page.total_pages, page.total_results) == (1, 1, 20)
    assert len(page.items) == 20
    assert {item.type for item in page.items} == {MediaType.MOVIE, MediaType.TV}
    sent = ov.recorded("GET", "/api/v1/search")[-1]
    assert sent.query_string == "query=of%20the&page=1"
    Contract([OVERSEERR_SPEC]).validate_recorded(sent, ov.url)
    assert await raw_get(f"{ov.url}/api/v1/search?query=of+the") == 400
    assert await raw_get(f"{ov.url}/api/v1/search?query=of%20the") == 200


async def test_reserved_characters_are_encoded(ov: Served, adapter: OverseerrAdapter) -> None:
    wanted = ov.title(41)
    found = await adapter.search_items(f"tmdb:{wanted.tmdb_id}")
    assert [(i.title, i.ids.tmdb) for i in found] == [(wanted.title, wanted.tmdb_id)]
    assert ov.recorded("GET", "/api/v1/search")[-1].query_string.startswith("query=tmdb%3A")
    assert await raw_get(f"{ov.url}/api/v1/search?query=tmdb:{wanted.tmdb_id}") == 400
    odd = await adapter.search("Rock & Roll's! (live) 100% #1 +more")
    assert odd.total_results == 0
    assert await raw_get(f"{ov.url}/api/v1/search?query=Rock%20&%20Roll's") == 400


async def test_search_items_are_normalized(ov: Served, adapter: OverseerrAdapter) -> None:
    movie, show, extra = ov.title(0), ov.title(3), ov.title(40)
    [in_library] = await adapter.search_items(f"tmdb:{movie.tmdb_id}")
    assert in_library.source == "requests"
    assert (in_library.type, in_library.title, in_library.year) == (
        MediaType.MOVIE,
        movie.title,
        movie.year,
    )
    assert in_library.ids.tmdb == movie.tmdb_id
    assert in_library.ids.imdb == movie.imdb_id
    assert (in_library.media_status, in_library.media_status_code) == ("available", 5)
    assert in_library.poster
    assert in_library.poster.startswith("/p")
    assert in_library.summary == movie.summary
    [series] = await adapter.search_items(f"tvdb:{show.tvdb_id}")
    assert series.type is MediaType.TV
    assert series.ids.tvdb == show.tvdb_id
    [untracked] = await adapter.search_items(f"tmdb:{extra.tmdb_id}")
    assert untracked.media_status is None
    assert untracked.media_status_code is None


async def test_wrong_key_is_an_auth_error(ov: Served, make: Make) -> None:
    wrong = await make(ov.url, api_key="not-the-key")
    with pytest.raises(errors.UpstreamAuthError) as caught:
        await wrong.search("of the")
    assert caught.value.status == 403
    health = await wrong.health()
    assert health.status is HealthStatus.DEGRADED


async def test_health_reports_the_version(adapter: OverseerrAdapter) -> None:
    health = await adapter.health()
    assert (health.status, health.version, health.kind) == (HealthStatus.UP, "1.33.2", "overseerr")


async def test_details_and_unknown_tmdb_ids(ov: Served, adapter: OverseerrAdapter) -> None:
    movie, show = ov.title(0), ov.title(3)
    found = await adapter.movie(movie.tmdb_id)
    assert (found.title, found.ids.imdb, found.media_status) == (
        movie.title,
        movie.imdb_id,
        "available",
    )
    series = await adapter.tv(show.tmdb_id)
    assert (series.ids.tvdb, series.ids.imdb) == (show.tvdb_id, show.imdb_id)
    with pytest.raises(errors.UpstreamNotFound) as caught:
        await adapter.movie(1)
    assert caught.value.status == 500
    with pytest.raises(errors.UpstreamNotFound):
        await adapter.tv(movie.tmdb_id)


async def test_create_movie_and_tv_is_auto_approved(ov: Served, adapter: OverseerrAdapter) -> None:
    movie, show = ov.title(40), ov.title(41)
    created = await adapter.create_request(MediaType.MOVIE, movie.tmdb_id)
    assert (created.status, created.status_code, created.type) == (
        RequestStatus.APPROVED,
        2,
        MediaType.MOVIE,
    )
    assert created.ids.tmdb == movie.tmdb_id
    assert created.ids.imdb == movie.imdb_id
    assert (created.requested_by, created.requested_by_id) == ("owner", 1)
    assert created.media_status == "processing"
    assert created.created_at is not None
    assert created.created_at.tzinfo == UTC
    series = await adapter.create_request(MediaType.TV, show.tmdb_id, seasons=[1, 2])
    assert (series.type, series.seasons, series.ids.tvdb) == (MediaType.TV, [1, 2], show.tvdb_id)
    contract = Contract([OVERSEERR_SPEC])
    for sent in ov.recorded("POST", "/api/v1/request"):
        contract.validate_recorded(sent, ov.url)


async def test_duplicates_raise_clear_errors(ov: Served, adapter: OverseerrAdapter) -> None:
    movie, show = ov.title(40), ov.title(41)
    await adapter.create_request(MediaType.MOVIE, movie.tmdb_id)
    with pytest.raises(RequestExists) as caught:
        await adapter.create_request(MediaType.MOVIE, movie.tmdb_id)
    assert caught.value.status == 409
    assert "already exists" in str(caught.value)
    await adapter.create_request(MediaType.TV, show.tmdb_id, seasons="all")
    with pytest.raises(NoSeasonsToRequest) as no_seasons:
        await adapter.create_request(MediaType.TV, show.tmdb_id, seasons=[1])
    assert no_seasons.value.status == 202
    assert "No seasons" in str(no_seasons.value)
    with pytest.raises(errors.ValidationError):
        await adapter.create_request(MediaType.MOVIE, movie.tmdb_id, seasons=[1])


async def test_create_is_never_retried(ov: Served, make: Make) -> None:
    retrying = await make(ov.url, policy={"retry": {"max_attempts": 3, "base_delay": 0}})
    ov.sim.faults.set([FaultRule(kind="error", route="/api/v1/request", method="POST", times=1)])
    with pytest.raises(errors.UpstreamUnavailable):
        await retrying.create_request(MediaType.MOVIE, ov.title(40).tmdb_id)
    assert len(ov.recorded("POST", "/api/v1/request")) == 1
    ov.sim.faults.set([FaultRule(kind="error", route="/api/v1/request", method="GET", times=1)])
    assert (await retrying.requests()).total == 0
    assert len(ov.recorded("GET", "/api/v1/request")) == 2


async def test_request_list_paging(ov: Served, adapter: OverseerrAdapter) -> None:
    for uid in (40, 42, 43):
        await adapter.create_request(MediaType.MOVIE, ov.title(uid).tmdb_id)
    first = await adapter.requests(take=2)
    assert (first.total, first.offset, first.limit) == (3, 0, 2)
    assert [r.id for r in first.items] == [3, 2]
    rest = await adapter.requests(take=2, skip=2)
    assert [r.id for r in rest.items] == [1]
    assert rest.total == 3
    assert (await adapter.requests(filter="pending")).total == 0
    approved = await adapter.requests(filter="approved", sort="modified", requested_by=1)
    assert approved.total == 3
    queries = [r.query_string for r in ov.recorded("GET", "/api/v1/request")]
    assert queries[:2] == ["take=2&skip=0", "take=2&skip=2"]
    assert "sortDirection" not in "".join(queries)
    contract = Contract([OVERSEERR_SPEC])
    for sent in ov.recorded("GET", "/api/v1/request"):
        contract.validate_recorded(sent, ov.url)
    with pytest.raises(errors.ValidationError):
        await adapter.requests(sort_direction="asc")
    assert (await adapter.requests(sort_direction="desc")).total == 3


async def test_approve_decline_delete(ov: Served, adapter: OverseerrAdapter) -> None:
    ids = []
    async with aiohttp.ClientSession(headers={"X-Api-Key": KEY, "X-API-User": "2"}) as friend:
        for uid in (40, 42):
            body = {"mediaType": "movie", "mediaId": ov.title(uid).tmdb_id}
            async with friend.post(f"{ov.url}/api/v1/request", json=body) as response:
                assert response.status == 201
                ids.append((await response.json())["id"])
    pending = await adapter.request(ids[0])
    assert (pending.status, pending.requested_by_id) == (RequestStatus.PENDING, 2)
    assert (await adapter.approve(ids[0])).status is RequestStatus.APPROVED
    assert (await adapter.approve(ids[0])).status is RequestStatus.APPROVED
    declined = await adapter.decline(ids[1])
    assert (declined.status, declined.media_status) == (RequestStatus.DECLINED, "unknown")
    await adapter.delete_request(ids[1])
    with pytest.raises(errors.UpstreamNotFound):
        await adapter.request(ids[1])
    with pytest.raises(errors.UpstreamNotFound):
        await adapter.delete_request(ids[1])
    await adapter.delete_request(ids[1], missing_ok=True)
    with pytest.raises(errors.UpstreamNotFound):
        await adapter.approve(999)


async def test_find_request_before_and_after_create(ov: Served, adapter: OverseerrAdapter) -> None:
    movie, show = ov.title(40), ov.title(41)
    assert await adapter.find_request(MediaType.MOVIE, movie.tmdb_id) is None
    created = await adapter.create_request(MediaType.MOVIE, movie.tmdb_id)
    found = await adapter.find_request(MediaType.MOVIE, movie.tmdb_id)
    assert found is not None
    assert found.id == created.id
    assert found.ids.tmdb == movie.tmdb_id
    assert found.ids.imdb == movie.imdb_id
    assert await adapter.find_request(MediaType.MOVIE, movie.tmdb_id, is_4k=True) is None
    await adapter.decline(created.id)
    assert await adapter.find_request(MediaType.MOVIE, movie.tmdb_id) is None
    again = await adapter.find_request(MediaType.MOVIE, movie.tmdb_id, include_declined=True)
    assert again is not None
    assert again.status is RequestStatus.DECLINED
    first = await adapter.create_request(MediaType.TV, show.tmdb_id, seasons=[1])
    second = await adapter.create_request(MediaType.TV, show.tmdb_id, seasons=[2])
    newest = await adapter.find_request(MediaType.TV, show.tmdb_id)
    assert newest is not None
    assert newest.id == second.id != first.id
    assert newest.seasons == [2]
    assert newest.ids.tvdb == show.tvdb_id
    with pytest.raises(errors.UpstreamNotFound):
        await adapter.find_request(MediaType.MOVIE, 1)


async def test_find_request_pages_the_list_when_details_omit_requests(
    serve: Serve, make: Make
) -> None:
    def drop_requests(data: Any) -> None:
        data.get("mediaInfo", {}).pop("requests", None)

    served = await serve("overseerr", rewrite=("/api/v1/movie/*", drop_requests))
    adapter = await make(served.url)
    movie = served.title(40)
    created = await adapter.create_request(MediaType.MOVIE, movie.tmdb_id)
    await adapter.create_request(MediaType.MOVIE, served.title(42).tmdb_id)
    found = await adapter.find_request(MediaType.MOVIE, movie.tmdb_id)
    assert found is not None
    assert found.id == created.id
    assert served.recorded("GET", "/api/v1/request")


async def test_media_listing(ov: Served, adapter: OverseerrAdapter) -> None:
    page = await adapter.media(take=5)
    assert (page.total, len(page.items), page.limit) == (SIZE, 5, 5)
    first = page.items[0]
    assert first.status in ("available", "partially_available")
    assert first.ids.tmdb
    shows = [m for m in (await adapter.media(take=40)).items if m.type is MediaType.TV]
    assert shows
    assert all(s.seasons for s in shows)
    partial = await adapter.media(filter="partial", sort="modified")
    assert partial.items
    assert {m.status_code for m in partial.items} == {4}


async def test_jellyseerr_flavour_detected_and_fork_values_kept(serve: Serve, make: Make) -> None:
    jelly = await serve("jellyseerr", request_available_after=1)
    adapter = await make(jelly.url)
    assert await adapter.flavour() is Flavour.JELLYSEERR
    status = await adapter.status()
    assert (status.version, status.flavour) == ("2.3.0", Flavour.JELLYSEERR)
    [blocked] = await adapter.search_items(f"tmdb:{jelly.title(SIZE).tmdb_id}")
    assert (blocked.media_status, blocked.media_status_code) == ("blacklisted", 6)
    created = await adapter.create_request(MediaType.MOVIE, jelly.title(42).tmdb_id)
    done = await adapter.request(created.id)
    assert (done.status, done.status_code, done.media_status) == (
        RequestStatus.COMPLETED,
        5,
        "available",
    )
    oldest = await adapter.requests(sort_direction="asc")
    assert oldest.items[0].id == created.id
    sent = jelly.recorded("GET", "/api/v1/request")[-1]
    assert "sortDirection=asc" in sent.query_string
    Contract([JELLYSEERR_SPEC]).validate_recorded(sent, jelly.url)


async def test_flavour_from_configuration_needs_no_call(serve: Serve, make: Make) -> None:
    jelly = await serve("jellyseerr")
    by_kind = await make(jelly.url, kind="jellyseerr")
    assert by_kind.kind == "jellyseerr"
    assert await by_kind.flavour() is Flavour.JELLYSEERR
    by_option = await make(jelly.url, flavour="overseerr")
    assert await by_option.flavour() is Flavour.OVERSEERR
    assert not jelly.recorded("GET", "/api/v1/status")
    with pytest.raises(errors.ConfigurationError):
        await make(jelly.url, flavour="emby")


async def test_unknown_status_values_are_kept(serve: Serve, make: Make) -> None:
    def future_values(data: Any) -> None:
        data["status"] = 9
        data["media"]["status"] = 42

    served = await serve("overseerr", rewrite=("/api/v1/request/*", future_values))
    adapter = await make(served.url)
    created = await adapter.create_request(MediaType.MOVIE, served.title(40).tmdb_id)
    seen = await adapter.request(created.id)
    assert (seen.status, seen.status_code, seen.media_status) == (
        RequestStatus.UNKNOWN,
        9,
        "unknown_42",
    )


@pytest.mark.parametrize(
    ("route", "field", "change"),
    [
        ("/api/v1/request/*", "status", lambda d: d.pop("status")),
        ("/api/v1/request/*", "requestedBy.id", lambda d: d["requestedBy"].update(id="one")),
        ("/api/v1/request", "pageInfo", lambda d: d.pop("pageInfo", None)),
        ("/api/v1/status", "version", lambda d: d.pop("version")),
        ("/api/v1/search", "results[0].id", lambda d: d["results"][0].pop("id")),
    ],
)
async def test_answer_missing_a_required_field(
    serve: Serve, make: Make, route: str, field: str, change: Callable[[Any], None]
) -> None:
    served = await serve("overseerr", rewrite=(route, change))
    adapter = await make(served.url)
    if route.startswith("/api/v1/request"):
        await adapter.create_request(MediaType.MOVIE, served.title(40).tmdb_id)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "/api/v1/request/*": lambda: adapter.request(1),
        "/api/v1/request": adapter.requests,
        "/api/v1/status": adapter.status,
        "/api/v1/search": lambda: adapter.search("of the"),
    }
    with pytest.raises(errors.UpstreamContractError) as caught:
        await calls[route]()
    assert f"'{field}'" in str(caught.value)
    assert caught.value.service == "requests"
