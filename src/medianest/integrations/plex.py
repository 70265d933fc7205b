"""The Plex Media Server adapter (NOTES.md section 1).

Every request asks for JSON (``Accept: application/json``; PMS answers XML otherwise),
carries the hub's ``X-Plex-*`` identification (:mod:`.plexcommon`) and, except
``/identity``, the configured ``X-Plex-Token``. Listings are paged with the
``X-Plex-Container-Start``/``-Size`` headers and ask for ``includeGuids=1`` so that items
carry their IMDb/TMDB/TVDB ids; legacy-agent items have none and their ids come from the
``guid`` string instead.

Incremental listing uses Plex's date operator ``>>=`` ("after"): the query key is
``updatedAt>>`` and the encoder adds the ``=``, giving ``updatedAt%3E%3E=<epoch>`` on the
wire. PMS silently ignores a filter it does not understand (``updatedAt>=``,
``updatedAt>>==``) and answers with everything, so the exact form matters. The operator is
strict, so ``updated_since=t`` is sent as ``t - 1`` to include items updated at ``t``.

Error bodies are HTML even when JSON was asked for; they are never decoded (the HTTP layer
maps 401 to ``UpstreamAuthError``, 404 to ``UpstreamNotFound``). A 200 answer lacking what
the contract promises raises ``UpstreamContractError`` saying what was missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from pydantic import SecretStr

from medianest import errors
from medianest.config import UpstreamSettings
from medianest.integrations import plex_parse as parse
from medianest.integrations.base import HttpAdapter
from medianest.integrations.http import HttpResponse, Query, UpstreamHttp
from medianest.integrations.models import Library, MediaItem, MediaType, Page
from medianest.integrations.plex_models import PlaybackSession, PlexIdentity
from medianest.integrations.plexcommon import decode, plex_http

__all__ = ["PlaybackSession", "PlexAdapter", "PlexIdentity"]

SECTION_ALL = "/library/sections/{sectionKey}/all"
METADATA = "/library/metadata/{ratingKey}"
REFRESH = "/library/sections/{sectionKey}/refresh"


def paging(offset: int, size: int) -> dict[str, str]:
    """The request headers asking PMS for items ``offset`` .. ``offset + size - 1``."""
    return {"X-Plex-Container-Start": str(offset), "X-Plex-Container-Size": str(size)}


def listing_query(
    media_type: MediaType | None, sort: str | None, updated_since: int | None
) -> dict[str, str | int]:
    """The query of a section listing: type filter, ids, sort and the updatedAt delta."""
    query: dict[str, str | int] = {}
    if media_type is not None:
        number = parse.TYPE_NUMBERS.get(media_type)
        if number is None:
            raise errors.ValidationError(
                f"Plex has no library type for media type {media_type.value!r}",
                errors={"media_type": "one of movie, tv, season, episode"},
            )
        query["type"] = number
    query["includeGuids"] = 1
    if sort:
        query["sort"] = sort
    if updated_since is not None and updated_since > 0:
        query["updatedAt>>"] = updated_since - 1
    return query


def _check_window(**values: int) -> None:
    bad = {name: "must not be negative" for name, value in values.items() if value < 0}
    if bad:
        raise errors.ValidationError("invalid paging for Plex", errors=bad)


class PlexAdapter(HttpAdapter):
    """A Plex Media Server, read through its HTTP API with one token."""

    kind = "plex"

    def __init__(self, name: str, http: UpstreamHttp, *, token: SecretStr | None) -> None:
        super().__init__(name, http)
        self._token = token

    def __repr__(self) -> str:
        return f"PlexAdapter({self.name!r}, {self.http.base_url!r})"

    @classmethod
    def from_settings(
        cls,
        name: str,
        upstream: UpstreamSettings,
        *,
        client_identifier: str | None = None,
        registry: Any = None,
        clock: Any = None,
        **context: Any,
    ) -> PlexAdapter:
        """Build from ``[upstreams.<name>]``; ``client_identifier`` is the hub's stable id.

        ``options.device_name`` sets ``X-Plex-Device-Name`` (default ``MediaNest``).
        Other keyword context (``kind``...) is accepted and ignored.
        """
        http, _ = plex_http(
            name, upstream, client_identifier=client_identifier, registry=registry, clock=clock
        )
        return cls(name, http, token=upstream.token)

    async def _get(
        self,
        endpoint: str,
        *,
        path: Mapping[str, str] | None = None,
        query: Query | None = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
        missing: str | None = None,
    ) -> HttpResponse:
        """GET ``endpoint``; ``missing`` names what a 404 means (``library section '9'``)."""
        sent = dict(headers or {})
        if authenticated and self._token is not None:
            sent["X-Plex-Token"] = self._token.get_secret_value()
        try:
            return await self.http.request("GET", endpoint, path=path, query=query, headers=sent)
        except errors.UpstreamNotFound as exc:
            if missing is None:
                raise
            raise errors.UpstreamNotFound(
                f"{self.name} has no {missing}",
                service=self.name,
                endpoint=endpoint,
                status=exc.status,
                method="GET",
            ) from exc

    async def identity(self) -> PlexIdentity:
        """The server's machineIdentifier, version and claimed flag (no token sent)."""
        response = await self._get("/identity", authenticated=False)
        return decode(response, parse.identity)

    async def probe(self) -> str:
        """The server version, after checking that the token may read the library."""
        found = await self.identity()
        await self._get("/library/sections")
        return found.version

    async def libraries(self) -> list[Library]:
        """Every library section (``Directory`` of ``/library/sections``)."""
        return decode(await self._get("/library/sections"), parse.libraries)

    async def items(
        self,
        section_key: str,
        *,
        offset: int = 0,
        limit: int = 50,
        media_type: MediaType | None = None,
        sort: str | None = None,
        updated_since: int | None = None,
    ) -> Page:
        """One page of a section's contents; ``total`` is the section's ``totalSize``.

        ``media_type`` picks what to list (episodes of a TV section, say); ``sort`` is a Plex
        sort such as ``addedAt:desc``; ``updated_since`` (epoch seconds) keeps items whose
        ``updatedAt`` is at or after it. ``limit=0`` asks only for the count.
        """
        _check_window(offset=offset, limit=limit)
        response = await self._get(
            SECTION_ALL,
            path={"sectionKey": section_key},
            query=listing_query(media_type, sort, updated_since),
            headers=paging(offset, limit),
        )
        return self._page(response, offset, limit)

    async def iter_items(
        self,
        section_key: str,
        *,
        page_size: int = 100,
        media_type: MediaType | None = None,
        updated_since: int | None = None,
    ) -> AsyncIterator[MediaItem]:
        """Every item of a section, one page request at a time.

        It stops when ``offset + size`` reaches ``totalSize`` or a page is empty, never
        because a page was shorter than asked (PMS may cap page sizes). A server that
        ignores paging altogether (no ``totalSize``) answered with everything at once.
        """
        if page_size < 1:
            raise errors.ValidationError(
                "page_size must be at least 1", errors={"page_size": "at least 1"}
            )
        offset = 0
        while True:
            page = await self.items(
                section_key,
                offset=offset,
                limit=page_size,
                media_type=media_type,
                updated_since=updated_since,
            )
            for item in page.items:
                yield item
            offset = page.offset + len(page.items)
            if not page.items or page.total is None or offset >= page.total:
                return

    async def metadata(self, rating_key: str) -> MediaItem:
        """One item in full detail; ``UpstreamNotFound`` when the server has no such key."""
        response = await self._get(
            METADATA, path={"ratingKey": rating_key}, missing=f"item with ratingKey {rating_key!r}"
        )
        found = decode(response, lambda data: parse.metadata(data, source=self.name))
        if not found:
            raise errors.UpstreamContractError(
                f"{self.name} answered {METADATA} for {rating_key!r} with no Metadata item",
                service=self.name,
                endpoint=METADATA,
                status=response.status,
                method="GET",
            )
        return found[0]

    async def recently_added(self, *, offset: int = 0, limit: int = 50) -> Page:
        """Newest additions across libraries: movies and *seasons* (new episodes of an
        existing season surface as their season, as PMS groups them)."""
        _check_window(offset=offset, limit=limit)
        response = await self._get(
            "/library/recentlyAdded",
            query={"includeGuids": 1},
            headers=paging(offset, limit),
        )
        return self._page(response, offset, limit)

    async def search(self, query: str, *, limit: int = 10) -> list[MediaItem]:
        """Titles matching ``query`` (hub search), at most ``limit`` per hub (movies, shows,
        seasons, episodes), each with ids, year, poster and library section.

        Hub search leaves out ``Guid[]``, so the ids of new-agent hits are read in one more
        request for all of them (``/library/metadata/{k1,k2,...}``).
        """
        if not query.strip():
            raise errors.ValidationError("the search query is empty", errors={"query": "empty"})
        _check_window(limit=limit)
        response = await self._get(
            "/hubs/search", query={"query": query, "limit": limit, "includeGuids": 1}
        )
        found = decode(response, lambda data: parse.hub_items(data, source=self.name, limit=limit))
        missing = [i.rating_key for i in found if i.rating_key and not i.ids.keys()]
        if not missing:
            return found
        detail = {i.rating_key: i.ids for i in await self._many(missing)}
        return [i.model_copy(update={"ids": detail.get(i.rating_key, i.ids)}) for i in found]

    async def _many(self, rating_keys: list[str]) -> list[MediaItem]:
        """Full detail of several items in one request; unknown keys are left out."""
        keys = ",".join(dict.fromkeys(rating_keys))
        try:
            response = await self._get(METADATA, path={"ratingKey": keys})
        except errors.UpstreamNotFound:
            return []
        return decode(response, lambda data: parse.metadata(data, source=self.name))

    async def sessions(self) -> list[PlaybackSession]:
        """Active playbacks (needs the server owner's token)."""
        response = await self._get("/status/sessions")
        return decode(response, lambda data: parse.sessions(data, source=self.name))

    async def refresh(
        self, section_key: str, *, path: str | None = None, force: bool = False
    ) -> None:
        """Ask the server to scan a section (only ``path`` in it, if given); it scans in the
        background. ``force`` rescans files whose dates say they did not change."""
        query: dict[str, str | int | None] = {"force": 1 if force else None, "path": path}
        await self._get(
            REFRESH,
            path={"sectionKey": section_key},
            query=query,
            missing=f"library section {section_key!r}",
        )

    def _page(self, response: HttpResponse, offset: int, limit: int) -> Page:
        total = response.headers.get("X-Plex-Container-Total-Size")
        return decode(
            response,
            lambda data: parse.page(
                data, source=self.name, offset=offset, limit=limit, header_total=total
            ),
        )
