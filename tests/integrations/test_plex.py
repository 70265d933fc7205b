"""The Plex Media Server adapter against the Plex simulator, over real sockets."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from medianest import __version__, errors
from medianest.integrations.models import ExternalIds, HealthStatus, MediaType
from medianest.integrations.plex import PlexAdapter
from medianest.integrations.plexcommon import external_ids, parse_guid
from medianest.simulators.data import Catalogue
from medianest.simulators.plex_state import PMS_VERSION
from tests.integrations.conftest import IDENTIFICATION, PLEX_CLIENT_ID, PlexServed

TOKEN = "plex-owner-token"
SIZE = 40  # 36 movies (positions 0..35), 4 shows

Serve = Callable[..., Awaitable[PlexServed]]
Make = Callable[..., Awaitable[Any]]


@pytest.fixture
async def plex(plex_serve: Serve) -> PlexServed:
    return await plex_serve("plex", size=SIZE, sessions=3)


@pytest.fixture
async def adapter(plex: PlexServed, plex_adapter: Make) -> PlexAdapter:
    made = await plex_adapter("plex", plex.url, token=TOKEN)
    assert isinstance(made, PlexAdapter)
    return made


def catalogue() -> Catalogue:
    return Catalogue(1, SIZE)


def section_requests(plex: PlexServed, key: str = "1") -> list[Any]:
    return [r for r in plex.sim.requests if r.path == f"/library/sections/{key}/all"]


async def test_identity_needs_no_token(plex: PlexServed, plex_adapter: Make) -> None:
    adapter = await plex_adapter("plex", plex.url, token="wrong-token")
    found = await adapter.identity()
    assert found.version == PMS_VERSION
    assert found.machine_identifier == plex.sim.state.machine_identifier
    assert found.claimed is True
    assert plex.sim.requests[-1].header("X-Plex-Token") is None


async def test_libraries(adapter: PlexAdapter) -> None:
    sections = await adapter.libraries()
    assert [(s.key, s.title, s.type) for s in sections] == [
        ("1", "Movies", "movie"),
        ("2", "TV Shows", "show"),
        ("3", "Home Videos", "movie"),
    ]
    assert sections[0].agent == "tv.plex.agents.movie"
    assert sections[2].agent == "com.plexapp.agents.none"
    assert sections[0].updated_at is not None
    assert not sections[0].refreshing


async def test_paging_walks_every_page_including_a_short_last_one(
    plex: PlexServed, adapter: PlexAdapter
) -> None:
    whole = await adapter.items("1", limit=100)
    assert whole.total == 36
    assert len(whole.items) == 36
    walked = [item async for item in adapter.iter_items("1", page_size=7)]
    assert [i.rating_key for i in walked] == [i.rating_key for i in whole.items]
    starts = [r.header("X-Plex-Container-Start") for r in section_requests(plex)[1:]]
    assert starts == [str(n * 7) for n in range(math.ceil(36 / 7))]
    assert {r.header("X-Plex-Container-Size") for r in section_requests(plex)[1:]} == {"7"}

    last = await adapter.items("1", offset=35, limit=7)
    assert (last.offset, last.limit, last.total, len(last.items)) == (35, 7, 36, 1)
    assert last.items[0].rating_key == whole.items[-1].rating_key


async def test_short_pages_from_a_capping_server_do_not_end_the_walk(
    plex_serve: Serve, plex_adapter: Make
) -> None:
    plex = await plex_serve("plex", size=SIZE, max_page_size=5)
    adapter = await plex_adapter("plex", plex.url, token=TOKEN)
    first = await adapter.items("1", limit=7)
    assert len(first.items) == 5
    assert first.total == 36
    walked = [item.rating_key async for item in adapter.iter_items("1", page_size=7)]
    assert len(walked) == len(set(walked)) == 36
    assert len(section_requests(plex)) == 1 + math.ceil(36 / 5)


async def test_an_empty_section_has_no_metadata_key_and_no_items(
    plex: PlexServed, adapter: PlexAdapter
) -> None:
    page = await adapter.items("3")
    assert (page.items, page.total, page.offset) == ([], 0, 0)
    assert [item async for item in adapter.iter_items("3")] == []
    assert len(section_requests(plex, "3")) == 2


async def test_items_carry_ids_from_guid_array_and_from_legacy_guids(
    plex: PlexServed, adapter: PlexAdapter
) -> None:
    cat = catalogue()
    by_key = {cat.library("movie", p).rating_key: cat.library("movie", p) for p in range(36)}
    page = await adapter.items("1", limit=36, media_type=MediaType.MOVIE)
    query = dict(parse_qsl(section_requests(plex)[-1].query_string))
    assert query["includeGuids"] == "1"
    assert query["type"] == "1"
    legacy = 0
    for item in page.items:
        title = by_key[item.rating_key or ""]
        assert (item.type, item.title, item.year) == (MediaType.MOVIE, title.title, title.year)
        assert item.library_section == "1"
        assert item.poster
        assert item.poster.startswith(f"/library/metadata/{item.rating_key}/thumb")
        if not title.legacy_agent:
            assert item.ids == ExternalIds(tmdb=title.tmdb_id, imdb=title.imdb_id)
            continue
        legacy += 1
        if "themoviedb" in title.guid:
            assert item.ids == ExternalIds(tmdb=title.tmdb_id)
        else:
            assert item.ids == ExternalIds(imdb=title.imdb_id)
    assert legacy >= 2

    shows = await adapter.items("2", media_type=MediaType.TV)
    legacy_show = next(s for s in shows.items if s.rating_key == "34")
    assert legacy_show.type is MediaType.TV
    assert legacy_show.ids == ExternalIds(tvdb=70166)


@pytest.mark.parametrize(
    ("guid", "ids"),
    [
        ("com.plexapp.agents.imdb://tt0080339?lang=en", ExternalIds(imdb="tt0080339")),
        ("com.plexapp.agents.themoviedb://603?lang=en", ExternalIds(tmdb=603)),
        ("com.plexapp.agents.thetvdb://81189?lang=en", ExternalIds(tvdb=81189)),
        ("com.plexapp.agents.thetvdb://81189/1/3?lang=en", ExternalIds()),
        ("imdb://tt0133093", ExternalIds(imdb="tt0133093")),
        ("tmdb://603", ExternalIds(tmdb=603)),
        ("plex://movie/5d776825880197001ec967c8", ExternalIds()),
        ("local://42", ExternalIds()),
        ("com.plexapp.agents.none://abc", ExternalIds()),
        ("not a guid", ExternalIds()),
    ],
)
def test_guid_parsing(guid: str, ids: ExternalIds) -> None:
    assert external_ids(None, guid) == ids


def test_legacy_tv_guids_name_the_show_and_the_position() -> None:
    parsed = parse_guid("com.plexapp.agents.thetvdb://81189/1/3?lang=en")
    assert parsed is not None
    assert parsed.legacy
    assert (parsed.provider, parsed.id, parsed.season, parsed.episode) == ("tvdb", "81189", 1, 3)
    assert parsed.show_ids == ExternalIds(tvdb=81189)


def test_guid_array_wins_and_tolerates_junk() -> None:
    entries = [{"id": "imdb://tt0133093"}, {"id": "tmdb://603"}, "junk", {"id": 5}, {}]
    assert external_ids(entries, "plex://movie/x") == ExternalIds(tmdb=603, imdb="tt0133093")


async def test_updated_since_uses_the_after_operator_and_includes_the_cursor(
    plex: PlexServed, adapter: PlexAdapter
) -> None:
    cat = catalogue()
    movies = [cat.library("movie", p) for p in range(36)]
    cursor = movies[30].updated_at
    newer = {m.rating_key for m in movies if m.updated_at >= cursor}
    assert 0 < len(newer) < 36

    page = await adapter.items("1", limit=50, updated_since=cursor)
    assert {i.rating_key for i in page.items} == newer
    assert page.total == len(newer)
    raw = section_requests(plex)[-1].query_string
    assert f"updatedAt%3E%3E={cursor - 1}" in raw.split("&")
    walked = [i.rating_key async for i in adapter.iter_items("1", updated_since=cursor)]
    assert set(walked) == newer

    wrong_forms = ({"updatedAt>": cursor - 1}, {"updatedAt>>=": cursor - 1})
    for query in wrong_forms:  # ``updatedAt>=`` and requests' ``updatedAt>>==``: ignored by PMS
        response = await adapter.http.request(
            "GET",
            "/library/sections/{key}/all",
            path={"key": "1"},
            query=query,
            headers={"X-Plex-Token": TOKEN, "X-Plex-Container-Start": "0"},
        )
        assert response.json()["MediaContainer"]["totalSize"] == 36


async def test_bad_arguments_are_refused_before_any_request(
    plex: PlexServed, adapter: PlexAdapter
) -> None:
    with pytest.raises(errors.ValidationError, match="media type 'other'"):
        await adapter.items("1", media_type=MediaType.OTHER)
    with pytest.raises(errors.ValidationError, match="paging"):
        await adapter.items("1", offset=-1)
    with pytest.raises(errors.ValidationError, match="page_size"):
        await anext(adapter.iter_items("1", page_size=0))
    assert not plex.sim.requests


async def test_metadata_and_unknown_rating_key(adapter: PlexAdapter) -> None:
    item = await adapter.metadata("1")
    title = catalogue().library("movie", 0)
    assert item.title == title.title
    assert item.library_section == "1"
    assert item.ids == ExternalIds(tmdb=title.tmdb_id, imdb=title.imdb_id)
    assert item.summary
    assert item.added_at is not None
    assert item.updated_at is not None

    with pytest.raises(errors.UpstreamNotFound, match="ratingKey '999999'") as caught:
        await adapter.metadata("999999")
    assert caught.value.status == 404
    assert caught.value.service == "plex"


async def test_wrong_token_is_an_auth_error_not_a_decoding_error(
    plex: PlexServed, plex_adapter: Make
) -> None:
    adapter = await plex_adapter("plex", plex.url, token="not-the-token")
    with pytest.raises(errors.UpstreamAuthError) as caught:
        await adapter.libraries()
    assert caught.value.status == 401
    assert not isinstance(caught.value.__cause__, ValueError)
    health = await adapter.health()
    assert health.status is HealthStatus.DEGRADED
    assert "credentials" in (health.detail or "")


async def test_health_reports_the_version(adapter: PlexAdapter) -> None:
    health = await adapter.health()
    assert (health.status, health.version, health.kind) == (HealthStatus.UP, PMS_VERSION, "plex")


async def test_recently_added_lists_movies_and_seasons(
    plex: PlexServed, adapter: PlexAdapter
) -> None:
    page = await adapter.recently_added(limit=10)
    cat = catalogue()
    assert page.total == cat.movie_count + cat.season_total
    assert len(page.items) == 10
    assert {i.type for i in page.items} <= {MediaType.MOVIE, MediaType.SEASON}
    season = next(i for i in page.items if i.type is MediaType.SEASON)
    assert season.parent_title
    assert season.index
    assert season.library_section == "2"
    second = await adapter.recently_added(offset=10, limit=10)
    assert second.offset == 10
    assert not {i.rating_key for i in page.items} & {i.rating_key for i in second.items}


async def test_hub_search_finds_titles_with_ids(plex: PlexServed, adapter: PlexAdapter) -> None:
    wanted = catalogue().library("movie", 0)
    found = await adapter.search(wanted.title, limit=5)
    hit = next(i for i in found if i.rating_key == wanted.rating_key)
    assert hit.source == "plex"
    assert hit.type is MediaType.MOVIE
    assert (hit.title, hit.year, hit.library_section) == (wanted.title, wanted.year, "1")
    assert hit.ids == ExternalIds(tmdb=wanted.tmdb_id, imdb=wanted.imdb_id)
    assert hit.poster
    (hub,) = plex.sim.requests
    assert hub.path == "/hubs/search"
    assert "%20" in hub.query_string
    assert dict(parse_qsl(hub.query_string)) == {
        "query": wanted.title,
        "limit": "5",
        "includeGuids": "1",
    }

    shows = [i for i in await adapter.search("Anchor", limit=2) if i.type is MediaType.TV]
    assert len(shows) == 2
    assert all(i.ids.tvdb and i.library_section == "2" for i in shows)
    with pytest.raises(errors.ValidationError):
        await adapter.search("  ")


def ignoring_include_guids(app: Any) -> Any:
    """``app`` as a PMS whose hub search ignores ``includeGuids`` (older servers do)."""

    async def wrapper(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("path") == "/hubs/search":
            query = scope["query_string"].replace(b"&includeGuids=1", b"")
            scope = scope | {"query_string": query}
        await app(scope, receive, send)

    return wrapper


async def test_hub_search_reads_missing_ids_in_one_batch(
    plex_serve: Serve, plex_adapter: Make
) -> None:
    plex = await plex_serve("plex", size=SIZE)
    old = await plex_serve(ignoring_include_guids(plex.sim))
    adapter = await plex_adapter("plex", old.url, token=TOKEN)
    wanted = catalogue().library("movie", 0)
    found = await adapter.search(wanted.title, limit=5)
    hit = next(i for i in found if i.rating_key == wanted.rating_key)
    assert hit.ids == ExternalIds(tmdb=wanted.tmdb_id, imdb=wanted.imdb_id)
    assert all(i.ids.keys() for i in found)
    hub, detail = plex.sim.requests
    assert "includeGuids" not in hub.query_string
    assert detail.path.startswith("/library/metadata/")
    assert set(detail.path.rsplit("/", 1)[1].split(",")) == {i.rating_key for i in found}


async def test_sessions(adapter: PlexAdapter) -> None:
    sessions = await adapter.sessions()
    assert [s.session_key for s in sessions] == ["1", "2", "3"]
    assert [s.state for s in sessions] == ["playing", "paused", "buffering"]
    first = sessions[0]
    assert first.item.type is MediaType.EPISODE
    assert first.item.parent_title
    assert first.item.library_section == "2"  # sent as a string in sessions
    assert first.user == "owner"
    assert first.product == "Plex Web"
    assert first.local is True
    assert first.location == "lan"
    assert first.view_offset_ms
    assert first.duration_ms
    assert sessions[1].item.type is MediaType.MOVIE
    assert sessions[1].local is False


async def test_no_sessions(plex_serve: Serve, plex_adapter: Make) -> None:
    plex = await plex_serve("plex", size=SIZE, sessions=0)
    adapter = await plex_adapter("plex", plex.url, token=TOKEN)
    assert await adapter.sessions() == []


async def test_refresh_starts_a_scan(plex: PlexServed, adapter: PlexAdapter) -> None:
    await adapter.refresh("1", path="/data/movies/New (2024)", force=True)
    scan = plex.sim.state.scans[-1]
    assert (scan.section, scan.force, scan.path) == ("1", True, "/data/movies/New (2024)")
    assert (await adapter.libraries())[0].refreshing
    await adapter.refresh("2")
    assert (plex.sim.state.scans[-1].force, plex.sim.state.scans[-1].path) == (False, None)
    with pytest.raises(errors.UpstreamNotFound, match="section '77'"):
        await adapter.refresh("77")


async def test_every_request_asks_for_json_and_identifies_the_hub(
    plex: PlexServed, adapter: PlexAdapter
) -> None:
    await adapter.identity()
    await adapter.libraries()
    await adapter.items("1", limit=3)
    await adapter.metadata("2")
    await adapter.recently_added(limit=2)
    await adapter.search("Anchor")
    await adapter.sessions()
    await adapter.refresh("1")
    assert len(plex.sim.requests) == 8
    for request in plex.sim.requests:
        assert request.header("Accept") == "application/json", request.target
        for name in IDENTIFICATION:
            assert request.header(name), f"{name} missing from {request.target}"
        assert request.header("X-Plex-Client-Identifier") == PLEX_CLIENT_ID
        assert request.header("X-Plex-Product") == "MediaNest"
        assert request.header("X-Plex-Version") == __version__
        if request.path != "/identity":
            assert request.header("X-Plex-Token") == TOKEN


async def test_requests_match_the_spec(plex: PlexServed, adapter: PlexAdapter) -> None:
    from tests.simulators.spec import PLEX_LEGACY_SPEC, PLEX_SPEC, Contract

    await adapter.identity()
    await adapter.items("1", limit=3, media_type=MediaType.MOVIE, updated_since=1_420_000_000)
    await adapter.metadata("2")
    await adapter.search("Anchor", limit=4)
    await adapter.sessions()
    await adapter.libraries()
    await adapter.refresh("1", force=True)
    contract = Contract([PLEX_SPEC, PLEX_LEGACY_SPEC])
    for request in plex.sim.requests:
        contract.validate_recorded(request, base_url=plex.url)


def lenient_app() -> Starlette:
    """Answers that are odd but within the contract: missing arrays, ids as numbers."""

    async def no_directory(_: Request) -> Response:
        return JSONResponse({"MediaContainer": {"size": 0}})

    async def people_and_empty_hubs(_: Request) -> Response:
        hubs = [{"type": "actor", "Directory": [{"tag": "Someone"}]}, {"type": "movie", "size": 0}]
        return JSONResponse({"MediaContainer": {"size": 2, "Hub": hubs}})

    async def mixed_types(_: Request) -> Response:
        item = {
            "ratingKey": 42,
            "type": "episode",
            "title": "Pilot",
            "grandparentTitle": "A Show",
            "index": "1",
            "year": "1999",
            "addedAt": "1700000000",
            "librarySectionID": 2,
            "guid": "com.plexapp.agents.thetvdb://81189/1/1?lang=en",
        }
        body = {"MediaContainer": {"size": 1, "Metadata": [item]}}
        return JSONResponse(body, headers={"X-Plex-Container-Total-Size": "1"})

    return Starlette(
        routes=[
            Route("/library/sections", no_directory),
            Route("/hubs/search", people_and_empty_hubs),
            Route("/library/sections/{key}/all", mixed_types),
        ]
    )


async def test_missing_arrays_and_mixed_id_types_are_tolerated(
    plex_serve: Serve, plex_adapter: Make
) -> None:
    odd = await plex_serve(lenient_app())
    adapter = await plex_adapter("plex", odd.url, token=TOKEN)
    assert await adapter.libraries() == []
    assert await adapter.search("anything") == []
    page = await adapter.items("2")
    assert page.total == 1  # from the header when the body has no totalSize
    (item,) = page.items
    assert (item.rating_key, item.index, item.year, item.library_section) == ("42", 1, 1999, "2")
    assert item.type is MediaType.EPISODE
    assert item.parent_title == "A Show"
    assert item.added_at is not None
    assert item.ids == ExternalIds()  # a legacy episode guid names the show, not the episode
    assert [i.rating_key async for i in adapter.iter_items("2", page_size=10)] == ["42"]


def contract_breaking_app() -> Starlette:
    async def no_container(_: Request) -> Response:
        return JSONResponse({"size": 0})

    async def item_without_title(_: Request) -> Response:
        return JSONResponse(
            {"MediaContainer": {"size": 1, "Metadata": [{"ratingKey": 7, "type": "movie"}]}}
        )

    async def metadata_not_a_list(_: Request) -> Response:
        return JSONResponse({"MediaContainer": {"size": 1, "Metadata": {"ratingKey": "1"}}})

    async def xml(_: Request) -> Response:
        return Response('<MediaContainer size="0"/>', media_type="text/xml")

    async def identity_without_version(_: Request) -> Response:
        return JSONResponse({"MediaContainer": {"machineIdentifier": "abc", "claimed": True}})

    return Starlette(
        routes=[
            Route("/library/sections", no_container),
            Route("/library/sections/{key}/all", item_without_title),
            Route("/library/recentlyAdded", metadata_not_a_list),
            Route("/status/sessions", xml),
            Route("/identity", identity_without_version),
        ]
    )


async def test_contract_violations_name_what_is_missing(
    plex_serve: Serve, plex_adapter: Make
) -> None:
    broken = await plex_serve(contract_breaking_app())
    adapter = await plex_adapter("plex", broken.url, token=TOKEN)
    cases: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (adapter.libraries, "no MediaContainer"),
        (lambda: adapter.items("1"), "Metadata item '7' has no title"),
        (adapter.recently_added, "MediaContainer.Metadata is a dict, not an array"),
        (adapter.sessions, "not JSON"),
        (adapter.identity, "no version"),
    ]
    for call, message in cases:
        with pytest.raises(errors.UpstreamContractError, match=message) as caught:
            await call()
        assert caught.value.service == "plex"
        assert caught.value.status == 200


async def test_built_from_settings_with_a_stable_client_identifier(
    plex: PlexServed, plex_adapter: Make
) -> None:
    adapter = await plex_adapter(
        "plex", plex.url, token=TOKEN, client_identifier="persisted-id", device_name="Den"
    )
    await adapter.libraries()
    request = plex.sim.requests[-1]
    assert request.header("X-Plex-Client-Identifier") == "persisted-id"
    assert request.header("X-Plex-Device-Name") == "Den"
    assert TOKEN not in repr(adapter)
    with pytest.raises(errors.ConfigurationError, match="client identifier"):
        await plex_adapter("plex", plex.url, token=TOKEN, client_identifier="")
