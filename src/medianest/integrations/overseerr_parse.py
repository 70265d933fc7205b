"""Overseerr / Jellyseerr JSON into MediaNest models, checking the contract on the way.

Answers are read through :class:`Node` (a JSON object and where it sits), so a required
field missing or of the wrong type raises :class:`~medianest.errors.UpstreamContractError`
naming it (``results[3].id``), never a ``KeyError`` in a caller; optional ones are lenient.

Status enums follow NOTES.md 3.4: request statuses 1..5 (5 COMPLETED only in forks) and
media statuses 1..7 (6 BLACKLISTED, 7 DELETED in forks). An integer nobody knows is kept:
requests get ``RequestStatus.UNKNOWN`` with the number in ``status_code``, media the name
``unknown_<n>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from medianest import errors
from medianest.integrations.models import (
    ExternalIds,
    MediaItem,
    MediaRequest,
    MediaType,
    Model,
    RequestStatus,
)

_MEDIA = "unknown pending processing partially_available available blacklisted deleted"
MEDIA_STATUS_NAMES = dict(enumerate(_MEDIA.split(), start=1))
REQUEST_STATUSES = dict(enumerate(("pending", "approved", "declined", "failed", "completed"), 1))
TYPES = {"movie": MediaType.MOVIE, "tv": MediaType.TV}


class Flavour(StrEnum):
    """Which server: Overseerr itself, or the Jellyseerr/Seerr family of forks (2.x+)."""

    OVERSEERR = "overseerr"
    JELLYSEERR = "jellyseerr"


class OverseerrStatus(Model):
    """``GET /status``: the server's version and whether it is behind."""

    version: str
    commit_tag: str | None = None
    update_available: bool = False
    flavour: Flavour


class SearchPage(Model):
    """One TMDB-style page of ``/search`` (20 per page), people and collections left out."""

    items: list[MediaItem]
    page: int
    total_pages: int
    total_results: int


class TrackedMedia(Model):
    """A ``MediaInfo``: a title Overseerr tracks (ids and statuses, no title text)."""

    id: int
    type: MediaType
    ids: ExternalIds
    status: str
    status_code: int
    status_4k: str | None = None
    rating_key: str | None = None
    seasons: dict[int, str] = Field({}, description="Season number to its status name.")
    request_ids: list[int] = []
    updated_at: datetime | None = None
    added_at: datetime | None = None


class MediaPage(Model):
    items: list[TrackedMedia]
    total: int
    offset: int
    limit: int


def media_status_name(code: int | None) -> str | None:
    """The lower-case name of a media status (``unknown_<n>`` for a value nobody knows)."""
    return None if code is None else MEDIA_STATUS_NAMES.get(code, f"unknown_{code}")


def flavour_of(version: str) -> Flavour:
    """Overseerr never left 1.x; Jellyseerr and Seerr are 2.x and later."""
    major = version.lstrip("v").split(".", 1)[0]
    return Flavour.JELLYSEERR if major.isdigit() and int(major) >= 2 else Flavour.OVERSEERR


@dataclass(frozen=True, slots=True)
class Node:
    """One JSON object of an answer from ``endpoint`` of ``service``, found at ``path``."""

    service: str
    endpoint: str
    data: dict[str, Any]
    path: str = ""

    @classmethod
    def of(cls, service: str, endpoint: str, body: Any) -> Node:
        return cls(service, endpoint, {}).wrap(body, "")

    def error(self, what: str) -> errors.UpstreamContractError:
        return errors.UpstreamContractError(
            f"{self.service} answered {self.endpoint} {what}",
            service=self.service,
            endpoint=self.endpoint,
        )

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def wrap(self, value: Any, path: str) -> Node:
        if not isinstance(value, dict):
            raise self.error(f"with '{path or 'the body'}' not a JSON object")
        return Node(self.service, self.endpoint, value, path)

    def node(self, key: str) -> Node | None:
        """The object under ``key``, None when absent or null."""
        value = self.data.get(key)
        return None if value is None else self.wrap(value, self.name(key))

    def obj(self, key: str) -> Node:
        """The object under ``key``, which must be there."""
        if (found := self.node(key)) is None:
            raise self.error(f"without the required object '{self.name(key)}'")
        return found

    def nodes(self, key: str, *, required: bool = True) -> list[Node]:
        """The objects of the list under ``key`` (an absent optional list is empty)."""
        value = self.data.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list):
            raise self.error(f"without the list '{self.name(key)}'")
        return [self.wrap(v, f"{self.name(key)}[{i}]") for i, v in enumerate(value)]

    def integer(self, key: str) -> int:
        value = self.opt_integer(key)
        if value is None:
            raise self.error(f"without the required field '{self.name(key)}'")
        return value

    def opt_integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise self.error(f"with '{self.name(key)}' not an integer: {value!r}")

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str):
            raise self.error(f"without the required text '{self.name(key)}'")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self.data.get(key)
        return value if isinstance(value, str) and value else None

    def media_type(self, key: str) -> MediaType:
        value = self.data.get(key)
        if value not in TYPES:
            raise self.error(f"with '{self.name(key)}' not movie or tv: {value!r}")
        return TYPES[value]

    def time(self, key: str) -> datetime | None:
        """An ISO 8601 timestamp (``2020-09-12T10:00:27.000Z``) as an aware UTC datetime."""
        value = self.data.get(key)
        if value is None or value == "":
            return None
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise self.error(f"with '{self.name(key)}' not a timestamp: {value!r}") from None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_status(body: Node, flavour: Flavour | None) -> OverseerrStatus:
    version = body.text("version")
    return OverseerrStatus(
        version=version,
        commit_tag=body.opt_text("commitTag"),
        update_available=body.data.get("updateAvailable") is True,
        flavour=flavour or flavour_of(version),
    )


