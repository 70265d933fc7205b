"""The Overseerr / Jellyseerr simulator (NOTES.md section 3), one app with a ``flavour``.

===================================================  =========================================
``GET /api/v1/status``                               public; version differs by flavour
``GET /api/v1/auth/me``                              the acting user
``GET /api/v1/search?query=&page=&language=``        TMDB-style pages of 20; ``tmdb:``/``imdb:``/
                                                     ``tvdb:`` id lookups; strict encoding
``GET /api/v1/movie/{id}``, ``/api/v1/tv/{id}``      details; an unknown TMDB id answers **500**
``GET /api/v1/media?take=&skip=&filter=&sort=``      tracked media (default take 20)
``GET /api/v1/request?take=&skip=&filter=&sort=``    requests, newest first (default take 10)
``POST /api/v1/request``                             201; 409 duplicate; 202 no seasons left
``GET /api/v1/request/count``                        counts by status
``GET|DELETE /api/v1/request/{id}``                  one request; 404 ``Request not found.``
``POST /api/v1/request/{id}/approve|decline``        needs MANAGE_REQUESTS
===================================================  =========================================

Auth is ``X-Api-Key`` (acting as user 1, the admin, or as ``X-API-User``); without it, or
with a wrong one, **403** ``{"status": 403, "error": ...}``. Request validation runs first
(:mod:`medianest.simulators.overseerr_validation`). Jellyseerr also accepts
``sortDirection`` on ``/request``; Overseerr rejects it as an unknown parameter.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from medianest.simulators.catalogue_items import Title
from medianest.simulators.data import Catalogue, Kind
from medianest.simulators.faults import FaultControl
from medianest.simulators.options import SimulatorOptions
from medianest.simulators.overseerr_render import details_json, media_json, search_result, user_json
from medianest.simulators.overseerr_requests import RequestRoutes
from medianest.simulators.overseerr_state import OverseerrState, User
from medianest.simulators.overseerr_validation import Param, check_query, page_info, paging
from medianest.simulators.server import SimulatorApp

VERSIONS = {"overseerr": "1.33.2", "jellyseerr": "2.3.0"}
FORBIDDEN = {"status": 403, "error": "You do not have permission to access this endpoint"}
MEDIA_FILTERS: dict[str, set[int] | None] = {
    "all": None,
    "available": {5},
    "partial": {4},
    "allavailable": {4, 5},
    "processing": {3},
    "pending": {2},
}
Handler = Callable[[Request, User], Awaitable[Response]]


def _lookup(cat: Catalogue, kind: str, value: str) -> Title | None:
    """The ``tmdb:``/``imdb:``/``tvdb:`` id searches Overseerr resolves to one title."""
    if kind == "imdb":
        return cat.by_imdb(value)
    if not value.isdigit():
        return None
    if kind == "tvdb":
        return cat.by_tvdb(int(value))
    return cat.by_tmdb("movie", int(value)) or cat.by_tmdb("show", int(value))


def overseerr_error(status: int) -> tuple[str, bytes]:
    return "application/json", json.dumps({"message": f"Simulated error {status}"}).encode()


def build_overseerr(options: SimulatorOptions) -> SimulatorApp[OverseerrState]:
    """An Overseerr (or, with ``flavour="jellyseerr"``, Jellyseerr) simulator."""
    state = OverseerrState(options)

    def actor(request: Request) -> User | None:
        if request.headers.get("x-api-key") != options.api_key:
            return None
        raw = request.headers.get("x-api-user", "1")
        return state.users.get(int(raw)) if raw.isdigit() else None

    def protected(
        handler: Handler, params: dict[str, Param] | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            error = check_query(request, params or {})
            if error is not None:
                return error
            user = actor(request)
            if user is None:
                return JSONResponse(FORBIDDEN, status_code=403)
            return await handler(request, user)

        return endpoint

    async def status(request: Request) -> Response:
        error = check_query(request, {})
        if error is not None:
            return error
        version = VERSIONS[state.flavour]
        return JSONResponse(
            {
                "version": version,
                "commitTag": f"v{version}",
                "updateAvailable": False,
                "commitsBehind": 0,
                "restartRequired": False,
            }
        )

    async def me(request: Request, user: User) -> Response:
        return JSONResponse(user_json(state, user))

    async def search(request: Request, user: User) -> Response:
        query = request.query_params["query"]
        page_raw = request.query_params.get("page")
        page = max(int(float(page_raw)), 1) if page_raw else 1
        cat = state.catalogue
        kind, _, value = query.partition(":")
        if value and kind in ("tmdb", "imdb", "tvdb"):
            found = _lookup(cat, kind, value)
            uids = [found.uid] if found else []
        else:
            uids = list(cat.search(query))
        chosen = uids[(page - 1) * 20 : page * 20]
        return JSONResponse(
            {
                "page": page,
                "totalPages": -(-len(uids) // 20),
                "totalResults": len(uids),
                "results": [search_result(state, cat.title(uid)) for uid in chosen],
            }
        )

    def details(kind: Kind, message: str) -> Handler:
        async def handler(request: Request, user: User) -> Response:
            title = state.catalogue.by_tmdb(kind, int(request.path_params["tmdb_id"]))
            if title is None:
                return JSONResponse({"message": message}, status_code=500)
            media = state.media_for(title.uid)
            if media is not None:
                for request_id in list(media.requests):
                    if request_id in state.requests:
                        state.poll(state.requests[request_id])
            return JSONResponse(details_json(state, title))

        return handler

    def numeric_path(handler: Handler, name: str) -> Handler:
        async def checked(request: Request, user: User) -> Response:
            raw = request.path_params["tmdb_id"]
            if not raw.isdigit():
                return JSONResponse(
                    {
                        "message": f"request/params/{name} must be number",
                        "errors": [{"path": f".params.{name}", "message": "must be number"}],
                    },
                    status_code=400,
                )
            return await handler(request, user)

        return checked

    async def media_list(request: Request, user: User) -> Response:
        take, skip = paging(request, 20)
        status_filter = MEDIA_FILTERS[request.query_params.get("filter", "all")]
        total, items = state.media_listing(status_filter, request.query_params.get("sort", "added"))
        results = []
        for index, media in enumerate(items):
            if index >= skip + take:
                break
            if index >= skip:
                results.append(media_json(state, media, with_requests=True))
        return JSONResponse({"pageInfo": page_info(total, take, skip), "results": results})

    async def not_found(request: Request, exc: Exception) -> Response:
        status_code = exc.status_code if isinstance(exc, HTTPException) else 404
        text = "not found" if status_code == 404 else f"{request.method} method not allowed"
        body = {"message": text, "errors": [{"path": request.url.path, "message": text}]}
        return JSONResponse(body, status_code=status_code)

    requests = RequestRoutes(state)
    number = Param("number")
    language = {"language": Param()}
    list_params = {
        "take": number,
        "skip": number,
        "filter": Param(
            enum=("all", "approved", "available", "pending", "processing", "unavailable", "failed")
        ),
        "sort": Param(enum=("added", "modified")),
        "requestedBy": number,
    }
    if state.flavour == "jellyseerr":
        list_params["sortDirection"] = Param(enum=("asc", "desc"))
    media_params = {
        "take": number,
        "skip": number,
        "filter": Param(enum=tuple(MEDIA_FILTERS)),
        "sort": Param(enum=("added", "modified", "mediaAdded")),
    }
    search_params = {"query": Param(required=True), "page": number, "language": Param()}
    routes = [
        Route("/api/v1/status", status),
        Route("/api/v1/auth/me", protected(me)),
        Route("/api/v1/search", protected(search, search_params)),
        Route(
            "/api/v1/movie/{tmdb_id}",
            protected(
                numeric_path(details("movie", "Unable to retrieve movie."), "movieId"), language
            ),
        ),
        Route(
            "/api/v1/tv/{tmdb_id}",
            protected(
                numeric_path(details("show", "Unable to retrieve series."), "tvId"), language
            ),
        ),
        Route("/api/v1/media", protected(media_list, media_params)),
        Route("/api/v1/request", protected(requests.listing, list_params)),
        Route("/api/v1/request", protected(requests.create), methods=["POST"]),
        Route("/api/v1/request/count", protected(requests.count)),
        Route("/api/v1/request/{request_id}", protected(requests.get_one)),
        Route("/api/v1/request/{request_id}", protected(requests.delete), methods=["DELETE"]),
        Route(
            "/api/v1/request/{request_id}/{action}", protected(requests.change), methods=["POST"]
        ),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    return SimulatorApp(
        state.flavour,
        app,
        state,
        faults=FaultControl.of(options.faults, options.seed),
        error_renderer=overseerr_error,
        record_limit=options.record_requests,
        hang_limit=options.hang_limit,
    )
