"""``/api/v1/request`` routes of the Overseerr simulator.

The list filters follow Overseerr's ``routes/request.ts``: ``approved``/``processing``
select APPROVED requests (``processing`` only while the media is not available),
``pending`` PENDING, ``unavailable`` PENDING or APPROVED with media not available,
``failed`` FAILED, ``available`` any request whose media is AVAILABLE. ``sort=added`` is by
id, ``modified`` by ``updatedAt``, newest first (Jellyseerr: ``sortDirection``). Users without
MANAGE_REQUESTS see only their own requests.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from medianest.simulators.overseerr_render import request_json
from medianest.simulators.overseerr_state import (
    APPROVED,
    COMPLETED,
    DECLINED,
    FAILED,
    M_AVAILABLE,
    M_DELETED,
    M_PARTIAL,
    M_PENDING,
    M_PROCESSING,
    M_UNKNOWN,
    MANAGE_REQUESTS,
    PENDING,
    OverseerrState,
    User,
)
from medianest.simulators.overseerr_state import Request as MediaRequest
from medianest.simulators.overseerr_validation import Param, check_body, page_info, paging

NOT_FOUND = {"message": "Request not found."}
FORBIDDEN = {"status": 403, "error": "You do not have permission to access this endpoint"}
_NOT_AVAILABLE = {M_UNKNOWN, M_PENDING, M_PROCESSING, M_PARTIAL}
_BODY = {
    "mediaType": Param(enum=("movie", "tv"), required=True),
    "mediaId": Param("number", required=True),
    "tvdbId": Param("number"),
    "is4k": Param("boolean"),
    "serverId": Param("number"),
    "profileId": Param("number"),
    "rootFolder": Param(),
    "languageProfileId": Param("number"),
}


class RequestRoutes:
    """Handlers of the request endpoints, sharing one :class:`OverseerrState`."""

    def __init__(self, state: OverseerrState) -> None:
        self.state = state

    def _filter(self, name: str) -> tuple[set[int] | None, set[int] | None]:
        every = {PENDING, APPROVED, DECLINED, FAILED, COMPLETED}
        return {
            "approved": ({APPROVED}, None),
            "processing": ({APPROVED}, _NOT_AVAILABLE),
            "pending": ({PENDING}, None),
            "unavailable": ({PENDING, APPROVED}, _NOT_AVAILABLE),
            "failed": ({FAILED}, None),
            "available": (every, {M_AVAILABLE}),
        }.get(name, (every, None))

    def _visible(self, user: User) -> list[MediaRequest]:
        found = list(self.state.requests.values())
        if not user.can(MANAGE_REQUESTS):
            found = [r for r in found if r.requested_by == user.id]
        return found

    async def listing(self, request: Request, user: User) -> Response:
        take, skip = paging(request, 10)
        statuses, media_statuses = self._filter(request.query_params.get("filter", "all"))
        by = request.query_params.get("requestedBy")
        chosen = [
            r
            for r in self._visible(user)
            if (statuses is None or r.status in statuses)
            and (media_statuses is None or self.state.media_of(r).status in media_statuses)
            and (by is None or r.requested_by == int(float(by)))
        ]
        modified = request.query_params.get("sort") == "modified"
        ascending = request.query_params.get("sortDirection") == "asc"
        chosen.sort(
            key=lambda r: (r.updated_at, r.id) if modified else (r.id, 0), reverse=not ascending
        )
        page = chosen[skip : skip + take]
        for found in page:
            self.state.poll(found)
        results = [request_json(self.state, r) for r in page]
        return JSONResponse({"pageInfo": page_info(len(chosen), take, skip), "results": results})

    async def count(self, request: Request, user: User) -> Response:
        mine = self._visible(user)
        media = {r.id: self.state.media_of(r).status for r in mine}
        return JSONResponse(
            {
                "total": len(mine),
                "movie": sum(1 for r in mine if r.media_type == "movie"),
                "tv": sum(1 for r in mine if r.media_type == "tv"),
                "pending": sum(1 for r in mine if r.status == PENDING),
                "approved": sum(1 for r in mine if r.status == APPROVED),
                "declined": sum(1 for r in mine if r.status == DECLINED),
                "processing": sum(
                    1 for r in mine if r.status == APPROVED and media[r.id] in _NOT_AVAILABLE
                ),
                "available": sum(1 for r in mine if media[r.id] == M_AVAILABLE),
            }
        )

    def _find(self, request: Request) -> MediaRequest | None:
        raw = request.path_params["request_id"]
        return self.state.requests.get(int(raw)) if raw.isdigit() else None

    async def get_one(self, request: Request, user: User) -> Response:
        found = self._find(request)
        if found is None:
            return JSONResponse(NOT_FOUND, status_code=404)
        if found.requested_by != user.id and not user.can(MANAGE_REQUESTS):
            return JSONResponse(FORBIDDEN, status_code=403)
        self.state.poll(found)
        return JSONResponse(request_json(self.state, found))

    async def delete(self, request: Request, user: User) -> Response:
        found = self._find(request)
        if found is None:
            return JSONResponse(NOT_FOUND, status_code=404)
        own_pending = found.requested_by == user.id and found.status == PENDING
        if not (own_pending or user.can(MANAGE_REQUESTS)):
            return JSONResponse(
                {"message": "You do not have permission to delete this request."}, status_code=401
            )
        self.state.delete(found)
        return Response(status_code=204)

    async def change(self, request: Request, user: User) -> Response:
        action = request.path_params["action"]
        if action not in ("approve", "decline"):
            detail = "must be equal to one of the allowed values: approve, decline"
            body = {
                "message": f"request/params/status {detail}",
                "errors": [{"path": ".params.status", "message": detail}],
            }
            return JSONResponse(body, status_code=400)
        if not user.can(MANAGE_REQUESTS):
            return JSONResponse(FORBIDDEN, status_code=403)
        found = self._find(request)
        if found is None:
            return JSONResponse(NOT_FOUND, status_code=404)
        self.state.set_status(found, APPROVED if action == "approve" else DECLINED, user)
        return JSONResponse(request_json(self.state, found))

    async def create(self, request: Request, user: User) -> Response:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return JSONResponse({"message": "Unexpected token in JSON"}, status_code=400)
        error = check_body(body, _BODY)
        if error is not None:
            return error
        on_behalf = body.get("userId")
        if isinstance(on_behalf, int) and user.can(MANAGE_REQUESTS):
            user = self.state.users.get(on_behalf, user)
        tv = body["mediaType"] == "tv"
        title = self.state.catalogue.by_tmdb("show" if tv else "movie", int(body["mediaId"]))
        if title is None:
            what = "tv show" if tv else "movie"
            message = f"[TMDB] Failed to fetch {what} details: Request failed with status code 404"
            return JSONResponse({"message": message}, status_code=500)
        media = self.state.media_for(title.uid)
        if not tv:
            if media is not None and media.status not in (M_UNKNOWN, M_DELETED):
                return JSONResponse(
                    {"message": "Request for this media already exists."}, status_code=409
                )
            created = self.state.new_request(user, title, [])
            return JSONResponse(request_json(self.state, created), status_code=201)
        wanted = body.get("seasons")
        if wanted == "all":
            wanted = list(range(1, title.tmdb_season_count + 1))
        if not isinstance(wanted, list):
            message = "Cannot read properties of undefined (reading 'filter')"
            return JSONResponse({"message": message}, status_code=500)
        taken = media.seasons if media is not None else {}
        seasons = [s for s in wanted if isinstance(s, int) and s > 0 and s not in taken]
        if not seasons:
            return JSONResponse({"message": "No seasons available to request"}, status_code=202)
        created = self.state.new_request(user, title, seasons)
        return JSONResponse(request_json(self.state, created), status_code=201)
