"""Normalized models: one shape for media, requests and health, whatever service said it.

Adapters translate each service's own JSON into these; the aggregation layer and the API
only ever see these. Unknown enum values from a service are kept (``status_code`` holds the
number, ``status`` says ``unknown``), never a crash: forks add values (NOTES.md 3.4).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MediaType(StrEnum):
    MOVIE = "movie"
    TV = "tv"
    SEASON = "season"
    EPISODE = "episode"
    OTHER = "other"


class ExternalIds(Model):
    """The ids that identify a title across services."""

    tmdb: int | None = None
    imdb: str | None = None
    tvdb: int | None = None

    def keys(self) -> list[str]:
        """Merge keys: ``tmdb:603``, ``imdb:tt0133093``, ``tvdb:81189`` for the ids present."""
        found = []
        if self.tmdb is not None:
            found.append(f"tmdb:{self.tmdb}")
        if self.imdb:
            found.append(f"imdb:{self.imdb}")
        if self.tvdb is not None:
            found.append(f"tvdb:{self.tvdb}")
        return found

    def merged(self, other: ExternalIds) -> ExternalIds:
        return ExternalIds(
            tmdb=self.tmdb if self.tmdb is not None else other.tmdb,
            imdb=self.imdb or other.imdb,
            tvdb=self.tvdb if self.tvdb is not None else other.tvdb,
        )


class MediaItem(Model):
    """A title as one service knows it."""

    source: str = Field(description="The upstream that reported it (plex, overseerr...).")
    type: MediaType
    title: str
    year: int | None = None
    ids: ExternalIds = Field(default_factory=ExternalIds)
    rating_key: str | None = Field(None, description="Plex ratingKey when in the library.")
    library_section: str | None = None
    poster: str | None = Field(None, description="Poster path or URL as the service gave it.")
    summary: str | None = None
    parent_title: str | None = Field(None, description="Show title for seasons and episodes.")
    index: int | None = Field(None, description="Season or episode number.")
    added_at: datetime | None = None
    updated_at: datetime | None = None
    media_status: str | None = Field(
        None, description="Overseerr media status name (available, pending...), when tracked."
    )
    media_status_code: int | None = None


class Page(Model):
    """One page of a listing, with the total when the service gave it."""

    items: list[MediaItem]
    offset: int
    limit: int
    total: int | None


class Library(Model):
    """A Plex library section."""

    key: str
    title: str
    type: str
    agent: str | None = None
    refreshing: bool = False
    updated_at: datetime | None = None


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    FAILED = "failed"
    COMPLETED = "completed"
    UNKNOWN = "unknown"


class MediaRequest(Model):
    """A request in Overseerr/Jellyseerr."""

    id: int
    status: RequestStatus
    status_code: int
    type: MediaType
    ids: ExternalIds
    requested_by: str | None = None
    requested_by_id: int | None = None
    seasons: list[int] = Field(default_factory=list)
    is_4k: bool = False
    media_status: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RequestPage(Model):
    items: list[MediaRequest]
    total: int
    offset: int
    limit: int


class HealthStatus(StrEnum):
    UP = "up"
    DOWN = "down"
    DEGRADED = "degraded"
    PENDING = "pending"
    MAINTENANCE = "maintenance"
    UNKNOWN = "unknown"


class ServiceHealth(Model):
    """Whether one service answers, how fast, and what its breaker thinks."""

    service: str
    kind: str
    status: HealthStatus
    latency_ms: float | None = None
    detail: str | None = None
    version: str | None = None
    breaker: str | None = None
    checked_at: datetime | None = None


class MonitorHealth(Model):
    """One Uptime Kuma monitor on a status page."""

    id: int
    name: str
    type: str | None = None
    group: str | None = None
    status: HealthStatus
    last_beat_at: datetime | None = None
    ping_ms: float | None = None
    uptime_24h: float | None = Field(None, description="Ratio 0..1 over 24 hours.")
