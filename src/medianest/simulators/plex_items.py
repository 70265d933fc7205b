"""Plex wire shapes of sections and catalogue items (NOTES.md 1.6 and 1.7).

Rules followed: ``ratingKey`` and section ``key`` are strings; ``librarySectionID`` is an
int (sessions render it as a string, see :mod:`medianest.simulators.plex`); timestamps are
int epoch seconds; ``Guid[]`` exists only for new-agent items and, in lists, only when the
caller asked for ``includeGuids=1``; legacy-agent items carry their ids only in ``guid``.
``titleSort`` is sent only when it differs from ``title``, as PMS does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from medianest.simulators.catalogue_items import Episode, Season, Title

JSON = dict[str, Any]


@dataclass
class Section:
    """A library section; ``kind`` None means a section that is (and stays) empty."""

    key: str
    title: str
    type: Literal["movie", "show"]
    kind: Literal["movie", "show"] | None
    agent: str
    scanner: str
    uuid: str
    path: str
    created_at: int
    scanned_at: int
    refreshing: bool = False

    @property
    def id(self) -> int:
        return int(self.key)

    def directory(self) -> JSON:
        art = "movie" if self.type == "movie" else "show"
        return {
            "allowSync": True,
            "art": f"/:/resources/{art}-fanart.jpg",
            "composite": f"/library/sections/{self.key}/composite/{self.scanned_at}",
            "filters": True,
            "refreshing": self.refreshing,
            "thumb": f"/:/resources/{art}.png",
            "key": self.key,
            "type": self.type,
            "title": self.title,
            "agent": self.agent,
            "scanner": self.scanner,
            "language": "en-US",
            "uuid": self.uuid,
            "updatedAt": self.scanned_at,
            "createdAt": self.created_at,
            "scannedAt": self.scanned_at,
            "content": True,
            "directory": True,
            "contentChangedAt": self.scanned_at,
            "hidden": 0,
            "Location": [{"id": self.id, "path": self.path}],
        }

    def hoisted(self) -> JSON:
        """The context PMS hoists into a section listing's MediaContainer."""
        return {
            "allowSync": True,
            "art": f"/:/resources/{self.type}-fanart.jpg",
            "identifier": "com.plexapp.plugins.library",
            "librarySectionID": self.id,
            "librarySectionTitle": self.title,
            "librarySectionUUID": self.uuid,
            "mediaTagPrefix": "/system/bundle/media/flags/",
            "mediaTagVersion": 1_700_000_000,
            "thumb": f"/:/resources/{self.type}.png",
            "title1": self.title,
            "viewGroup": self.type,
        }


def _tags(names: tuple[str, ...], kind: str, detail: bool, base: int) -> list[JSON]:
    if not detail:
        return [{"tag": name} for name in names]
    return [
        {"id": base + i, "filter": f"{kind}={base + i}", "tag": name}
        for i, name in enumerate(names)
    ]


def _media(media_id: int, duration: int, updated: int, file: str) -> list[JSON]:
    size = duration * 1000
    return [
        {
            "id": media_id,
            "duration": duration,
            "bitrate": 8000,
            "width": 1920,
            "height": 1080,
            "aspectRatio": 1.78,
            "audioChannels": 6,
            "audioCodec": "eac3",
            "videoCodec": "h264",
            "videoResolution": "1080",
            "container": "mkv",
            "videoFrameRate": "24p",
            "videoProfile": "high",
            "Part": [
                {
                    "id": media_id,
                    "key": f"/library/parts/{media_id}/{updated}/file.mkv",
                    "duration": duration,
                    "file": file,
                    "size": size,
                    "container": "mkv",
                    "videoProfile": "high",
                }
            ],
        }
    ]


def _art(key: str, updated: int) -> JSON:
    return {
        "thumb": f"/library/metadata/{key}/thumb/{updated}",
        "art": f"/library/metadata/{key}/art/{updated}",
    }


