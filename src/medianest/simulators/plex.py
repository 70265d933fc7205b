"""The Plex Media Server simulator (NOTES.md section 1).

Routes (all but ``/identity`` need ``X-Plex-Token`` as a header or query parameter; the
owner's token, or a shared user's per-server token for the read-only ones):

======================================================  ===========================================
``GET /identity``                                       machineIdentifier, version, claimed
``GET /``                                               server info (admin token)
``GET /library/sections``, ``/library/sections/all``    the sections: Movies (1), TV Shows (2),
                                                        Home Videos (3, always empty)
``GET /library/sections/{key}/all``                     paged contents; ``type``, ``sort``,
                                                        ``includeGuids``, date filters, ``limit``
``GET|POST|DELETE /library/sections/{key}/refresh``     start (``force``, ``path``) or cancel a scan
``GET /library/metadata/{keys}``                        one or more (comma-separated) items
``GET /library/metadata/{key}/children``                seasons of a show, episodes of a season
``GET /library/recentlyAdded``                          newest movies and seasons, paged
``GET /hubs/search?query=&limit=&sectionId=``           Movies and Shows hubs
``GET /status/sessions``                                active playback (admin token)
======================================================  ===========================================

Everything answers XML unless the request has ``Accept: application/json``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from medianest.simulators.faults import FaultControl
from medianest.simulators.options import SimulatorOptions
from medianest.simulators.plex_items import JSON, with_section
from medianest.simulators.plex_library import (
    PlexItem,
    children,
    hub_search,
    recently_added,
    render_item,
    section_all,
    section_of_item,
)
from medianest.simulators.plex_state import (
    PMS_VERSION,
    PlexState,
    error_response,
    html_error,
    respond,
)
from medianest.simulators.server import SimulatorApp

Endpoint = Callable[[Request], Awaitable[Response]]


def build_plex(options: SimulatorOptions) -> SimulatorApp[PlexState]:
    """A Plex Media Server simulator for ``options`` (see the module docstring)."""
    state = PlexState.from_options(options)

    def guarded(handler: Endpoint, *, admin: bool = False) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if not state.authorised(request, admin=admin):
                return error_response(401)
            return await handler(request)

        return endpoint

    async def identity(request: Request) -> Response:
        return respond(
            request,
            {
                "size": 0,
                "claimed": True,
                "machineIdentifier": state.machine_identifier,
                "version": PMS_VERSION,
            },
        )

    async def root(request: Request) -> Response:
        directories = [
            {"count": 1, "key": key, "title": key}
            for key in (
                "activities",
                "butler",
                "channels",
                "clients",
                "hubs",
                "library",
                "playlists",
            )
        ]
        return respond(
            request,
            {
                "size": len(directories),
                "allowCameraUpload": False,
                "allowSync": True,
                "claimed": True,
                "friendlyName": state.friendly_name,
                "machineIdentifier": state.machine_identifier,
                "myPlex": True,
                "myPlexSigninState": "ok",
                "myPlexSubscription": True,
                "myPlexUsername": state.owner,
                "platform": "Linux",
                "platformVersion": "6.1",
                "transcoderActiveVideoSessions": 0,
                "transcoderAudio": True,
                "transcoderVideo": True,
                "updatedAt": state.sections[0].scanned_at,
                "version": PMS_VERSION,
                "Directory": directories,
            },
        )

    async def sections(request: Request) -> Response:
        directories = [s.directory() for s in state.all_sections()]
        return respond(
            request,
            {
                "size": len(directories),
                "allowSync": False,
                "title1": "Plex Library",
                "identifier": "com.plexapp.plugins.library",
                "Directory": directories,
            },
        )

    async def section_contents(request: Request) -> Response:
        section = state.section(request.path_params["key"])
        if section is None:
            return error_response(404)
        return section_all(request, state, section)

    async def refresh(request: Request) -> Response:
        section = state.section(request.path_params["key"])
        if section is None:
            return error_response(404)
        if request.method == "DELETE":
            state.cancel_scan(section)
        else:
            force = request.query_params.get("force") == "1"
            state.start_scan(section, force=force, path=request.query_params.get("path"))
        return Response(b"", status_code=200)

    def lookup(keys: str) -> list[PlexItem]:
        found = (state.catalogue.by_rating_key(k.strip()) for k in keys.split(","))
        return [item for item in found if item is not None]

    async def metadata(request: Request) -> Response:
        items = lookup(request.path_params["keys"])
        if not items:
            return error_response(404)
        first = section_of_item(state, items[0])
        rendered = [
            with_section(
                render_item(state.catalogue, i, guids=True, detail=True), section_of_item(state, i)
            )
            for i in items
        ]
        container = first.hoisted() | {"size": len(rendered), "Metadata": rendered}
        for key in ("art", "thumb", "title1", "viewGroup"):
            container.pop(key)
        return respond(request, container)

    async def metadata_children(request: Request) -> Response:
        items = lookup(request.path_params["key"])
        if len(items) != 1:
            return error_response(404)
        return children(request, state, items[0])

    async def recent(request: Request) -> Response:
        return recently_added(request, state)

    async def search(request: Request) -> Response:
        return hub_search(request, state)

    async def sessions(request: Request) -> Response:
        found = (_session(state, i) for i in range(state.sessions))
        items = [item for item in found if item is not None]
        container: JSON = {"size": len(items)}
        if items:
            container["Metadata"] = items
        return respond(request, container)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return error_response(status)

    routes = [
        Route("/identity", identity),
        Route("/", guarded(root, admin=True)),
        Route("/library/sections", guarded(sections)),
        Route("/library/sections/all", guarded(sections)),
        Route("/library/sections/{key}/all", guarded(section_contents)),
        Route(
            "/library/sections/{key}/refresh",
            guarded(refresh, admin=True),
            methods=["GET", "POST", "DELETE"],
        ),
        Route("/library/metadata/{key}/children", guarded(metadata_children)),
        Route("/library/metadata/{keys}", guarded(metadata)),
        Route("/library/recentlyAdded", guarded(recent)),
        Route("/hubs/search", guarded(search)),
        Route("/status/sessions", guarded(sessions, admin=True)),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    return SimulatorApp(
        "plex",
        app,
        state,
        faults=FaultControl.of(options.faults, options.seed),
        error_renderer=html_error,
        record_limit=options.record_requests,
        hang_limit=options.hang_limit,
    )


def _session(state: PlexState, index: int) -> JSON | None:
    """The ``index``-th active playback, alternately an episode and a movie; None if empty."""
    cat = state.catalogue
    item: PlexItem
    if cat.episode_total and (index % 2 == 0 or not cat.movie_count):
        item = cat.episode_at((index * 7) % cat.episode_total)
    elif cat.movie_count:
        item = cat.library("movie", (index * 11) % cat.movie_count)
    else:
        return None
    section = section_of_item(state, item)
    out = with_section(render_item(cat, item, guids=False), section)
    out["librarySectionID"] = str(section.id)  # sessions send it as a string
    duration = int(out.get("duration", 0))
    out.update(
        sessionKey=str(index + 1),
        viewOffset=duration // 3,
        User={"id": "1", "title": state.owner, "thumb": "https://plex.tv/users/1/avatar"},
        Player={
            "address": f"192.168.1.{20 + index}",
            "machineIdentifier": f"player-{index + 1}",
            "model": "standalone",
            "platform": "Chrome",
            "platformVersion": "120.0",
            "product": "Plex Web",
            "state": ("playing", "paused", "buffering")[index % 3],
            "title": f"Browser {index + 1}",
            "vendor": "",
            "version": "4.120.0",
            "local": index % 2 == 0,
            "relayed": False,
            "secure": True,
            "userID": 1,
        },
        Session={
            "id": f"session-{index + 1}",
            "bandwidth": 8000 + 1000 * index,
            "location": "lan" if index % 2 == 0 else "wan",
        },
    )
    return out
