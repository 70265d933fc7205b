"""Search, Plex libraries and media details under ``/api/v1``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from medianest.aggregation import IntegrationAggregator, SearchResult
from medianest.api.v1.deps import aggregator, integrations
from medianest.integrations.models import Library, MediaItem, Page
from medianest.integrations.registry import Integrations

router = APIRouter(tags=["catalog"])
Agg = Annotated[IntegrationAggregator, Depends(aggregator)]
Ints = Annotated[Integrations, Depends(integrations)]
Offset = Annotated[int, Query(ge=0, description="Items to skip.")]
Limit = Annotated[int, Query(ge=1, le=500, description="Items to return.")]


@router.get("/search", summary="Search the library and what can be requested")
async def search(
    agg: Agg, q: Annotated[str, Query(min_length=1, max_length=200, description="Words.")]
) -> SearchResult:
    """Plex and Overseerr at once, merged by external ids; each source says how it went.

    One source failing never fails the answer: its report says ``error``, ``timeout``,
    ``circuit_open``, or ``stale`` when its last good answer for the query was used.
    """
    return await agg.search(q)


@router.get("/plex/libraries", summary="Plex library sections")
async def libraries(ints: Ints) -> list[Library]:
    return await ints.plex("libraries").libraries()


@router.get("/plex/libraries/{key}/items", summary="Items of one library section, paged")
async def library_items(
    ints: Ints,
    key: Annotated[str, Path(pattern=r"^[0-9A-Za-z_-]{1,40}$")],
    offset: Offset = 0,
    limit: Limit = 50,
) -> Page:
    return await ints.plex("library items").items(key, offset=offset, limit=limit)


@router.get("/plex/recently-added", summary="Recently added to Plex, paged")
async def recently_added(ints: Ints, offset: Offset = 0, limit: Limit = 50) -> Page:
    return await ints.plex("recently added").recently_added(offset=offset, limit=limit)


@router.get("/media/{media_type}/{tmdb_id}", summary="Details of a movie or show by TMDB id")
async def media_details(
    ints: Ints,
    media_type: Literal["movie", "tv"],
    tmdb_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
) -> MediaItem:
    overseerr = ints.overseerr("media details")
    if media_type == "movie":
        return await overseerr.movie(tmdb_id)
    return await overseerr.tv(tmdb_id)
