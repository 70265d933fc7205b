"""Overseerr / Jellyseerr requests: create, list, approve, decline, delete, progress."""

from __future__ import annotations

import aiohttp
import pytest

from tests.simulators.conftest import running
from tests.simulators.helpers import (
    AS_FRIEND,
    FORBIDDEN,
    KEY,
    PARTIAL_SHOW,
    SIZE,
    extra_title,
    overseerr_call,
)
from tests.simulators.spec import Contract


async def test_request_create_duplicates_and_seasons(
    http: aiohttp.ClientSession, overseerr_contract: Contract
) -> None:
    async with running("overseerr", size=SIZE) as ov:
        url = f"{ov.url}/api/v1/request"
        movie = extra_title(ov, "movie")
        made = await overseerr_call(
            http,
            "POST",
            url,
            overseerr_contract,
            status=201,
            json={"mediaType": "movie", "mediaId": movie.tmdb_id},
        )
        assert made["status"] == 2
        assert made["media"]["status"] == 3
        assert made["type"] == "movie"
        assert "title" not in made
        assert made["requestedBy"]["id"] == 1
        again = await overseerr_call(
            http, "POST", url, status=409, json={"mediaType": "movie", "mediaId": movie.tmdb_id}
        )
        assert again == {"message": "Request for this media already exists."}
        owned = ov.state.catalogue.title(0)
        await overseerr_call(
            http, "POST", url, status=409, json={"mediaType": "movie", "mediaId": owned.tmdb_id}
        )

        show = ov.state.catalogue.title(PARTIAL_SHOW)
        missing = show.tmdb_season_count
        tv = await overseerr_call(
            http,
            "POST",
            url,
            overseerr_contract,
            status=201,
            json={"mediaType": "tv", "mediaId": show.tmdb_id, "seasons": "all"},
        )
        assert [s["seasonNumber"] for s in tv["seasons"]] == [missing]  # owned seasons are skipped
        none_left = await overseerr_call(
            http,
            "POST",
            url,
            status=202,
            json={"mediaType": "tv", "mediaId": show.tmdb_id, "seasons": [1, missing]},
        )
        assert none_left == {"message": "No seasons available to request"}
        unknown = await overseerr_call(
            http, "POST", url, status=500, json={"mediaType": "movie", "mediaId": 1}
        )
        assert "TMDB" in unknown["message"]
        invalid = await overseerr_call(
            http, "POST", url, status=400, json={"mediaId": movie.tmdb_id}
        )
        assert invalid["errors"][0]["path"] == ".body.mediaType"


async def test_pending_requests_are_approved_or_declined(
    http: aiohttp.ClientSession, overseerr_contract: Contract
) -> None:
    async with running("overseerr", size=SIZE) as ov:
        url = f"{ov.url}/api/v1/request"
        cat = ov.state.catalogue
        movies = [cat.title(u) for u in range(cat.size, cat.universe) if cat.kind_of(u) == "movie"][
            :2
        ]
        pending = [
            await overseerr_call(
                http,
                "POST",
                url,
                status=201,
                headers=AS_FRIEND,
                json={"mediaType": "movie", "mediaId": m.tmdb_id},
            )
            for m in movies
        ]
        assert [(p["status"], p["media"]["status"], p["modifiedBy"]) for p in pending] == [
            (1, 2, None)
        ] * 2
        denied = await overseerr_call(
            http, "POST", f"{url}/{pending[0]['id']}/approve", status=403, headers=AS_FRIEND
        )
        assert denied == FORBIDDEN
        approved = await overseerr_call(
            http, "POST", f"{url}/{pending[0]['id']}/approve", overseerr_contract
        )
        declined = await overseerr_call(
            http, "POST", f"{url}/{pending[1]['id']}/decline", overseerr_contract
        )
        assert (approved["status"], approved["media"]["status"], approved["modifiedBy"]["id"]) == (
            2,
            3,
            1,
        )
        assert (declined["status"], declined["media"]["status"]) == (3, 1)
        await overseerr_call(http, "POST", f"{url}/{pending[0]['id']}/retire", status=400)
        assert await overseerr_call(http, "POST", f"{url}/999/approve", status=404) == {
            "message": "Request not found."
        }
        own = await overseerr_call(http, "GET", url, headers=AS_FRIEND)
        assert {r["requestedBy"]["id"] for r in own["results"]} == {2}


