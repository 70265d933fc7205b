"""Media and requests of the Overseerr/Jellyseerr simulator (NOTES.md 3.2-3.4).

Media (``MediaInfo``) exists for every title of the shared catalogue that is in the Plex
library (AVAILABLE, or PARTIALLY_AVAILABLE for a show TMDB knows more seasons of); those
records are computed on demand and only stored once something changes them. Requested
titles get a stored record. The media id is ``uid + 1``.

Request lifecycle, deterministic:

* ``POST /request`` by the API key's user 1 (ADMIN) is APPROVED at once (media PROCESSING);
  by user 2 (``X-API-User: 2``, REQUEST permission only) it is PENDING (media PENDING) until
  approved or declined.
* Every *poll* of an approved request (``GET /request/{id}``, a request list page that
  contains it, or ``GET /movie|tv/{id}`` of its media) counts; after
  ``request_available_after`` polls the media becomes AVAILABLE (requested seasons for TV).
  Overseerr keeps the request APPROVED; the ``jellyseerr`` flavour moves it to 5 (COMPLETED)
  as newer forks do.
* Declining or deleting a request puts media that is not available back to UNKNOWN.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from medianest.simulators.catalogue_items import Title
from medianest.simulators.data import Catalogue
from medianest.simulators.options import SimulatorOptions
from medianest.simulators.seeds import STEP, T0

# MediaRequest.status
PENDING, APPROVED, DECLINED, FAILED, COMPLETED = 1, 2, 3, 4, 5
# MediaInfo.status
M_UNKNOWN, M_PENDING, M_PROCESSING, M_PARTIAL, M_AVAILABLE, M_BLACKLISTED, M_DELETED = range(1, 8)

ADMIN, MANAGE_REQUESTS, REQUEST, AUTO_APPROVE = 2, 16, 32, 128
MediaType = Literal["movie", "tv"]


def iso_ms(epoch: float) -> str:
    stamp = dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True)
class User:
    id: int
    username: str
    email: str
    permissions: int
    plex_id: int

    def can(self, permission: int) -> bool:
        return bool(self.permissions & (ADMIN | permission))


@dataclass
class Media:
    id: int
    uid: int
    media_type: MediaType
    status: int
    created_at: float
    updated_at: float
    media_added_at: float | None
    seasons: dict[int, int] = field(default_factory=dict)
    requests: list[int] = field(default_factory=list)


@dataclass
class Request:
    id: int
    media_id: int
    media_type: MediaType
    status: int
    seasons: list[int]
    season_ids: list[int]
    requested_by: int
    modified_by: int | None
    created_at: float
    updated_at: float
    polls: int = 0


class OverseerrState:
    """Users, media and requests of one simulated Overseerr or Jellyseerr."""

    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.flavour = options.flavour
        self.catalogue = Catalogue(options.seed, options.size)
        self.users = {
            1: User(1, "owner", "owner@example.com", ADMIN, 1001),
            2: User(2, "friend", "friend@example.com", REQUEST, 1002),
        }
        self.media_store: dict[int, Media] = {}
        self.requests: dict[int, Request] = {}
        self._next_request = 1
        self._next_season = 1
        if self.flavour == "jellyseerr" and self.catalogue.extra:
            blocked = self._new_media(self.catalogue.size)
            blocked.status = M_BLACKLISTED

    def now(self) -> float:
        return self.options.clock()

    def media_type(self, title: Title) -> MediaType:
        return "tv" if title.kind == "show" else "movie"

    # -- media --------------------------------------------------------------------------------
    def _library_status(self, uid: int) -> int:
        partial = self.catalogue.kind_of(uid) == "show" and (uid // 10) % 5 == 2
        return M_PARTIAL if partial else M_AVAILABLE

    def _virtual(self, uid: int) -> Media:
        title = self.catalogue.title(uid)
        added = float(T0 + uid * STEP)
        seasons = dict.fromkeys(range(1, title.season_count + 1), M_AVAILABLE)
        return Media(
            uid + 1,
            uid,
            self.media_type(title),
            self._library_status(uid),
            added,
            added + 1,
            added,
            seasons,
        )

    def media_for(self, uid: int) -> Media | None:
        """The media record of a title, or None if Overseerr does not track it."""
        stored = self.media_store.get(uid + 1)
        if stored is not None:
            return stored
        return self._virtual(uid) if self.catalogue.in_library(uid) else None

    def _new_media(self, uid: int) -> Media:
        existing = self.media_for(uid)
        if existing is None:
            now = self.now()
            kind = self.media_type(self.catalogue.title(uid))
            existing = Media(uid + 1, uid, kind, M_UNKNOWN, now, now, None)
        self.media_store[existing.id] = existing
        return existing

    def media_listing(
        self, status_filter: set[int] | None, sort: str
    ) -> tuple[int, Iterator[Media]]:
        """(total, iterator) of tracked media passing the filter, in Overseerr's order."""

        def wanted(status: int) -> bool:
            return status_filter is None or status in status_filter

        def key(m: Media) -> float:
            if sort == "modified":
                return m.updated_at
            if sort == "mediaAdded":
                return m.media_added_at or 0.0
            return float(m.id)

        stored = sorted(
            (m for m in self.media_store.values() if wanted(m.status)), key=key, reverse=True
        )
        library = [u for u in range(self.catalogue.size) if u + 1 not in self.media_store]
        virtual_count = sum(1 for u in library if wanted(self._library_status(u)))

        def virtual() -> Iterator[Media]:
            for uid in reversed(library):
                if wanted(self._library_status(uid)):
                    yield self._virtual(uid)

        merged = heapq.merge(stored, virtual(), key=key, reverse=True)
        return len(stored) + virtual_count, merged

    # -- requests -------------------------------------------------------------------------------
    def new_request(self, user: User, title: Title, seasons: list[int]) -> Request:
        media = self._new_media(title.uid)
        auto = user.can(AUTO_APPROVE) or user.can(MANAGE_REQUESTS)
        now = self.now()
        request = Request(
            id=self._next_request,
            media_id=media.id,
            media_type=media.media_type,
            status=APPROVED if auto else PENDING,
            seasons=seasons,
            season_ids=list(range(self._next_season, self._next_season + len(seasons))),
            requested_by=user.id,
            modified_by=user.id if auto else None,
            created_at=now,
            updated_at=now,
        )
        self._next_request += 1
        self._next_season += len(seasons)
        self.requests[request.id] = request
        media.requests.append(request.id)
        self._apply(request, media)
        return request

    def _apply(self, request: Request, media: Media) -> None:
        """Propagate a request's status to its media (and requested seasons)."""
        value = {PENDING: M_PENDING, APPROVED: M_PROCESSING}.get(request.status, M_UNKNOWN)
        for season in request.seasons:
            if media.seasons.get(season) != M_AVAILABLE:
                if value == M_UNKNOWN:
                    media.seasons.pop(season, None)
                else:
                    media.seasons[season] = value
        if media.status not in (M_AVAILABLE, M_PARTIAL):
            active = [r for r in self._requests_of(media) if r.status in (PENDING, APPROVED)]
            if value == M_UNKNOWN and active:
                value = M_PROCESSING if any(r.status == APPROVED for r in active) else M_PENDING
            media.status = value
        media.updated_at = self.now()

    def _requests_of(self, media: Media) -> list[Request]:
        return [self.requests[i] for i in media.requests if i in self.requests]

    def media_of(self, request: Request) -> Media:
        return self.media_store[request.media_id]

    def set_status(self, request: Request, status: int, by: User) -> None:
        request.status = status
        request.modified_by = by.id
        request.updated_at = self.now()
        request.polls = 0
        self._apply(request, self.media_of(request))

    def delete(self, request: Request) -> None:
        del self.requests[request.id]
        media = self.media_of(request)
        media.requests.remove(request.id)
        request.status = DECLINED
        self._apply(request, media)

    def poll(self, request: Request) -> None:
        """One look at an approved request; enough of them make its media available."""
        after = self.options.request_available_after
        if request.status != APPROVED or after is None:
            return
        request.polls += 1
        if request.polls >= after:
            self.make_available(request)

    def make_available(self, request: Request) -> None:
        """The download finished and Plex has it: media (or the seasons) become available."""
        media, now = self.media_of(request), self.now()
        for season in request.seasons:
            media.seasons[season] = M_AVAILABLE
        title = self.catalogue.title(media.uid)
        if media.media_type == "tv":
            every = all(
                media.seasons.get(s) == M_AVAILABLE for s in range(1, title.tmdb_season_count + 1)
            )
            media.status = M_AVAILABLE if every else M_PARTIAL
        else:
            media.status = M_AVAILABLE
        media.media_added_at = media.media_added_at or now
        media.updated_at = now
        if self.flavour == "jellyseerr":
            request.status = COMPLETED
        request.updated_at = now
