"""Listings of the Plex simulator: section contents, children, recently added, search.

Each listing is built from a position-addressed sequence of the catalogue (see
:mod:`medianest.simulators.plex_query`), so asking for one page of a 50,000-title section
renders one page, whatever the filters and sort.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from medianest.simulators.catalogue_items import Episode, Season, Title
from medianest.simulators.data import Catalogue
from medianest.simulators.plex_items import (
    JSON,
    Section,
    episode_json,
    season_json,
    title_json,
    with_section,
)
from medianest.simulators.plex_query import (
    ItemSequence,
    Ordered,
    parse_filters,
    parse_paging,
    select,
)
from medianest.simulators.plex_state import PlexState, error_response, respond

PlexItem = Title | Season | Episode
TYPE_NUMBERS = {"movie": 1, "show": 2, "season": 3, "episode": 4}
RECENT_DEFAULT = 50


def render_item(cat: Catalogue, item: PlexItem, *, guids: bool, detail: bool = False) -> JSON:
    if isinstance(item, Title):
        leaves = sum(cat.episode_count(item.uid, s) for s in range(1, item.season_count + 1))
        return title_json(item, guids=guids, detail=detail, leaf_count=leaves)
    if isinstance(item, Season):
        return season_json(item, guids=guids)
    return episode_json(item, guids=guids)


def section_of_item(state: PlexState, item: PlexItem) -> Section:
    kind = item.kind if isinstance(item, Title) else "show"
    return state.section_of(kind)


def sequence_for(
    cat: Catalogue, section: Section, type_number: int
) -> tuple[ItemSequence, Callable[[int], PlexItem]]:
    """The sequence a section listing of ``type`` walks, and how to fetch a position."""
    empty = ItemSequence(0, lambda _field, _pos: 0)
    if section.kind is None:
        return empty, cat.season_at
    kind = section.kind
    if TYPE_NUMBERS[kind] == type_number:

        def title_at(pos: int) -> PlexItem:
            return cat.library(kind, pos)

        def stamp(field: str, pos: int) -> int:
            title = cat.library(kind, pos)
            return title.added_at if field == "addedAt" else title.updated_at

        return (
            ItemSequence(
                cat.count(kind),
                stamp,
                lambda pos: cat.title_rank(kind, pos),
                lambda rank: cat.position_of_rank(kind, rank),
            ),
            title_at,
        )
    if kind == "show" and type_number in (3, 4):
        at: Callable[[int], Season | Episode] = (
            cat.season_at if type_number == 3 else cat.episode_at
        )
        total = cat.season_total if type_number == 3 else cat.episode_total

        def child_stamp(field: str, pos: int) -> int:
            child = at(pos)
            return child.added_at if field == "addedAt" else child.updated_at

        return ItemSequence(total, child_stamp), at
    return empty, cat.season_at


def page_response(
    request: Request,
    state: PlexState,
    container: dict[str, Any],
    total: int,
    window: Callable[[int, int], list[JSON]],
    *,
    default_size: int | None = None,
) -> Response:
    """Answer one page of a listing of ``total`` items with PMS's paging fields.

    Without paging PMS answers the whole listing (``default_size`` caps it for listings
    that are never complete, like recently added).
    """
    paging = parse_paging(request, state.max_page_size)
    limit = request.query_params.get("limit", "")
    if limit.isdigit():
        total = min(total, int(limit))
    start = min(paging.start, total)
    size = paging.size if paging.size is not None else default_size
    items = window(start, max(0, min(total if size is None else size, total - start)))
    headers: dict[str, str] = {}
    body: dict[str, Any] = {"size": len(items)}
    if paging.requested:
        body.update(totalSize=total, offset=paging.start)
        headers = {
            "X-Plex-Container-Start": str(paging.start),
            "X-Plex-Container-Total-Size": str(total),
        }
    body.update(container)
    if items:
        body["Metadata"] = items
    return respond(request, body, headers)


def section_all(request: Request, state: PlexState, section: Section) -> Response:
    cat = state.catalogue
    raw_type = request.query_params.get("type", "")
    default_type = TYPE_NUMBERS[section.kind or section.type]
    type_number = int(raw_type) if raw_type.isdigit() else default_type
    seq, fetch = sequence_for(cat, section, type_number)
    filters = parse_filters(request.url.query, state.clock())
    ordered = Ordered(seq, select(seq, filters), request.query_params.get("sort"))
    guids = request.query_params.get("includeGuids") == "1"
    title2 = {1: "All Movies", 2: "All Shows", 3: "All Seasons", 4: "All Episodes"}
    container = section.hoisted() | {"title2": title2.get(type_number, "All")}

    def window(start: int, count: int) -> list[JSON]:
        return [render_item(cat, fetch(p), guids=guids) for p in ordered.slice(start, count)]

    return page_response(request, state, container, ordered.total, window)


def children(request: Request, state: PlexState, item: PlexItem) -> Response:
    cat = state.catalogue
    kids: list[PlexItem] = []
    if isinstance(item, Title) and item.kind == "show":
        kids = list(cat.seasons(item))
    elif isinstance(item, Season):
        kids = list(cat.episodes(item))
    section = section_of_item(state, item)
    container = section.hoisted() | {
        "key": item.rating_key,
        "parentTitle": item.title if isinstance(item, Title) else item.show.title,
        "title2": item.title,
        "viewGroup": "episode" if isinstance(item, Season) else "season",
    }

    def window(start: int, count: int) -> list[JSON]:
        chosen = kids[start : start + count]
        return [render_item(cat, kid, guids=True) for kid in chosen]

    return page_response(request, state, container, len(kids), window)


def _recent(cat: Catalogue) -> Iterator[Title | Season]:
    for uid in range(cat.size - 1, -1, -1):
        title = cat.title(uid)
        if title.kind == "movie":
            yield title
        else:
            yield from reversed(cat.seasons(title))


def recently_added(request: Request, state: PlexState) -> Response:
    """Newest first, movies and *seasons* (new episodes surface as their season)."""
    cat = state.catalogue
    guids = request.query_params.get("includeGuids") == "1"
    total = cat.movie_count + cat.season_total
    container = {
        "allowSync": False,
        "identifier": "com.plexapp.plugins.library",
        "mediaTagPrefix": "/system/bundle/media/flags/",
        "mediaTagVersion": 1_700_000_000,
        "mixedParents": True,
    }

    def window(start: int, count: int) -> list[JSON]:
        out: list[JSON] = []
        for index, item in enumerate(_recent(cat)):
            if index >= start + count:
                break
            if index >= start:
                section = section_of_item(state, item)
                out.append(with_section(render_item(cat, item, guids=guids), section))
        return out

    return page_response(request, state, container, total, window, default_size=RECENT_DEFAULT)


def hub_search(request: Request, state: PlexState) -> Response:
    query = request.query_params.get("query")
    if query is None:
        return error_response(400)
    limit_raw = request.query_params.get("limit", "3")
    limit = int(limit_raw) if limit_raw.isdigit() else 3
    wanted = request.query_params.get("sectionId")
    guids = request.query_params.get("includeGuids") == "1"
    cat = state.catalogue
    kinds = [s.kind for s in state.all_sections() if s.kind and (wanted in (None, s.key))]
    found: dict[str, list[Title]] = {k: [] for k in kinds}
    for uid in cat.search(query, library_only=True):
        bucket = found.get(cat.kind_of(uid))
        if bucket is not None and len(bucket) <= limit:
            bucket.append(cat.title(uid))
        if all(len(b) > limit for b in found.values()):
            break
    hubs = []
    for kind, titles in found.items():
        section = state.section_of(kind)
        hub: JSON = {
            "title": "Movies" if kind == "movie" else "Shows",
            "type": kind,
            "hubIdentifier": kind,
            "context": f"hub.{kind}",
            "size": min(len(titles), limit),
            "more": len(titles) > limit,
            "style": "shelf",
        }
        items = [with_section(render_item(cat, t, guids=guids), section) for t in titles[:limit]]
        if items:
            hub["hubKey"] = "/library/metadata/" + ",".join(t.rating_key for t in titles[:limit])
            hub["Metadata"] = items
        hubs.append(hub)
    return respond(request, {"size": len(hubs), "Hub": hubs})
