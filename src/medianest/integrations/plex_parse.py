"""Reading Plex Media Server JSON into MediaNest models (NOTES.md 1.2, 1.6, 1.7).

Every body is ``{"MediaContainer": {...}}``; child arrays (``Metadata``, ``Directory``,
``Hub``) are left out when empty, so a missing one means "none". Ids come as strings or
numbers depending on the endpoint and are read leniently. What an item cannot do without
(``ratingKey``, ``type``, ``title``) raises :class:`ContractViolation` naming the item, which
the adapter reports as an ``UpstreamContractError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medianest.integrations.models import Library, MediaItem, MediaType, Page
from medianest.integrations.plex_models import PlaybackSession, PlexIdentity
from medianest.integrations.plexcommon import (
    ContractViolation,
    as_bool,
    as_int,
    as_str,
    epoch,
    external_ids,
)

JSON = Mapping[str, Any]

TYPES = {
    "movie": MediaType.MOVIE,
    "show": MediaType.TV,
    "season": MediaType.SEASON,
    "episode": MediaType.EPISODE,
}
#: Plex's numeric ``type`` filter for each media type (``/library/sections/{key}/all?type=``).
TYPE_NUMBERS = {MediaType.MOVIE: 1, MediaType.TV: 2, MediaType.SEASON: 3, MediaType.EPISODE: 4}


def container(data: Any) -> JSON:
    """The ``MediaContainer`` object of a PMS body."""
    if not isinstance(data, Mapping):
        raise ContractViolation(f"the body is a JSON {type(data).__name__}, not an object")
    found = data.get("MediaContainer")
    if not isinstance(found, Mapping):
        raise ContractViolation("the body has no MediaContainer object")
    return found


def children(parent: JSON, key: str, where: str = "MediaContainer") -> list[JSON]:
    """The ``key`` array of ``parent``; absent means empty, anything else must be objects."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ContractViolation(f"{where}.{key} is a {type(value).__name__}, not an array")
    for index, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            raise ContractViolation(f"{where}.{key}[{index}] is not an object")
    return value


def media_item(raw: JSON, *, source: str, section: str | None = None) -> MediaItem:
    """One ``Metadata`` element as a :class:`MediaItem` (``section``: the hoisted one)."""
    rating_key = as_str(raw.get("ratingKey"))
    label = f"Metadata item {rating_key!r}" if rating_key else "a Metadata item"
    if rating_key is None:
        raise ContractViolation(f"{label} has no ratingKey")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ContractViolation(f"{label} has no type")
    title = raw.get("title")
    if not isinstance(title, str):
        raise ContractViolation(f"{label} has no title")
    media_type = TYPES.get(kind, MediaType.OTHER)
    parent = "grandparentTitle" if kind == "episode" else "parentTitle"
    poster = _text(raw, "thumb") or _text(raw, "parentThumb") or _text(raw, "grandparentThumb")
    return MediaItem(
        source=source,
        type=media_type,
        title=title,
        year=as_int(raw.get("year")),
        ids=external_ids(raw.get("Guid"), raw.get("guid")),
        rating_key=rating_key,
        library_section=as_str(raw.get("librarySectionID")) or section,
        poster=poster,
        summary=_text(raw, "summary"),
        parent_title=_text(raw, parent),
        index=as_int(raw.get("index")) if media_type is not MediaType.MOVIE else None,
        added_at=epoch(raw.get("addedAt")),
        updated_at=epoch(raw.get("updatedAt")),
    )


def metadata(data: Any, *, source: str) -> list[MediaItem]:
    """Every ``Metadata`` element of a body, with the container's section as default."""
    box = container(data)
    section = as_str(box.get("librarySectionID"))
    return [media_item(raw, source=source, section=section) for raw in children(box, "Metadata")]


def page(data: Any, *, source: str, offset: int, limit: int, header_total: str | None) -> Page:
    """One page of a paged listing; ``total`` from ``totalSize`` (or the response header).

    ``offset`` is the one the server says it used (it may clamp the one asked for).
    """
    box = container(data)
    items = metadata(data, source=source)
    total = as_int(box.get("totalSize"))
    if total is None:
        total = as_int(header_total)
    served = as_int(box.get("offset"))
    return Page(items=items, offset=offset if served is None else served, limit=limit, total=total)


def library(raw: JSON) -> Library:
    """One section (``Directory`` element of ``/library/sections``)."""
    key = as_str(raw.get("key"))
    if key is None:
        raise ContractViolation("a library section (Directory) has no key")
    title, kind = raw.get("title"), raw.get("type")
    if not isinstance(title, str):
        raise ContractViolation(f"library section {key!r} has no title")
    if not isinstance(kind, str):
        raise ContractViolation(f"library section {key!r} has no type")
    agent = raw.get("agent")
    return Library(
        key=key,
        title=title,
        type=kind,
        agent=agent if isinstance(agent, str) else None,
        refreshing=as_bool(raw.get("refreshing")),
        updated_at=epoch(raw.get("updatedAt")),
    )


def libraries(data: Any) -> list[Library]:
    return [library(raw) for raw in children(container(data), "Directory")]


def identity(data: Any) -> PlexIdentity:
    box = container(data)
    machine, version = as_str(box.get("machineIdentifier")), as_str(box.get("version"))
    if machine is None:
        raise ContractViolation("MediaContainer has no machineIdentifier")
    if version is None:
        raise ContractViolation("MediaContainer has no version")
    return PlexIdentity(
        machine_identifier=machine, version=version, claimed=as_bool(box.get("claimed"))
    )


def hub_items(data: Any, *, source: str, limit: int) -> list[MediaItem]:
    """Video items of every hub of ``/hubs/search``, in hub order, at most ``limit`` per hub.

    Hubs of people, genres, music or collections are not titles and are left out on purpose.
    """
    found: list[MediaItem] = []
    for index, hub in enumerate(children(container(data), "Hub")):
        if hub.get("type") not in TYPES:
            continue
        entries = children(hub, "Metadata", f"MediaContainer.Hub[{index}]")
        found.extend(media_item(raw, source=source) for raw in entries[:limit])
    return found


def sessions(data: Any, *, source: str) -> list[PlaybackSession]:
    return [session(raw, source=source) for raw in children(container(data), "Metadata")]


def session(raw: JSON, *, source: str) -> PlaybackSession:
    """One active playback: the item plus ``sessionKey``, ``User``, ``Player``, ``Session``."""
    item = media_item(raw, source=source)
    key = as_str(raw.get("sessionKey"))
    if key is None:
        raise ContractViolation(f"session of item {item.rating_key!r} has no sessionKey")
    user, player, info = (_object(raw, name) for name in ("User", "Player", "Session"))
    state = as_str(player.get("state"))
    return PlaybackSession(
        session_key=key,
        item=item,
        user=as_str(user.get("title")),
        user_id=as_str(user.get("id")),
        player=as_str(player.get("title")),
        product=as_str(player.get("product")),
        platform=as_str(player.get("platform")),
        state=state or "unknown",
        address=as_str(player.get("address")),
        local=as_bool(player["local"]) if "local" in player else None,
        location=as_str(info.get("location")),
        bandwidth_kbps=as_int(info.get("bandwidth")),
        view_offset_ms=as_int(raw.get("viewOffset")),
        duration_ms=as_int(raw.get("duration")),
        transcoding=isinstance(raw.get("TranscodeSession"), Mapping),
    )


def _text(raw: JSON, key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and value else None


def _object(raw: JSON, key: str) -> JSON:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}
