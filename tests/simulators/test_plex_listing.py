"""Plex section listings: paging, includeGuids, date filters, sorting (NOTES.md 1.3-1.6)."""

from __future__ import annotations

import aiohttp
import pytest

from medianest.simulators import ManualClock
from tests.simulators.conftest import running
from tests.simulators.helpers import PLEX_HEADERS, plex_get, plex_page
from tests.simulators.spec import Contract


@pytest.mark.parametrize("as_query", [False, True], ids=["headers", "query"])
async def test_paging_walks_a_section_to_its_last_page(
    http: aiohttp.ClientSession, plex_contract: Contract, as_query: bool
) -> None:
    async with running("plex", size=40) as plex:
        url = f"{plex.url}/library/sections/1/all"
        seen: list[str] = []
        start, pages = 0, 0
        while True:
            headers, body = await plex_page(http, url, start, 7, as_query=as_query)
            container = body["MediaContainer"]
            assert headers["X-Plex-Container-Start"] == str(start)
            assert headers["X-Plex-Container-Total-Size"] == str(container["totalSize"])
            assert container["offset"] == start
            assert container["size"] == len(container.get("Metadata", []))
            seen += [m["ratingKey"] for m in container.get("Metadata", [])]
            pages += 1
            if container["offset"] + container["size"] >= container["totalSize"]:
                break
            start += container["size"]
        total = plex.state.catalogue.movie_count
        assert container["totalSize"] == total
        assert len(seen) == len(set(seen)) == total
        assert pages == -(-total // 7)
        assert 0 < container["size"] < 7  # the last page is short

        _, beyond = await plex_page(http, url, total + 5, 7, as_query=as_query)
        assert beyond["MediaContainer"]["size"] == 0
        assert "Metadata" not in beyond["MediaContainer"]
        _, count_only = await plex_page(http, url, 0, 0, as_query=as_query)
        assert count_only["MediaContainer"]["totalSize"] == total
        assert "Metadata" not in count_only["MediaContainer"]
        async with http.get(
            url,
            headers={**PLEX_HEADERS, "X-Plex-Container-Start": "0", "X-Plex-Container-Size": "5"},
        ) as r:
            await plex_contract.check(r)


async def test_without_paging_the_whole_listing_comes_without_total(
    http: aiohttp.ClientSession,
) -> None:
    async with running("plex", size=25) as plex:
        body = await plex_get(http, f"{plex.url}/library/sections/1/all")
    container = body["MediaContainer"]
    assert "totalSize" not in container
    assert "offset" not in container
    assert container["size"] == len(container["Metadata"]) == plex.state.catalogue.movie_count


async def test_empty_section_omits_metadata(
    http: aiohttp.ClientSession, plex_contract: Contract
) -> None:
    async with running("plex", size=25) as plex:
        plain = await plex_get(http, f"{plex.url}/library/sections/3/all", plex_contract)
        _, paged = await plex_page(
            http, f"{plex.url}/library/sections/3/all", 0, 50, as_query=False
        )
    assert plain["MediaContainer"]["size"] == 0
    assert "Metadata" not in plain["MediaContainer"]
    assert paged["MediaContainer"]["totalSize"] == 0
    assert "Metadata" not in paged["MediaContainer"]


async def test_guids_only_with_include_guids_and_only_for_new_agents(
    http: aiohttp.ClientSession, plex_contract: Contract
) -> None:
    async with running("plex", size=60) as plex:
        base = f"{plex.url}/library/sections/1/all"
        without = await plex_get(http, base, plex_contract)
        with_guids = await plex_get(http, f"{base}?includeGuids=1", plex_contract)
        cat = plex.state.catalogue
    assert not any("Guid" in m for m in without["MediaContainer"]["Metadata"])
    items = with_guids["MediaContainer"]["Metadata"]
    legacy = [m for m in items if m["guid"].startswith("com.plexapp.agents.")]
    modern = [m for m in items if m["guid"].startswith("plex://movie/")]
    assert legacy
    assert modern
    assert len(legacy) + len(modern) == len(items)
    assert not any("Guid" in m for m in legacy)
    for item in modern:
        title = cat.title(int(item["ratingKey"]) - 1)
        assert {g["id"] for g in item["Guid"]} == {
            f"imdb://{title.imdb_id}",
            f"tmdb://{title.tmdb_id}",
        }
    for item in legacy:
        title = cat.title(int(item["ratingKey"]) - 1)
        assert title.imdb_id in item["guid"] or f"themoviedb://{title.tmdb_id}?" in item["guid"]


async def test_updated_at_delta_filter_follows_the_wire_semantics(
    http: aiohttp.ClientSession,
) -> None:
    async with running("plex", size=50) as plex:
        base = f"{plex.url}/library/sections/1/all?sort=updatedAt"
        everything = (await plex_get(http, base))["MediaContainer"]["Metadata"]
        cursor = everything[30]["updatedAt"]
        newer = [m["ratingKey"] for m in everything if m["updatedAt"] > cursor]

        async def keys(query: str) -> list[str]:
            body = await plex_get(http, f"{base}&{query}")
            return [m["ratingKey"] for m in body["MediaContainer"].get("Metadata", [])]

        assert await keys(f"updatedAt>>={cursor}") == newer  # strictly after the cursor
        assert await keys(f"updatedAt%3E%3E={cursor}") == newer  # plexapi's encoded key
        assert await keys(f"updatedAt<<={cursor}") == [
            m["ratingKey"] for m in everything if m["updatedAt"] < cursor
        ]
        all_keys = [m["ratingKey"] for m in everything]
        assert await keys(f"updatedAt>={cursor}") == all_keys  # not the date operator: ignored
        assert await keys(f"updatedAt>>=={cursor}") == all_keys  # requests' mangled key: ignored
        assert await keys(f"addedAt>>={everything[-1]['addedAt']}") == []


async def test_relative_date_filter_uses_the_simulator_clock(http: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    async with running("plex", size=30, clock=clock) as plex:
        newest = max(plex.state.catalogue.title(u).added_at for u in range(30))
        clock.set(newest + 3 * 86_400)
        recent = await plex_get(http, f"{plex.url}/library/sections/1/all?addedAt>>=-1w")
        none = await plex_get(http, f"{plex.url}/library/sections/1/all?addedAt>>=-1d")
    assert recent["MediaContainer"]["size"] >= 1
    assert none["MediaContainer"]["size"] == 0


async def test_sorting(http: aiohttp.ClientSession) -> None:
    async with running("plex", size=60) as plex:
        default = (await plex_get(http, f"{plex.url}/library/sections/1/all"))["MediaContainer"][
            "Metadata"
        ]
        newest = (await plex_get(http, f"{plex.url}/library/sections/1/all?sort=addedAt:desc"))[
            "MediaContainer"
        ]
    sort_keys = [m.get("titleSort", m["title"]) for m in default]
    assert sort_keys == sorted(sort_keys)
    added = [m["addedAt"] for m in newest["Metadata"]]
    assert added == sorted(added, reverse=True)


async def test_episodes_of_a_show_section_newest_first(
    http: aiohttp.ClientSession, plex_contract: Contract
) -> None:
    async with running("plex", size=60) as plex:
        url = f"{plex.url}/library/sections/2/all?type=4&sort=addedAt:desc&includeGuids=1"
        _, body = await plex_page(http, url, 0, 10, as_query=False)
        async with http.get(
            url,
            headers={**PLEX_HEADERS, "X-Plex-Container-Start": "0", "X-Plex-Container-Size": "3"},
        ) as r:
            await plex_contract.check(r)
    container = body["MediaContainer"]
    assert container["totalSize"] == plex.state.catalogue.episode_total
    episodes = container["Metadata"]
    assert {e["type"] for e in episodes} == {"episode"}
    assert [e["addedAt"] for e in episodes] == sorted(
        (e["addedAt"] for e in episodes), reverse=True
    )
    assert all(e["grandparentRatingKey"] and e["parentIndex"] >= 1 for e in episodes)


async def test_limit_and_a_server_side_page_cap(http: aiohttp.ClientSession) -> None:
    async with running("plex", size=40, max_page_size=5) as plex:
        url = f"{plex.url}/library/sections/1/all"
        _, limited = await plex_page(http, f"{url}?limit=3", 0, 10, as_query=False)
        assert limited["MediaContainer"]["size"] == 3
        assert (
            limited["MediaContainer"]["totalSize"] == 3
        )  # limit: totalSize is no longer the total
        start, keys = 0, []
        while True:
            _, body = await plex_page(http, url, start, 8, as_query=True)
            container = body["MediaContainer"]
            assert container["size"] <= 5  # fewer than asked for
            keys += [m["ratingKey"] for m in container.get("Metadata", [])]
            if container["offset"] + container["size"] >= container["totalSize"]:
                break
            start += container["size"]
    assert len(set(keys)) == plex.state.catalogue.movie_count


async def test_seasons_of_a_show_section(
    http: aiohttp.ClientSession, plex_contract: Contract
) -> None:
    async with running("plex", size=40) as plex:
        body = await plex_get(http, f"{plex.url}/library/sections/2/all?type=3", plex_contract)
        movies_as_shows = await plex_get(http, f"{plex.url}/library/sections/1/all?type=2")
    container = body["MediaContainer"]
    assert container["size"] == plex.state.catalogue.season_total
    assert {m["type"] for m in container["Metadata"]} == {"season"}
    assert movies_as_shows["MediaContainer"]["size"] == 0
