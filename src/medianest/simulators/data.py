"""The deterministic catalogue the Plex and Overseerr simulators share.

Every title is a pure function of ``(seed, uid)``: nothing is stored, so a library of 50,000
titles costs nothing to build and a page of it costs only the titles on the page. The same
``uid`` gives the same title, year and TMDB/IMDb/TVDB ids in both simulators, which is what
lets the hub merge Plex and Overseerr results by external id.

Layout of the uid space:

* ``0 <= uid < size``: titles **in the Plex library**. ``uid % 10 == 3`` is a show, anything
  else a movie. Plex ratingKey = ``uid + 1``. Every seventh title (``uid % 7 == 5``) was
  matched by a *legacy* agent: its ``guid`` is ``com.plexapp.agents.*`` and Plex gives it no
  ``Guid[]`` array, so its ids are only in the guid string.
* ``size <= uid < size + extra``: titles TMDB knows but the library does not have (what users
  find in Overseerr and request).

Orderings are arranged so list endpoints never need to materialise the library:
``addedAt``/``updatedAt`` grow with the uid (all timestamps of a title, its seasons and
episodes fall inside its own ``STEP``-second slot), and within a section the title-sort
order is an affine permutation of the uid order (titles are built from sorted word lists
so that the title of rank *r* sorts as *r*). Seasons and episodes are addressed through
prefix sums over the shows, computed on first use.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

from medianest.simulators.catalogue_items import Episode, Season, Title
from medianest.simulators.seeds import EPISODE_KEY_BASE, SEASON_KEY_BASE, STEP, T0, mix
from medianest.simulators.words import (
    ADJECTIVES,
    MOVIE_SUFFIXES,
    NOUNS,
    SHOW_SUFFIXES,
)

Kind = Literal["movie", "show"]

__all__ = ["STEP", "T0", "Catalogue", "Episode", "Kind", "Season", "Title", "mix"]


def sortable_title(rank: int, count: int, suffixes: tuple[str, ...]) -> str:
    """The title of rank ``rank`` among ``count``; titles sort exactly like their ranks."""
    radix = (len(ADJECTIVES), len(NOUNS), len(suffixes))
    capacity = radix[0] * radix[1] * radix[2]
    number = ""
    if count <= capacity:
        slot = rank * (capacity // max(count, 1))
    else:
        per_slot = math.ceil(count / capacity)
        slot, extra = divmod(rank, per_slot)
        number = f" {extra + 1:0{len(str(per_slot))}d}"
    first, rest = divmod(slot, radix[1] * radix[2])
    second, third = divmod(rest, radix[2])
    suffix = f" {suffixes[third]}" if suffixes[third] else ""
    return f"{ADJECTIVES[first]} {NOUNS[second]}{suffix}{number}"


class _Permutation:
    """``j -> (a*j + b) mod n``: a cheap bijection used as the title-sort order of a section."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = max(n, 1)
        a = int(self.n * 0.618) | 1
        while math.gcd(a, self.n) != 1:
            a += 2
        self.a, self.b = a % self.n or 1, seed % self.n
        self.a_inv = pow(self.a, -1, self.n) if self.n > 1 else 0

    def rank(self, j: int) -> int:
        return (self.a * j + self.b) % self.n

    def position(self, rank: int) -> int:
        return (self.a_inv * (rank - self.b)) % self.n


