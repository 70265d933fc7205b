"""The Overseerr / Jellyseerr simulator against NOTES.md section 3 and both specs."""

from __future__ import annotations

import aiohttp
import pytest

from tests.simulators.conftest import running
from tests.simulators.helpers import FORBIDDEN, PARTIAL_SHOW, SIZE, extra_title, overseerr_call
from tests.simulators.spec import Contract


@pytest.mark.parametrize(("flavour", "version"), [("overseerr", "1.33.2"), ("jellyseerr", "2.3.0")])
async def test_status_is_public_and_names_the_flavour(
    http: aiohttp.ClientSession, request: pytest.FixtureRequest, flavour: str, version: str
) -> None:
    contract: Contract = request.getfixturevalue(f"{flavour}_contract")
    async with running(flavour) as ov:
        body = await overseerr_call(http, "GET", f"{ov.url}/api/v1/status", contract, headers={})
    assert body["version"] == version
    assert body["updateAvailable"] is False


@pytest.mark.parametrize("key", [None, "wrong"])
async def test_missing_or_wrong_api_key_is_403(
    http: aiohttp.ClientSession, key: str | None
) -> None:
    headers = {"X-Api-Key": key} if key else {"Accept": "application/json"}
    async with running("overseerr", size=SIZE) as ov:
        for path in (
            "/api/v1/request",
            "/api/v1/search?query=a",
            "/api/v1/media",
            "/api/v1/auth/me",
        ):
            body = await overseerr_call(http, "GET", ov.url + path, status=403, headers=headers)
            assert body == FORBIDDEN


async def test_search_needs_percent_twenty(
    http: aiohttp.ClientSession, overseerr_contract: Contract
) -> None:
    message = (
        "Parameter 'query' must be url encoded. Its value may not contain reserved characters."
    )
    async with running("overseerr", size=SIZE) as ov:
        words = ov.state.catalogue.title(0).title_sort.split()[:2]
        good = await overseerr_call(
            http,
            "GET",
            f"{ov.url}/api/v1/search?query={'%20'.join(words)}&page=1",
            overseerr_contract,
        )
        for raw in ("+".join(words), "it's", "tmdb:603", "wow!"):
            body = await overseerr_call(
                http, "GET", f"{ov.url}/api/v1/search?query={raw}", status=400
            )
            assert body == {
                "message": message,
                "errors": [{"path": ".query.query", "message": message}],
            }
        unknown = await overseerr_call(
            http, "GET", f"{ov.url}/api/v1/search?query=a&foo=1", status=400
        )
        missing = await overseerr_call(http, "GET", f"{ov.url}/api/v1/search", status=400)
    assert good["page"] == 1
    assert good["totalResults"] >= 1
    assert any(r.get("title") == ov.state.catalogue.title(0).title for r in good["results"])
    assert unknown["message"] == "Unknown query parameter 'foo'"
    assert unknown["errors"][0]["path"] == ".query.foo"
    assert "query" in missing["message"]


async def test_search_pages_and_media_info(
    http: aiohttp.ClientSession, overseerr_contract: Contract
) -> None:
    async with running("overseerr", size=SIZE) as ov:
        cat = ov.state.catalogue
        wanted = extra_title(ov, "movie")
        library = cat.title(0)
        by_id = await overseerr_call(
            http, "GET", f"{ov.url}/api/v1/search?query=tmdb%3A{wanted.tmdb_id}", overseerr_contract
        )
        imdb = await overseerr_call(
            http,
            "GET",
            f"{ov.url}/api/v1/search?query=imdb%3A{library.imdb_id}",
            overseerr_contract,
        )
        everything = await overseerr_call(
            http, "GET", f"{ov.url}/api/v1/search?query=e&page=2", overseerr_contract
        )
    [hit] = by_id["results"]
    assert hit["id"] == wanted.tmdb_id
    assert hit["mediaType"] == "movie"
    assert "mediaInfo" not in hit  # absent, not null, for an untracked title
    [known] = imdb["results"]
    assert known["mediaInfo"]["status"] == 5
    assert known["mediaInfo"]["ratingKey"] == library.rating_key
    assert everything["page"] == 2
    assert len(everything["results"]) <= 20
    assert everything["totalPages"] == -(-everything["totalResults"] // 20)


async def test_details_and_unknown_ids(
    http: aiohttp.ClientSession, overseerr_contract: Contract
) -> None:
    async with running("overseerr", size=SIZE) as ov:
        cat = ov.state.catalogue
        movie = await overseerr_call(
            http, "GET", f"{ov.url}/api/v1/movie/{cat.title(0).tmdb_id}", overseerr_contract
        )
        partial = cat.title(PARTIAL_SHOW)
        show = await overseerr_call(
            http, "GET", f"{ov.url}/api/v1/tv/{partial.tmdb_id}", overseerr_contract
        )
        lost = await overseerr_call(http, "GET", f"{ov.url}/api/v1/movie/1", status=500)
        lost_tv = await overseerr_call(
            http, "GET", f"{ov.url}/api/v1/tv/{cat.title(0).tmdb_id}", status=500
        )
        bad = await overseerr_call(http, "GET", f"{ov.url}/api/v1/movie/abc", status=400)
    assert movie["imdbId"] == cat.title(0).imdb_id
    assert movie["mediaInfo"]["status"] == 5
    assert show["numberOfSeasons"] == partial.tmdb_season_count == partial.season_count + 1
    assert show["externalIds"]["tvdbId"] == partial.tvdb_id
    assert show["mediaInfo"]["status"] == 4  # PARTIALLY_AVAILABLE
    assert lost == {"message": "Unable to retrieve movie."}
    assert lost_tv == {"message": "Unable to retrieve series."}
    assert bad["errors"][0]["path"] == ".params.movieId"


async def test_media_listing(
    http: aiohttp.ClientSession, overseerr_contract: Contract, jellyseerr_contract: Contract
) -> None:
    async with running("overseerr", size=SIZE) as ov:
        url = f"{ov.url}/api/v1/media"
        first = await overseerr_call(http, "GET", url, overseerr_contract)
        partial = await overseerr_call(
            http, "GET", f"{url}?filter=partial&take=50", overseerr_contract
        )
        movie = extra_title(ov, "movie")
        await overseerr_call(
            http,
            "POST",
            f"{ov.url}/api/v1/request",
            status=201,
            json={"mediaType": "movie", "mediaId": movie.tmdb_id},
        )
        processing = await overseerr_call(
            http, "GET", f"{url}?filter=processing&sort=modified", overseerr_contract
        )
    assert first["pageInfo"]["pageSize"] == 20
    assert first["pageInfo"]["results"] == SIZE
    assert len(first["results"]) == 20
    assert partial["results"]
    assert {m["status"] for m in partial["results"]} == {4}
    assert [m["tmdbId"] for m in processing["results"]] == [movie.tmdb_id]
    async with running("jellyseerr", size=SIZE) as js:
        blocked = await overseerr_call(
            http, "GET", f"{js.url}/api/v1/media?take=1", jellyseerr_contract
        )
    assert blocked["results"][0]["status"] == 6  # Jellyseerr's BLACKLISTED
    assert blocked["pageInfo"]["results"] == SIZE + 1
