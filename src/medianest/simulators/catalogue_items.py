"""The generated objects of the catalogue: titles (movies, shows), seasons, episodes.

Each is an immutable value computed from ``(seed, uid[, season, episode])`` by
:class:`medianest.simulators.data.Catalogue`; see that module for the layout. Fields are
service-neutral (plain Python values); the Plex and Overseerr renderers turn them into each
service's wire shapes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from medianest.simulators.seeds import EPISODE_KEY_BASE, SEASON_KEY_BASE, STEP, T0, hex24, mix
from medianest.simulators.words import (
    CONTENT_RATINGS,
    COUNTRIES,
    FIRST_NAMES,
    GENRES,
    LAST_NAMES,
    NETWORKS,
    NOUNS,
    STUDIOS,
)

if TYPE_CHECKING:
    from medianest.simulators.data import Catalogue


def _person(seed: int, *parts: int) -> str:
    h = mix(seed, *parts)
    return f"{FIRST_NAMES[h % len(FIRST_NAMES)]} {LAST_NAMES[(h >> 8) % len(LAST_NAMES)]}"


@dataclass(frozen=True, slots=True)
class Title:
    """A movie or a show, in the library or only known to TMDB."""

    uid: int
    kind: Literal["movie", "show"]
    title: str
    title_sort: str
    year: int
    released: str
    tmdb_id: int
    imdb_id: str
    tvdb_id: int | None
    in_library: bool
    legacy_agent: bool
    plex_guid: str
    added_at: int
    updated_at: int
    rating: float
    audience_rating: float
    content_rating: str
    studio: str
    summary: str
    genres: tuple[str, ...]
    directors: tuple[str, ...]
    writers: tuple[str, ...]
    actors: tuple[tuple[str, str], ...]
    countries: tuple[str, ...]
    duration_ms: int
    season_count: int
    tmdb_season_count: int
    view_count: int
    last_viewed_at: int | None

    @property
    def rating_key(self) -> str:
        return str(self.uid + 1)

    @property
    def partially_available(self) -> bool:
        """A library show TMDB knows more seasons of than Plex has."""
        return self.in_library and self.tmdb_season_count > self.season_count

    @property
    def legacy_guid(self) -> str:
        if self.kind == "show":
            return f"com.plexapp.agents.thetvdb://{self.tvdb_id}?lang=en"
        if self.uid % 2:
            return f"com.plexapp.agents.themoviedb://{self.tmdb_id}?lang=en"
        return f"com.plexapp.agents.imdb://{self.imdb_id}?lang=en"

    @property
    def guid(self) -> str:
        """The Plex ``guid`` string (new agent or legacy agent form)."""
        return self.legacy_guid if self.legacy_agent else self.plex_guid

    @classmethod
    def generate(
        cls, cat: Catalogue, uid: int, kind: Literal["movie", "show"], text: str, sort: str
    ) -> Title:
        seed = cat.seed
        h = mix(seed, uid, 1)
        year = 1960 + h % 64
        released = f"{year}-{1 + (h >> 8) % 12:02d}-{1 + (h >> 12) % 28:02d}"
        added = T0 + uid * STEP
        show = kind == "show"
        seasons = cat.plex_seasons(uid) if cat.in_library(uid) else 0
        tmdb_seasons = seasons + (1 if (uid // 10) % 5 == 2 else 0)
        if show and not cat.in_library(uid):
            tmdb_seasons = 1 + mix(seed, uid, 11) % 4
        genres = tuple(dict.fromkeys(GENRES[(h >> s) % len(GENRES)] for s in (16, 21, 26)))
        viewed = (h >> 40) % 4 == 0
        noun = NOUNS[(h >> 30) % len(NOUNS)].lower()
        return cls(
            uid=uid,
            kind=kind,
            title=text,
            title_sort=sort,
            year=year,
            released=released,
            tmdb_id=10_000 + seed % 7 + uid * 7,
            imdb_id=f"tt{1_000_000 + seed % 13 + uid * 13:07d}",
            tvdb_id=70_000 + seed % 5 + uid * 5 if show else None,
            in_library=cat.in_library(uid),
            legacy_agent=uid % 7 == 5,
            plex_guid=f"plex://{kind}/{hex24(mix(seed, uid, 2))}",
            added_at=added,
            updated_at=added + (1000 if show else 1) + (h >> 50) % 5,
            rating=round(4.0 + (h >> 44) % 60 / 10, 1),
            audience_rating=round(3.5 + (h >> 36) % 65 / 10, 1),
            content_rating=CONTENT_RATINGS[(h >> 33) % len(CONTENT_RATINGS)],
            studio=(NETWORKS if show else STUDIOS)[(h >> 20) % 6],
            summary=f"{text}: a story of the {noun} nobody else remembers.",
            genres=genres,
            directors=(_person(seed, uid, 4),),
            writers=(_person(seed, uid, 5), _person(seed, uid, 6)),
            actors=tuple((_person(seed, uid, 7, i), _person(seed, uid, 8, i)) for i in range(3)),
            countries=(COUNTRIES[(h >> 24) % len(COUNTRIES)],),
            duration_ms=((85 + (h >> 14) % 70) if not show else (22 + (h >> 14) % 40)) * 60_000,
            season_count=seasons,
            tmdb_season_count=tmdb_seasons if show else 0,
            view_count=1 + (h >> 42) % 3 if viewed else 0,
            last_viewed_at=added + 86_400 * (1 + (h >> 46) % 30) if viewed else None,
        )


@dataclass(frozen=True, slots=True)
class Season:
    """A season of a library show (seasons exist only for library shows)."""

    show: Title
    index: int
    episode_count: int
    added_at: int
    updated_at: int
    plex_guid: str

    @property
    def rating_key(self) -> str:

        return str(SEASON_KEY_BASE + self.show.uid * 64 + self.index)

    @property
    def title(self) -> str:
        return f"Season {self.index}"

    @property
    def guid(self) -> str:
        if self.show.legacy_agent:
            return f"com.plexapp.agents.thetvdb://{self.show.tvdb_id}/{self.index}?lang=en"
        return self.plex_guid

    @classmethod
    def generate(cls, cat: Catalogue, show: Title, index: int) -> Season:

        added = show.added_at + index * 200 + 10
        return cls(
            show=show,
            index=index,
            episode_count=cat.episode_count(show.uid, index),
            added_at=added,
            updated_at=added + 2,
            plex_guid=f"plex://season/{hex24(mix(cat.seed, show.uid, index, 9))}",
        )


@dataclass(frozen=True, slots=True)
class Episode:
    """An episode of a library show's season."""

    season: Season
    index: int
    title: str
    added_at: int
    updated_at: int
    released: str
    duration_ms: int
    plex_guid: str
    tmdb_id: int
    tvdb_id: int
    imdb_id: str

    @property
    def show(self) -> Title:
        return self.season.show

    @property
    def rating_key(self) -> str:

        code = (self.show.uid * 64 + self.season.index) * 256 + self.index
        return str(EPISODE_KEY_BASE + code)

    @property
    def guid(self) -> str:
        if self.show.legacy_agent:
            show = self.show
            return f"com.plexapp.agents.thetvdb://{show.tvdb_id}/{self.season.index}/{self.index}?lang=en"
        return self.plex_guid

    @classmethod
    def generate(cls, cat: Catalogue, season: Season, index: int) -> Episode:

        show = season.show
        code = (show.uid * 64 + season.index) * 256 + index
        h = mix(cat.seed, code, 10)
        added = show.added_at + season.index * 200 + index * 10
        aired = dt.datetime(show.year, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
            days=season.index * 365 + index * 7
        )
        return cls(
            season=season,
            index=index,
            title=f"The {NOUNS[h % len(NOUNS)]} {('Problem', 'Affair', 'Return')[(h >> 8) % 3]}",
            added_at=added,
            updated_at=added + 1 + (h >> 16) % 5,
            released=aired.strftime("%Y-%m-%d"),
            duration_ms=show.duration_ms,
            plex_guid=f"plex://episode/{hex24(mix(cat.seed, code, 12))}",
            tmdb_id=3_000_000 + code,
            tvdb_id=9_000_000 + code,
            imdb_id=f"tt{20_000_000 + code}",
        )