def parse_search(body: Node, source: str) -> SearchPage:
    results = [r for r in body.nodes("results") if r.data.get("mediaType") in TYPES]
    return SearchPage(
        items=[parse_title(result, source) for result in results],
        page=body.integer("page"),
        total_pages=body.integer("totalPages"),
        total_results=body.integer("totalResults"),
    )


def _year(value: str | None) -> int | None:
    return int(value[:4]) if value and value[:4].isdigit() else None


def media_ids(info: Node) -> ExternalIds:
    return ExternalIds(
        tmdb=info.opt_integer("tmdbId"),
        imdb=info.opt_text("imdbId"),
        tvdb=info.opt_integer("tvdbId"),
    )


def parse_title(data: Node, source: str, kind: MediaType | None = None) -> MediaItem:
    """A search result or a ``/movie``/``/tv`` details answer as a :class:`MediaItem`."""
    kind = kind or data.media_type("mediaType")
    movie = kind is MediaType.MOVIE
    external = data.node("externalIds")
    ids = ExternalIds(
        tmdb=data.integer("id"),
        imdb=(external.opt_text("imdbId") if external else None) or data.opt_text("imdbId"),
        tvdb=external.opt_integer("tvdbId") if external else None,
    )
    info = data.node("mediaInfo")
    status = info.integer("status") if info else None
    return MediaItem(
        source=source,
        type=kind,
        title=data.text("title" if movie else "name"),
        year=_year(data.opt_text("releaseDate" if movie else "firstAirDate")),
        ids=ids.merged(media_ids(info)) if info else ids,
        rating_key=info.opt_text("ratingKey") if info else None,
        poster=data.opt_text("posterPath"),
        summary=data.opt_text("overview"),
        added_at=info.time("mediaAddedAt") if info else None,
        media_status=media_status_name(status),
        media_status_code=status,
    )


def parse_media(info: Node) -> TrackedMedia:
    status, seasons = info.integer("status"), info.nodes("seasons", required=False)
    return TrackedMedia(
        id=info.integer("id"),
        type=info.media_type("mediaType"),
        ids=media_ids(info),
        status=media_status_name(status) or "",
        status_code=status,
        status_4k=media_status_name(info.opt_integer("status4k")),
        rating_key=info.opt_text("ratingKey"),
        seasons={
            s.integer("seasonNumber"): str(media_status_name(s.integer("status"))) for s in seasons
        },
        request_ids=[r.integer("id") for r in info.nodes("requests", required=False)],
        updated_at=info.time("updatedAt"),
        added_at=info.time("mediaAddedAt"),
    )


def _user_name(user: Node | None) -> str | None:
    keys = ("displayName", "username", "plexUsername", "jellyfinUsername", "email")
    return next((n for k in keys if user and (n := user.opt_text(k))), None)


def parse_request(body: Node, ids: ExternalIds | None = None) -> MediaRequest:
    """A ``MediaRequest``; ``ids`` stand in when it comes without ``media`` (details lists)."""
    code = body.integer("status")
    is_4k = body.data.get("is4k") is True
    media = body.node("media")
    typed = media if media and "type" not in body.data else None
    kind = typed.media_type("mediaType") if typed else body.media_type("type")
    if media is not None:
        ids = media_ids(media).merged(ids or ExternalIds())
    user = body.node("requestedBy")
    return MediaRequest(
        id=body.integer("id"),
        status=RequestStatus(REQUEST_STATUSES.get(code, "unknown")),
        status_code=code,
        type=kind,
        ids=ids or ExternalIds(),
        requested_by=_user_name(user),
        requested_by_id=user.opt_integer("id") if user else None,
        seasons=[s.integer("seasonNumber") for s in body.nodes("seasons", required=False)],
        is_4k=is_4k,
        media_status=media_status_name(
            media.opt_integer("status4k" if is_4k else "status") if media else None
        ),
        created_at=body.time("createdAt"),
        updated_at=body.time("updatedAt"),
    )


def page_total(body: Node) -> int:
    """``pageInfo.results``: the total number of matches, not the size of this page."""
    return body.obj("pageInfo").integer("results")