def title_json(t: Title, *, guids: bool, detail: bool, leaf_count: int = 0) -> JSON:
    """A movie or show item; ``detail`` adds tag ids and the cast as in /library/metadata."""
    key = t.rating_key
    out: JSON = {
        "ratingKey": key,
        "key": f"/library/metadata/{key}" + ("/children" if t.kind == "show" else ""),
        "guid": t.guid,
        "studio": t.studio,
        "type": t.kind,
        "title": t.title,
    }
    if t.title_sort != t.title:
        out["titleSort"] = t.title_sort
    out.update(
        contentRating=t.content_rating,
        summary=t.summary,
        rating=t.rating,
        audienceRating=t.audience_rating,
        year=t.year,
        **_art(key, t.updated_at),
        duration=t.duration_ms,
        originallyAvailableAt=t.released,
        addedAt=t.added_at,
        updatedAt=t.updated_at,
    )
    if t.kind == "show":
        out.update(index=1, childCount=t.season_count, leafCount=leaf_count, viewedLeafCount=0)
    else:
        out["audienceRatingImage"] = "rottentomatoes://image.rating.upright"
        out["ratingImage"] = "rottentomatoes://image.rating.ripe"
    if t.view_count:
        out["viewCount"] = t.view_count
        out["lastViewedAt"] = t.last_viewed_at
    if t.kind == "movie":
        name = f"{t.title} ({t.year})"
        out["Media"] = _media(
            t.uid + 1, t.duration_ms, t.updated_at, f"/data/movies/{name}/{name}.mkv"
        )
    if guids and not t.legacy_agent:
        ids = [f"imdb://{t.imdb_id}", f"tmdb://{t.tmdb_id}"]
        if t.tvdb_id is not None:
            ids.append(f"tvdb://{t.tvdb_id}")
        out["Guid"] = [{"id": i} for i in ids]
    out["Genre"] = _tags(t.genres, "genre", detail, 100)
    out["Country"] = _tags(t.countries, "country", detail, 200)
    if t.kind == "movie":
        out["Director"] = _tags(t.directors, "director", detail, 300)
        out["Writer"] = _tags(t.writers, "writer", detail, 400)
    roles = _tags(tuple(name for name, _ in t.actors), "actor", detail, 500)
    if detail:
        for role, (_, character) in zip(roles, t.actors, strict=True):
            role["role"] = character
    out["Role"] = roles
    return out


def season_json(s: Season, *, guids: bool) -> JSON:
    show = s.show
    out: JSON = {
        "ratingKey": s.rating_key,
        "key": f"/library/metadata/{s.rating_key}/children",
        "parentRatingKey": show.rating_key,
        "guid": s.guid,
        "parentGuid": show.guid,
        "type": "season",
        "title": s.title,
        "parentKey": f"/library/metadata/{show.rating_key}",
        "parentTitle": show.title,
        "summary": "",
        "index": s.index,
        "parentYear": show.year,
        **_art(s.rating_key, s.updated_at),
        "parentThumb": f"/library/metadata/{show.rating_key}/thumb/{show.updated_at}",
        "leafCount": s.episode_count,
        "viewedLeafCount": 0,
        "addedAt": s.added_at,
        "updatedAt": s.updated_at,
    }
    if guids and not show.legacy_agent:
        out["Guid"] = [{"id": f"tvdb://{(show.tvdb_id or 0) * 100 + s.index}"}]
    return out


def episode_json(e: Episode, *, guids: bool) -> JSON:
    season, show = e.season, e.show
    out: JSON = {
        "ratingKey": e.rating_key,
        "key": f"/library/metadata/{e.rating_key}",
        "parentRatingKey": season.rating_key,
        "grandparentRatingKey": show.rating_key,
        "guid": e.guid,
        "parentGuid": season.guid,
        "grandparentGuid": show.guid,
        "type": "episode",
        "title": e.title,
        "grandparentKey": f"/library/metadata/{show.rating_key}",
        "parentKey": f"/library/metadata/{season.rating_key}",
        "grandparentTitle": show.title,
        "parentTitle": season.title,
        "contentRating": show.content_rating,
        "summary": f"{show.title}, season {season.index}, episode {e.index}.",
        "index": e.index,
        "parentIndex": season.index,
        "year": int(e.released[:4]),
        **_art(e.rating_key, e.updated_at),
        "grandparentThumb": f"/library/metadata/{show.rating_key}/thumb/{show.updated_at}",
        "duration": e.duration_ms,
        "originallyAvailableAt": e.released,
        "addedAt": e.added_at,
        "updatedAt": e.updated_at,
    }
    name = f"{show.title} ({show.year})"
    file = (
        f"/data/tv/{name}/Season {season.index:02d}/{name} - s{season.index:02d}e{e.index:02d}.mkv"
    )
    out["Media"] = _media(int(e.rating_key), e.duration_ms, e.updated_at, file)
    if guids and not show.legacy_agent:
        out["Guid"] = [
            {"id": f"imdb://{e.imdb_id}"},
            {"id": f"tmdb://{e.tmdb_id}"},
            {"id": f"tvdb://{e.tvdb_id}"},
        ]
    return out


def with_section(item: JSON, section: Section) -> JSON:
    """Add the librarySection* fields items carry outside a section listing."""
    item["librarySectionID"] = section.id
    item["librarySectionKey"] = f"/library/sections/{section.key}"
    item["librarySectionTitle"] = section.title
    return item
