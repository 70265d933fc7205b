"""The Uptime Kuma simulator: public status page API and ``/metrics`` (NOTES.md section 4).

=============================================  =================================================
``GET /api/status-page/{slug}``                ``config``, ``publicGroupList``, ``maintenanceList``
                                               and ``incidents`` (v2) or ``incident`` (v1)
``GET /api/status-page/heartbeat/{slug}``      ``heartbeatList`` (last 100 beats per monitor in
                                               v2, 50 in v1) and ``uptimeList`` (24 h ratios)
``GET /metrics``                               Prometheus text behind HTTP Basic auth
=============================================  =================================================

An unknown slug answers 404 ``{"status": "fail", "msg": "Status Page Not Found"}`` in v2
and **nothing at all** in v1 (the 1.23 handler returns without replying); its heartbeats are
200 with empty maps in both. Slugs listed in ``kuma_silent_slugs`` never answer either route
(the connection is held until the client gives up, and reset after ``hang_limit``).
``/metrics`` accepts the configured username and password, or any username with the API key
as password.
"""

from __future__ import annotations

import base64
import binascii
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from medianest.simulators.connection import never_answer
from medianest.simulators.faults import FaultControl
from medianest.simulators.kuma_data import KumaState
from medianest.simulators.kuma_metrics import render_metrics
from medianest.simulators.options import SimulatorOptions
from medianest.simulators.server import SimulatorApp

NOT_FOUND = {"status": "fail", "msg": "Status Page Not Found"}


class NoAnswer(Response):
    """A "response" that never answers: it holds the request, then drops the connection."""

    def __init__(self, limit: float) -> None:
        super().__init__(b"")
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await never_answer(scope, self.limit)


def kuma_error(status: int) -> tuple[str, bytes]:
    return "application/json", json.dumps(
        {"ok": False, "msg": f"Simulated error {status}"}
    ).encode()


def build_kuma(options: SimulatorOptions) -> SimulatorApp[KumaState]:
    """An Uptime Kuma simulator (``kuma_version`` 1 or 2)."""
    state = KumaState(options.seed, options.kuma_version, options.kuma_slug, options.clock)

    def silent(slug: str) -> bool:
        return slug in options.kuma_silent_slugs

    async def status_page(request: Request) -> Response:
        slug = request.path_params["slug"]
        if silent(slug):
            return NoAnswer(options.hang_limit)
        if slug != state.slug:
            if state.version < 2:
                return NoAnswer(options.hang_limit)
            return JSONResponse(NOT_FOUND, status_code=404)
        return JSONResponse(state.status_page())

    async def heartbeat(request: Request) -> Response:
        slug = request.path_params["slug"]
        if silent(slug):
            return NoAnswer(options.hang_limit)
        if slug != state.slug:
            return JSONResponse({"heartbeatList": {}, "uptimeList": {}})
        return JSONResponse(state.heartbeats())

    def authorised(request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if options.kuma_api_key is not None and password == options.kuma_api_key:
            return True
        return user == options.kuma_username and password == options.kuma_password

    async def metrics(request: Request) -> Response:
        if not authorised(request):
            return Response(
                b"", status_code=401, headers={"WWW-Authenticate": 'Basic realm="Uptime Kuma"'}
            )
        return Response(
            render_metrics(state), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    routes = [
        Route("/api/status-page/heartbeat/{slug}", heartbeat),
        Route("/api/status-page/{slug}", status_page),
        Route("/metrics", metrics),
    ]
    return SimulatorApp(
        "kuma",
        Starlette(routes=routes),
        state,
        faults=FaultControl.of(options.faults, options.seed),
        error_renderer=kuma_error,
        record_limit=options.record_requests,
        hang_limit=options.hang_limit,
    )
