"""The Plex Media Server simulator against NOTES.md section 1 and the Plex specs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import aiohttp
import pytest

from medianest.simulators import ManualClock
from tests.simulators.conftest import running
from tests.simulators.helpers import PLEX_HEADERS, TOKEN, plex_get
from tests.simulators.spec import Contract


async def test_identity_needs_no_token_and_speaks_xml_by_default(
    http: aiohttp.ClientSession, plex_contract: Contract
) -> None:
    async with running("plex", size=30) as plex:
        async with http.get(f"{plex.url}/identity", headers={"Accept": "application/json"}) as r:
            body = await plex_contract.check(r)
        container = body["MediaContainer"]
        assert container["size"] == 0
        assert container["machineIdentifier"] == plex.app.state.machine_identifier
        async with http.get(f"{plex.url}/identity") as r:
            assert r.content_type == "text/xml"
            root = ET.fromstring(await r.text())
        assert root.tag == "MediaContainer"
        assert root.get("machineIdentifier") == container["machineIdentifier"]
        assert root.get("claimed") == "1"


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_missing_or_wrong_token_is_a_small_html_401_even_for_json(
    http: aiohttp.ClientSession, token: str | None
) -> None:
    headers = {"Accept": "application/json"}
    if token:
        headers["X-Plex-Token"] = token
    async with running("plex", size=30) as plex:
        for path in ("/", "/library/sections", "/library/sections/1/all", "/status/sessions"):
            async with http.get(plex.url + path, headers=headers) as r:
                assert r.status == 401
                assert r.content_type == "text/html"
                assert "<h1>401 Unauthorized</h1>" in await r.text()


async def test_token_may_be_a_query_parameter(http: aiohttp.ClientSession) -> None:
    async with running("plex", size=30) as plex:
        url = f"{plex.url}/library/sections?X-Plex-Token={TOKEN}"
        async with http.get(url, headers={"Accept": "application/json"}) as r:
            assert r.status == 200


async def test_sections_listed_at_both_paths_with_an_empty_one(
    http: aiohttp.ClientSession, plex_contract: Contract
) -> None:
    async with running("plex", size=30) as plex:
        legacy = await plex_get(http, f"{plex.url}/library/sections", plex_contract)
        current = await plex_get(http, f"{plex.url}/library/sections/all", plex_contract)
    assert legacy == current
    directories = legacy["MediaContainer"]["Directory"]
    assert [d["key"] for d in directories] == ["1", "2", "3"]
    assert {d["type"] for d in directories} == {"movie", "show"}
    assert all(isinstance(d["key"], str) and isinstance(d["updatedAt"], int) for d in directories)


async def test_metadata_children_and_unknown_keys(
    http: aiohttp.ClientSession, plex_contract: Contract
) -> None:
    async with running("plex", size=40) as plex:
        one = await plex_get(http, f"{plex.url}/library/metadata/1", plex_contract)
        two = await plex_get(http, f"{plex.url}/library/metadata/1,2,999999", plex_contract)
        seasons = await plex_get(http, f"{plex.url}/library/metadata/4/children", plex_contract)
        season_key = seasons["MediaContainer"]["Metadata"][0]["ratingKey"]
        episodes = await plex_get(
            http, f"{plex.url}/library/metadata/{season_key}/children", plex_contract
        )
        episode = episodes["MediaContainer"]["Metadata"][0]
        again = await plex_get(
            http, f"{plex.url}/library/metadata/{episode['ratingKey']}", plex_contract
        )
        async with http.get(f"{plex.url}/library/metadata/999999", headers=PLEX_HEADERS) as r:
            assert r.status == 404
            assert r.content_type == "text/html"
    item = one["MediaContainer"]["Metadata"][0]
    assert item["ratingKey"] == "1"
    assert isinstance(item["librarySectionID"], int)
    assert "Media" in item
    assert "Guid" in item
    assert [m["ratingKey"] for m in two["MediaContainer"]["Metadata"]] == ["1", "2"]
    assert {s["type"] for s in seasons["MediaContainer"]["Metadata"]} == {"season"}
    assert episode["type"] == "episode"
    assert episode["parentRatingKey"] == season_key
    assert again["MediaContainer"]["Metadata"][0]["title"] == episode["title"]


async def test_recently_added_groups_tv_as_seasons(
    http: aiohttp.ClientSession, plex_contract: Contract
) -> None:
    async with running("plex", size=40) as plex:
        url = f"{plex.url}/library/recentlyAdded"
        async with http.get(
            url,
            headers={**PLEX_HEADERS, "X-Plex-Container-Start": "0", "X-Plex-Container-Size": "12"},
        ) as r:
            body = await plex_contract.check(r)
    items = body["MediaContainer"]["Metadata"]
    assert {m["type"] for m in items} == {"movie", "season"}
    added = [m["addedAt"] for m in items]
    assert added == sorted(added, reverse=True)
    assert all(isinstance(m["librarySectionID"], int) for m in items)
    season = next(m for m in items if m["type"] == "season")
    assert season["title"].startswith("Season ")
    assert season["parentTitle"]


async def test_hub_search(http: aiohttp.ClientSession, plex_contract: Contract) -> None:
    async with running("plex", size=60) as plex:
        word = plex.state.catalogue.title(0).title_sort.split()[0]
        everything = await plex_get(
            http, f"{plex.url}/hubs/search?query={word}&limit=2", plex_contract
        )
        movies_only = await plex_get(
            http, f"{plex.url}/hubs/search?query={word}&limit=50&sectionId=1"
        )
        nothing = await plex_get(http, f"{plex.url}/hubs/search?query=zzzzzz", plex_contract)
    hubs = {h["hubIdentifier"]: h for h in everything["MediaContainer"]["Hub"]}
    assert set(hubs) == {"movie", "show"}
    assert hubs["movie"]["size"] <= 2
    assert all(word in m["title"] for m in hubs["movie"]["Metadata"])
    assert [h["type"] for h in movies_only["MediaContainer"]["Hub"]] == ["movie"]
    assert all("Metadata" not in h and h["size"] == 0 for h in nothing["MediaContainer"]["Hub"])


async def test_sessions_need_the_admin_token(
    http: aiohttp.ClientSession, plex_contract: Contract
) -> None:
    async with running("plex", size=40, sessions=2) as plex:
        body = await plex_get(http, f"{plex.url}/status/sessions", plex_contract)
        async with http.get(
            f"{plex.url}/status/sessions",
            headers={**PLEX_HEADERS, "X-Plex-Token": "plex-friend-server-token"},
        ) as r:
            assert r.status == 401
        plex.state.sessions = 0
        idle = await plex_get(http, f"{plex.url}/status/sessions")
    sessions = body["MediaContainer"]["Metadata"]
    assert len(sessions) == 2
    assert all(isinstance(s["librarySectionID"], str) and s["Player"]["state"] for s in sessions)
    assert idle["MediaContainer"] == {"size": 0}


async def test_shared_users_per_server_token_reads_the_library(http: aiohttp.ClientSession) -> None:
    async with running("plex", size=20) as plex:
        friend = {"X-Plex-Token": "plex-friend-server-token"}
        body = await plex_get(http, f"{plex.url}/library/sections/1/all", headers=friend)
        assert body["MediaContainer"]["size"] > 0
        async with http.get(
            f"{plex.url}/library/sections",
            headers={**PLEX_HEADERS, "X-Plex-Token": "plex-friend-token"},
        ) as r:
            assert r.status == 401  # the account token is not the per-server token


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_refresh_starts_a_scan(http: aiohttp.ClientSession, method: str) -> None:
    clock = ManualClock()
    async with running("plex", size=20, clock=clock) as plex:
        url = f"{plex.url}/library/sections/2/refresh?force=1&path=/data/tv/New%20Show"
        async with http.request(method, url, headers=PLEX_HEADERS) as r:
            assert r.status == 200
            assert await r.read() == b""
        sections = await plex_get(http, f"{plex.url}/library/sections")
        assert [d["refreshing"] for d in sections["MediaContainer"]["Directory"]] == [
            False,
            True,
            False,
        ]
        clock.advance(5)
        sections = await plex_get(http, f"{plex.url}/library/sections")
        assert not any(d["refreshing"] for d in sections["MediaContainer"]["Directory"])
        async with http.request(
            method, f"{plex.url}/library/sections/9/refresh", headers=PLEX_HEADERS
        ) as r:
            assert r.status == 404
        async with http.delete(f"{plex.url}/library/sections/2/refresh", headers=PLEX_HEADERS) as r:
            assert r.status == 200
    scan = plex.state.scans[0]
    assert (scan.section, scan.force, scan.path) == ("2", True, "/data/tv/New Show")


async def test_xml_carries_the_same_data_as_json(http: aiohttp.ClientSession) -> None:
    async with running("plex", size=40) as plex:
        url = f"{plex.url}/library/sections/2/all?includeGuids=1"
        as_json = await plex_get(http, url)
        xml_headers = {k: v for k, v in PLEX_HEADERS.items() if k != "Accept"}
        async with http.get(url, headers=xml_headers) as r:
            assert r.content_type == "text/xml"
            root = ET.fromstring(await r.text())
        async with http.get(
            f"{plex.url}/library/sections/1/all?includeGuids=1", headers=xml_headers
        ) as r:
            movies = ET.fromstring(await r.text())
    container = as_json["MediaContainer"]
    assert root.get("size") == str(container["size"])
    assert root.get("librarySectionID") == str(container["librarySectionID"]) == "2"
    shows = root.findall("Directory")
    assert [s.get("ratingKey") for s in shows] == [m["ratingKey"] for m in container["Metadata"]]
    first = container["Metadata"][0]
    assert shows[0].get("title") == first["title"]
    assert [g.get("id") for g in shows[0].findall("Guid")] == [
        g["id"] for g in first.get("Guid", [])
    ]
    videos = movies.findall("Video")
    assert videos
    assert all(v.find("Media/Part") is not None for v in videos)


async def test_an_empty_library_still_answers(http: aiohttp.ClientSession) -> None:
    async with running("plex", size=0, sessions=2) as plex:
        sessions = await plex_get(http, f"{plex.url}/status/sessions")
        movies = await plex_get(http, f"{plex.url}/library/sections/1/all?type=1")
        recent = await plex_get(http, f"{plex.url}/library/recentlyAdded")
    assert sessions["MediaContainer"] == {"size": 0}
    assert "Metadata" not in movies["MediaContainer"]
    assert "Metadata" not in recent["MediaContainer"]