async def test_request_list_paging_filters_and_sort(
    http: aiohttp.ClientSession, overseerr_contract: Contract
) -> None:
    async with running("overseerr", size=SIZE, request_available_after=None) as ov:
        url = f"{ov.url}/api/v1/request"
        cat = ov.state.catalogue
        movies = [cat.title(u) for u in range(cat.size, cat.universe) if cat.kind_of(u) == "movie"][
            :13
        ]
        for i, movie in enumerate(movies):
            headers = AS_FRIEND if i % 3 == 0 else KEY
            await overseerr_call(
                http,
                "POST",
                url,
                status=201,
                headers=headers,
                json={"mediaType": "movie", "mediaId": movie.tmdb_id},
            )
        first = await overseerr_call(http, "GET", url, overseerr_contract)
        last = await overseerr_call(http, "GET", f"{url}?take=5&skip=10", overseerr_contract)
        pending = await overseerr_call(
            http, "GET", f"{url}?filter=pending&take=50", overseerr_contract
        )
        modified = await overseerr_call(
            http, "GET", f"{url}?sort=modified&take=3", overseerr_contract
        )
        bad = await overseerr_call(http, "GET", f"{url}?filter=everything", status=400)
        no_direction = await overseerr_call(http, "GET", f"{url}?sortDirection=asc", status=400)
    assert first["pageInfo"] == {"pages": 2, "pageSize": 10, "results": 13, "page": 1}
    ids = [r["id"] for r in first["results"]]
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == 10
    assert last["pageInfo"] == {"pages": 3, "pageSize": 5, "results": 13, "page": 3}
    assert len(last["results"]) == 3
    assert {r["status"] for r in pending["results"]} == {1}
    assert pending["pageInfo"]["results"] == 5
    assert len(modified["results"]) == 3
    assert bad["errors"][0]["path"] == ".query.filter"
    assert no_direction["message"] == "Unknown query parameter 'sortDirection'"


@pytest.mark.parametrize(("flavour", "final_status"), [("overseerr", 2), ("jellyseerr", 5)])
async def test_status_progresses_to_available_by_polls(
    http: aiohttp.ClientSession, request: pytest.FixtureRequest, flavour: str, final_status: int
) -> None:
    contract: Contract = request.getfixturevalue(f"{flavour}_contract")
    async with running(flavour, size=SIZE, request_available_after=2) as ov:
        url = f"{ov.url}/api/v1/request"
        movie = extra_title(ov, "movie")
        made = await overseerr_call(
            http, "POST", url, status=201, json={"mediaType": "movie", "mediaId": movie.tmdb_id}
        )
        one = f"{url}/{made['id']}"
        polled = await overseerr_call(http, "GET", one, contract)
        assert polled["media"]["status"] == 3
        polled = await overseerr_call(http, "GET", one, contract)
        assert polled["media"]["status"] == 5
        assert polled["status"] == final_status
        assert polled["media"]["mediaAddedAt"] is not None
        available = await overseerr_call(http, "GET", f"{url}?filter=available", contract)
        assert [r["id"] for r in available["results"]] == [made["id"]]
        if flavour == "jellyseerr":
            asc = await overseerr_call(http, "GET", f"{url}?sortDirection=asc", contract)
            assert asc["pageInfo"]["results"] == 1


async def test_delete_request(http: aiohttp.ClientSession) -> None:
    async with running("overseerr", size=SIZE) as ov:
        url = f"{ov.url}/api/v1/request"
        movie = extra_title(ov, "movie")
        made = await overseerr_call(
            http, "POST", url, status=201, json={"mediaType": "movie", "mediaId": movie.tmdb_id}
        )
        await overseerr_call(http, "DELETE", f"{url}/{made['id']}", status=204)
        assert await overseerr_call(http, "GET", f"{url}/{made['id']}", status=404) == {
            "message": "Request not found."
        }
        await overseerr_call(http, "DELETE", f"{url}/{made['id']}", status=404)
        again = await overseerr_call(
            http, "POST", url, status=201, json={"mediaType": "movie", "mediaId": movie.tmdb_id}
        )
    assert again["id"] != made["id"]


async def test_request_count(http: aiohttp.ClientSession) -> None:
    async with running("overseerr", size=SIZE) as ov:
        movie = extra_title(ov, "movie")
        await overseerr_call(
            http,
            "POST",
            f"{ov.url}/api/v1/request",
            status=201,
            json={"mediaType": "movie", "mediaId": movie.tmdb_id},
        )
        counts = await overseerr_call(http, "GET", f"{ov.url}/api/v1/request/count")
    assert counts["total"] == counts["movie"] == counts["approved"] == counts["processing"] == 1