class Catalogue:
    """All generated titles for one ``(seed, size)``; see the module docstring."""

    def __init__(self, seed: int, size: int, extra: int | None = None) -> None:
        self.seed = seed
        self.size = size
        self.extra = max(20, size // 5) if extra is None else extra
        self.movie_count = (size // 10) * 9 + (size % 10) - (1 if size % 10 > 3 else 0)
        self.show_count = (size + 6) // 10
        self._orders = {
            "movie": _Permutation(self.movie_count, seed),
            "show": _Permutation(self.show_count, seed * 7 + 1),
        }
        self._seasons: list[int] | None = None
        self._episodes: list[int] | None = None

    # -- uid layout ---------------------------------------------------------------------
    @property
    def universe(self) -> int:
        return self.size + self.extra

    def kind_of(self, uid: int) -> Kind:
        if uid < self.size:
            return "show" if uid % 10 == 3 else "movie"
        return "show" if (uid - self.size) % 3 == 1 else "movie"

    def in_library(self, uid: int) -> bool:
        return 0 <= uid < self.size

    def uid_of(self, kind: Kind, position: int) -> int:
        """The uid of the ``position``-th library title of ``kind`` (in addedAt order)."""
        if kind == "show":
            return position * 10 + 3
        block, offset = divmod(position, 9)
        return block * 10 + offset + (1 if offset >= 3 else 0)

    def position_of(self, uid: int) -> int:
        if self.kind_of(uid) == "show":
            return uid // 10
        return (uid // 10) * 9 + uid % 10 - (1 if uid % 10 > 3 else 0)

    def count(self, kind: Kind) -> int:
        return self.show_count if kind == "show" else self.movie_count

    def title_rank(self, kind: Kind, position: int) -> int:
        return self._orders[kind].rank(position)

    def position_of_rank(self, kind: Kind, rank: int) -> int:
        return self._orders[kind].position(rank)

    # -- titles -------------------------------------------------------------------------
    def title_text(self, uid: int) -> tuple[str, str]:
        """``(title, titleSort)`` of a uid, cheaply (no other field is computed)."""
        kind = self.kind_of(uid)
        if uid < self.size:
            rank = self.title_rank(kind, self.position_of(uid))
            suffixes = SHOW_SUFFIXES if kind == "show" else MOVIE_SUFFIXES
            sort = sortable_title(rank, self.count(kind), suffixes)
            article = (uid * 7 + self.seed) % 6 == 0
            return (f"The {sort}" if article else sort), sort
        k = uid - self.size
        number = f" {k // (len(NOUNS) ** 2) + 1}" if k >= len(NOUNS) ** 2 else ""
        sort = f"{NOUNS[k % len(NOUNS)]} of the {NOUNS[(k // len(NOUNS)) % len(NOUNS)]}{number}"
        return f"The {sort}", sort

    def title(self, uid: int) -> Title:
        if not 0 <= uid < self.universe:
            raise KeyError(uid)
        text, sort = self.title_text(uid)
        return Title.generate(self, uid, self.kind_of(uid), text, sort)

    def library(self, kind: Kind, position: int) -> Title:
        return self.title(self.uid_of(kind, position))

    def plex_seasons(self, uid: int) -> int:
        return 1 + mix(self.seed, uid, 11) % 4 if self.kind_of(uid) == "show" else 0

    def episode_count(self, uid: int, season: int) -> int:
        return 3 + mix(self.seed, uid, season, 13) % 8

    # -- lookups by external id ---------------------------------------------------------
    def by_tmdb(self, kind: Kind, tmdb_id: int) -> Title | None:
        return self._inverse(tmdb_id - 10_000 - self.seed % 7, 7, kind)

    def by_imdb(self, imdb_id: str) -> Title | None:
        digits = imdb_id.removeprefix("tt")
        if not digits.isdigit():
            return None
        return self._inverse(int(digits) - 1_000_000 - self.seed % 13, 13, None)

    def by_tvdb(self, tvdb_id: int) -> Title | None:
        return self._inverse(tvdb_id - 70_000 - self.seed % 5, 5, "show")

    def _inverse(self, value: int, stride: int, kind: Kind | None) -> Title | None:
        uid, rest = divmod(value, stride)
        if rest or not 0 <= uid < self.universe:
            return None
        if kind is not None and self.kind_of(uid) != kind:
            return None
        return self.title(uid)

    def by_rating_key(self, key: str) -> Title | Season | Episode | None:
        """The library object with Plex ratingKey ``key`` (title, season or episode)."""
        if not key.isdigit():
            return None
        value = int(key)
        if 1 <= value <= self.size:
            return self.title(value - 1)
        if SEASON_KEY_BASE <= value < EPISODE_KEY_BASE:
            uid, season = divmod(value - SEASON_KEY_BASE, 64)
            return self.season(uid, season)
        if value >= EPISODE_KEY_BASE:
            rest, episode = divmod(value - EPISODE_KEY_BASE, 256)
            uid, season = divmod(rest, 64)
            return self.episode(uid, season, episode)
        return None

    # -- seasons and episodes -------------------------------------------------------------
    def season(self, uid: int, index: int) -> Season | None:
        if not (self.in_library(uid) and 1 <= index <= self.plex_seasons(uid)):
            return None
        return Season.generate(self, self.title(uid), index)

    def seasons(self, show: Title) -> list[Season]:
        return [Season.generate(self, show, s) for s in range(1, show.season_count + 1)]

    def episode(self, uid: int, season: int, index: int) -> Episode | None:
        found = self.season(uid, season)
        if found is None or not 1 <= index <= found.episode_count:
            return None
        return Episode.generate(self, found, index)

    def episodes(self, season: Season) -> list[Episode]:
        return [Episode.generate(self, season, e) for e in range(1, season.episode_count + 1)]

    def _tv_index(self) -> tuple[list[int], list[int]]:
        if self._seasons is None or self._episodes is None:
            seasons, episodes = [0], [0]
            for position in range(self.show_count):
                uid = self.uid_of("show", position)
                count = self.plex_seasons(uid)
                seasons.append(seasons[-1] + count)
                total = sum(self.episode_count(uid, s) for s in range(1, count + 1))
                episodes.append(episodes[-1] + total)
            self._seasons, self._episodes = seasons, episodes
        return self._seasons, self._episodes

    @property
    def season_total(self) -> int:
        return self._tv_index()[0][-1]

    @property
    def episode_total(self) -> int:
        return self._tv_index()[1][-1]

    def season_at(self, position: int) -> Season:
        """The ``position``-th season of the library, in addedAt order."""
        prefix = self._tv_index()[0]
        show = _bisect(prefix, position)
        found = self.season(self.uid_of("show", show), position - prefix[show] + 1)
        assert found is not None
        return found

    def episode_at(self, position: int) -> Episode:
        """The ``position``-th episode of the library, in addedAt order."""
        prefix = self._tv_index()[1]
        show = _bisect(prefix, position)
        uid, offset = self.uid_of("show", show), position - prefix[show]
        season = 1
        while offset >= (count := self.episode_count(uid, season)):
            offset -= count
            season += 1
        found = self.episode(uid, season, offset + 1)
        assert found is not None
        return found

    # -- search ---------------------------------------------------------------------------
    def search(self, query: str, *, library_only: bool = False) -> Iterator[int]:
        """Uids whose title contains ``query`` (case-insensitive), in uid order."""
        needle = query.strip().lower()
        if not needle:
            return
        end = self.size if library_only else self.universe
        for uid in range(end):
            if needle in self.title_text(uid)[0].lower():
                yield uid


def _bisect(prefix: list[int], position: int) -> int:
    """Index ``i`` with ``prefix[i] <= position < prefix[i + 1]``."""
    lo, hi = 0, len(prefix) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if prefix[mid] <= position:
            lo = mid
        else:
            hi = mid
    return lo
