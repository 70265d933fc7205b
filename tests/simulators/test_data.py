"""The generated catalogue: deterministic, lazy, and shared by Plex and Overseerr."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from medianest.errors import ConfigurationError
from medianest.simulators import SimulatorOptions, build_simulator
from medianest.simulators.catalogue_items import Title
from medianest.simulators.data import Catalogue
from tests.simulators.conftest import running

PLEX = {"X-Plex-Token": "plex-owner-token", "Accept": "application/json"}
OVERSEERR = {"X-Api-Key": "overseerr-api-key"}


def test_same_seed_same_catalogue_other_seed_other_catalogue() -> None:
    first, again, other = Catalogue(5, 300), Catalogue(5, 300), Catalogue(6, 300)
    assert [first.title(u) for u in range(0, 360, 7)] == [again.title(u) for u in range(0, 360, 7)]
    assert [first.title(u).title for u in range(50)] != [other.title(u).title for u in range(50)]


def test_ids_round_trip_and_title_order_is_a_permutation() -> None:
    cat = Catalogue(3, 500)
    for uid in range(0, cat.universe, 11):
        title = cat.title(uid)
        assert cat.by_imdb(title.imdb_id) == title
        assert cat.by_tmdb(title.kind, title.tmdb_id) == title
        if title.tvdb_id is not None:
            assert cat.by_tvdb(title.tvdb_id) == title
    for kind in ("movie", "show"):
        sorts = [
            cat.title_text(cat.uid_of(kind, cat.position_of_rank(kind, r)))[1]  # type: ignore[arg-type]
            for r in range(cat.count(kind))  # type: ignore[arg-type]
        ]
        assert sorts == sorted(sorts)
        assert len(set(sorts)) == len(sorts)


def test_seasons_and_episodes_are_addressable_by_rating_key() -> None:
    cat = Catalogue(1, 200)
    for position in range(0, cat.episode_total, 37):
        episode = cat.episode_at(position)
        assert cat.by_rating_key(episode.rating_key) == episode
        assert cat.by_rating_key(episode.season.rating_key) == episode.season
    assert cat.by_rating_key("0") is None
    assert cat.by_rating_key("abc") is None


async def test_a_page_of_a_huge_library_renders_only_the_page(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = 0
    original = Title.generate.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Title], *args: Any) -> Title:
        nonlocal generated
        generated += 1
        return original(cls, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(Title, "generate", classmethod(counting))
    app = build_simulator("plex", SimulatorOptions(size=50_000))
    assert generated == 0
    assert app.state.catalogue._seasons is None  # the TV index is built on first use only
    async with running("plex", size=50_000) as plex:
        generated = 0
        url = f"{plex.url}/library/sections/1/all?sort=addedAt:desc&updatedAt>>=1500000000"
        headers = {**PLEX, "X-Plex-Container-Start": "100", "X-Plex-Container-Size": "20"}
        async with http.get(url, headers=headers) as r:
            body = await r.json()
        assert body["MediaContainer"]["size"] == 20
        assert body["MediaContainer"]["totalSize"] > 20_000
        assert generated < 100  # 20 rendered items plus a binary search, not 45,000 titles
        generated = 0
        headers["X-Plex-Container-Start"] = "30000"
        async with http.get(f"{plex.url}/library/sections/1/all", headers=headers) as r:
            assert (await r.json())["MediaContainer"]["size"] == 20
        assert generated < 100  # title sort over the whole section is arithmetic too


async def test_plex_and_overseerr_agree_on_ids(http: aiohttp.ClientSession) -> None:
    async with (
        running("plex", size=40, seed=9) as plex,
        running("overseerr", size=40, seed=9) as ov,
    ):
        async with http.get(f"{plex.url}/library/sections/1/all?includeGuids=1", headers=PLEX) as r:
            movies = (await r.json())["MediaContainer"]["Metadata"]
        modern = next(m for m in movies if "Guid" in m)
        tmdb = next(
            g["id"].removeprefix("tmdb://") for g in modern["Guid"] if g["id"].startswith("tmdb://")
        )
        async with http.get(f"{ov.url}/api/v1/movie/{tmdb}", headers=OVERSEERR) as r:
            details = await r.json()
    assert details["title"] == modern["title"]
    assert details["mediaInfo"]["ratingKey"] == modern["ratingKey"]
    assert details["mediaInfo"]["status"] == 5


def test_unknown_simulator_name() -> None:
    with pytest.raises(ConfigurationError, match="unknown simulator"):
        build_simulator("sonarr")
