"""The Overseerr / Jellyseerr adapter: search TMDB, read and manage media requests.

One class serves Overseerr, Jellyseerr and Seerr through ``/api/v1`` with the upstream's
``X-Api-Key`` (user 1, the admin: what it requests is approved at once). The traps it
handles (NOTES.md 5, items 9 to 14): queries are RFC 3986 encoded with ``%20`` by the HTTP
layer and carry only parameters the server's OpenAPI document knows (``sortDirection`` only
for the Jellyseerr family), else 400; a refused key is 403 (``UpstreamAuthError``);
``pageInfo.results`` is the total; an unknown TMDB id on ``/movie|tv/{id}`` is a 500, here
``UpstreamNotFound``; ``POST /request`` is never repeated (409: :class:`RequestExists`, 202:
:class:`NoSeasonsToRequest`), :meth:`OverseerrAdapter.find_request` looks before a retry.
The flavour comes from ``options.flavour``, else the kind (``jellyseerr``), else the version
``/status`` reports (Overseerr is 1.x, the forks 2.x and later).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from medianest import errors
from medianest.config import UpstreamSettings
from medianest.integrations.base import HttpAdapter
from medianest.integrations.http import Query, UpstreamHttp, http_for
from medianest.integrations.models import MediaItem, MediaRequest, MediaType, RequestPage
from medianest.integrations.overseerr_parse import (
    Flavour,
    MediaPage,
    Node,
    OverseerrStatus,
    SearchPage,
    page_total,
    parse_media,
    parse_request,
    parse_search,
    parse_status,
    parse_title,
)

API = "/api/v1"
_DETAILS = {MediaType.MOVIE: f"{API}/movie/{{tmdbId}}", MediaType.TV: f"{API}/tv/{{tmdbId}}"}


class RequestExists(errors.UpstreamConflict):
    """Overseerr already has a request for this media (409 on ``POST /request``)."""


class NoSeasonsToRequest(RequestExists):
    """Every season asked for is already requested or available (202 on ``POST /request``)."""


class OverseerrAdapter(HttpAdapter):
    """Overseerr, Jellyseerr or Seerr behind one upstream (see the module docstring)."""

    kind = "overseerr"

    def __init__(
        self, name: str, http: UpstreamHttp, *, kind: str = "overseerr", flavour: Flavour | None
    ) -> None:
        super().__init__(name, http)
        self.kind = kind
        self._flavour = flavour

    @classmethod
    def from_settings(
        cls, name: str, upstream: UpstreamSettings, *, kind: str = "overseerr", **context: Any
    ) -> Self:
        """Build from ``[upstreams.<name>]``: ``url``, ``api_key``, ``options.flavour``."""
        if upstream.api_key is None:
            raise errors.ConfigurationError(
                f"upstream {name!r} ({kind}) needs an api_key (Settings > General > API Key)",
                problems=[(f"upstreams.{name}.api_key", "missing", "the X-Api-Key of the server")],
            )
        raw = upstream.options.get("flavour", "jellyseerr" if kind == "jellyseerr" else None)
        if raw is not None and raw not in set(Flavour):
            raise errors.ConfigurationError(
                f"upstream {name!r}: unknown flavour {raw!r}",
                problems=[(f"upstreams.{name}.options.flavour", repr(raw), "overseerr|jellyseerr")],
            )
        url = str(upstream.url).rstrip("/").removesuffix(API)
        http = http_for(
            name,
            url,
            upstream.policy,
            headers={"X-Api-Key": upstream.api_key.get_secret_value()},
            registry=context.get("registry"),
            clock=context.get("clock"),
        )
        return cls(name, http, kind=kind, flavour=Flavour(raw) if raw is not None else None)

    async def _get(self, endpoint: str, **kw: Any) -> Node:
        response = await self.http.request("GET", endpoint, **kw)
        return Node.of(self.name, endpoint, response.json())

    async def status(self) -> OverseerrStatus:
        """``GET /status`` (public); remembers the flavour it reveals."""
        found = parse_status(await self._get(f"{API}/status"), self._flavour)
        self._flavour = found.flavour
        return found

    async def flavour(self) -> Flavour:
        """The configured flavour, or the one ``/status`` reveals (asked once)."""
        if self._flavour is None:
            return (await self.status()).flavour
        return self._flavour

    async def probe(self) -> str | None:
        """Checks the key with ``GET /auth/me``, then reports the version from ``/status``."""
        await self.http.request("GET", f"{API}/auth/me")
        return (await self.status()).version

    async def search(self, query: str, *, page: int = 1) -> SearchPage:
        """One page (20 results) of TMDB search; people and collections are left out."""
        if not query.strip() or page < 1:
            raise errors.ValidationError(
                "a search needs some text and a page from 1",
                errors={"query": repr(query), "page": str(page)},
            )
        body = await self._get(f"{API}/search", query={"query": query, "page": page})
        return parse_search(body, self.name)

    async def search_items(self, query: str) -> list[MediaItem]:
        return (await self.search(query)).items

    def _check_type(self, media_type: MediaType) -> None:
        if media_type not in _DETAILS:
            raise errors.ValidationError(
                f"{self.kind} knows movies and tv, not {media_type}",
                errors={"media_type": str(media_type)},
            )

    async def _details(self, media_type: MediaType, tmdb_id: int) -> Node:
        self._check_type(media_type)
        return await self._get(
            _DETAILS[media_type],
            path={"tmdbId": tmdb_id},
            status_errors={500: errors.UpstreamNotFound},
        )

    async def movie(self, tmdb_id: int) -> MediaItem:
        """A movie by TMDB id; ``UpstreamNotFound`` when TMDB does not know it."""
        return parse_title(
            await self._details(MediaType.MOVIE, tmdb_id), self.name, MediaType.MOVIE
        )

    async def tv(self, tmdb_id: int) -> MediaItem:
        """A series by TMDB id (with its TVDB id); ``UpstreamNotFound`` when unknown."""
        return parse_title(await self._details(MediaType.TV, tmdb_id), self.name, MediaType.TV)

    async def media(
        self, *, take: int = 20, skip: int = 0, filter: str | None = None, sort: str | None = None
    ) -> MediaPage:
        """Tracked media (``/media``), newest first; ``total`` counts every match."""
        _check_paging(take, skip)
        query = {"take": take, "skip": skip, "filter": filter, "sort": sort}
        body = await self._get(f"{API}/media", query=query)
        items = [parse_media(info) for info in body.nodes("results")]
        return MediaPage(items=items, total=page_total(body), offset=skip, limit=take)

    async def requests(
        self,
        *,
        take: int = 10,
        skip: int = 0,
        filter: str | None = None,
        sort: str | None = None,
        requested_by: int | None = None,
        sort_direction: Literal["asc", "desc"] | None = None,
    ) -> RequestPage:
        """Requests, newest first; ``total`` is ``pageInfo.results`` (every match).

        ``sort_direction`` is a Jellyseerr-family parameter: Overseerr sorts newest first
        only, so ``"asc"`` is refused for it and ``"desc"`` not sent."""
        _check_paging(take, skip)
        if sort_direction is not None and await self.flavour() is Flavour.OVERSEERR:
            if sort_direction == "asc":
                raise errors.ValidationError(
                    "Overseerr only sorts requests newest first",
                    errors={"sort_direction": "asc is a Jellyseerr parameter"},
                )
            sort_direction = None
        query: Query = {
            "take": take,
            "skip": skip,
            "filter": filter,
            "sort": sort,
            "sortDirection": sort_direction,
            "requestedBy": requested_by,
        }
        body = await self._get(f"{API}/request", query=query)
        items = [parse_request(raw) for raw in body.nodes("results")]
        return RequestPage(items=items, total=page_total(body), offset=skip, limit=take)

    async def request(self, request_id: int) -> MediaRequest:
        """One request; ``UpstreamNotFound`` when there is no such id."""
        body = await self._get(f"{API}/request/{{requestId}}", path={"requestId": request_id})
        return parse_request(body)

    async def create_request(
        self,
        media_type: MediaType,
        tmdb_id: int,
        *,
        seasons: list[int] | Literal["all"] | None = None,
        is_4k: bool = False,
    ) -> MediaRequest:
        """Request a movie, or seasons of a series (``None`` means every season).

        Sent once, never retried: after a lost answer use :meth:`find_request` before
        trying again. Raises :class:`RequestExists` (409) or :class:`NoSeasonsToRequest`.
        """
        self._check_type(media_type)
        body: dict[str, Any] = {"mediaType": media_type.value, "mediaId": tmdb_id, "is4k": is_4k}
        if media_type is MediaType.TV:
            body["seasons"] = "all" if seasons is None else seasons
        elif seasons is not None:
            raise errors.ValidationError("a movie has no seasons", errors={"seasons": "movie"})
        endpoint = f"{API}/request"
        response = await self.http.request(
            "POST",
            endpoint,
            json_body=body,
            ok=(201, 202),
            idempotent=False,
            status_errors={409: RequestExists},
        )
        body_in = Node.of(self.name, endpoint, response.json())
        if response.status == 202:
            detail = body_in.opt_text("message") or "No seasons available to request"
            what = f"{self.name} made no request for {media_type} {tmdb_id}: {detail}"
            raise NoSeasonsToRequest(
                what, service=self.name, endpoint=endpoint, status=202, method="POST"
            )
        return parse_request(body_in)

    async def find_request(
        self,
        media_type: MediaType,
        tmdb_id: int,
        *,
        is_4k: bool = False,
        include_declined: bool = False,
    ) -> MediaRequest | None:
        """The newest request for a title, or None (from ``mediaInfo.requests``).

        Declined requests are skipped unless asked for, since Overseerr accepts a new
        request for the title then. When the details omit ``requests`` the request list is
        paged instead. ``UpstreamNotFound`` when TMDB does not know the title.
        """
        details = await self._details(media_type, tmdb_id)
        ids = parse_title(details, self.name, media_type).ids
        info = details.node("mediaInfo")
        if info is None:
            return None
        if "requests" in info.data:
            found = [parse_request(raw, ids) for raw in info.nodes("requests")]
        else:
            found = await self._scan_requests(media_type, tmdb_id)
        declined = () if include_declined else ("declined",)
        found = [r for r in found if r.is_4k == is_4k and r.status not in declined]
        return max(found, key=lambda r: r.id, default=None)

    async def _scan_requests(self, media_type: MediaType, tmdb_id: int) -> list[MediaRequest]:
        found: list[MediaRequest] = []
        skip = 0
        while True:
            page = await self.requests(take=100, skip=skip)
            found += [r for r in page.items if r.ids.tmdb == tmdb_id and r.type == media_type]
            skip += len(page.items)
            if not page.items or skip >= page.total:
                return found

    async def _change(self, request_id: int, action: str) -> MediaRequest:
        endpoint = f"{API}/request/{{requestId}}/{action}"
        response = await self.http.request(
            "POST", endpoint, path={"requestId": request_id}, idempotent=True
        )
        return parse_request(Node.of(self.name, endpoint, response.json()))

    async def approve(self, request_id: int) -> MediaRequest:
        """Approve (idempotent: approving twice leaves it approved)."""
        return await self._change(request_id, "approve")

    async def decline(self, request_id: int) -> MediaRequest:
        """Decline; the title's media goes back to ``unknown`` if nothing else wants it."""
        return await self._change(request_id, "decline")

    async def delete_request(self, request_id: int, *, missing_ok: bool = False) -> None:
        """Delete a request (204); with ``missing_ok`` an unknown id counts as deleted."""
        await self.http.request(
            "DELETE",
            f"{API}/request/{{requestId}}",
            path={"requestId": request_id},
            ok=(204, 404) if missing_ok else (204,),
        )


def _check_paging(take: int, skip: int) -> None:
    if take < 1 or skip < 0:
        raise errors.ValidationError(
            "take >= 1 and skip >= 0", errors={"take/skip": f"{take}/{skip}"}
        )
