"""State and wire helpers of the Plex Media Server simulator.

:class:`PlexState` is what a test holds (``app.state``) to look at or steer the simulated
server: its sections, the tokens it accepts, the active sessions, the scans requested.
The helpers answer the way PMS does: XML unless ``Accept: application/json``, a small HTML
page (``<h1>401 Unauthorized</h1>``) for a missing or wrong token even when JSON was asked
for, and HTML 404s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from medianest.simulators.data import Catalogue, Kind
from medianest.simulators.options import SimulatorOptions
from medianest.simulators.plex_items import Section
from medianest.simulators.seeds import STEP, T0, hex24, mix
from medianest.simulators.xmlrender import render

PMS_VERSION = "1.41.3.9314-a0bfb8370"
SCAN_SECONDS = 2.0

_PAGES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def html_error(status: int) -> tuple[str, bytes]:
    """PMS's error page for ``status`` as (content type, body)."""
    reason = _PAGES.get(status, "Error")
    page = (
        f"<html><head><title>{reason}</title></head><body><h1>{status} {reason}</h1></body></html>"
    )
    return "text/html", page.encode()


def error_response(status: int) -> Response:
    ctype, body = html_error(status)
    return HTMLResponse(body, status_code=status, media_type=ctype)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "").lower()


def respond(
    request: Request, container: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    """``{"MediaContainer": container}`` as JSON, or the same data as XML."""
    if wants_json(request):
        return JSONResponse({"MediaContainer": container}, headers=headers)
    return Response(render("MediaContainer", container), media_type="text/xml", headers=headers)


@dataclass
class ScanRequest:
    section: str
    force: bool
    path: str | None
    at: float


@dataclass
class PlexState:
    """The live state of one simulated PMS."""

    catalogue: Catalogue
    machine_identifier: str
    friendly_name: str
    owner: str
    admin_tokens: frozenset[str]
    user_tokens: frozenset[str]
    clock: Callable[[], float]
    sessions: int = 1
    max_page_size: int | None = None
    sections: list[Section] = field(default_factory=list)
    scans: list[ScanRequest] = field(default_factory=list)

    @classmethod
    def from_options(cls, options: SimulatorOptions) -> PlexState:
        accounts = options.plex_accounts()
        owner = next((a for a in accounts if a.access == "owner"), None)
        admin = {options.token} | ({owner.plex_server_token or ""} if owner else set())
        shared = {a.plex_server_token for a in accounts if a.access == "shared"}
        state = cls(
            catalogue=Catalogue(options.seed, options.size),
            machine_identifier=options.plex_machine_identifier(),
            friendly_name=options.friendly_name,
            owner=owner.username if owner else "owner",
            admin_tokens=frozenset(t for t in admin if t),
            user_tokens=frozenset(t for t in shared if t),
            clock=options.clock,
            sessions=options.sessions,
            max_page_size=options.max_page_size,
        )
        state.sections = state._default_sections(options.seed)
        return state

    def _default_sections(self, seed: int) -> list[Section]:
        scanned = T0 + self.catalogue.size * STEP + 3600
        created = T0 - 86_400

        def uuid(key: int) -> str:
            h = hex24(mix(seed, key, 77))
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:24]}{h[:8]}"

        def make(
            key: int, title: str, kind: Kind | None, agent: str, scanner: str, path: str
        ) -> Section:
            type_: Kind = kind or "movie"
            return Section(
                str(key), title, type_, kind, agent, scanner, uuid(key), path, created, scanned
            )

        return [
            make(1, "Movies", "movie", "tv.plex.agents.movie", "Plex Movie", "/data/movies"),
            make(2, "TV Shows", "show", "tv.plex.agents.series", "Plex TV Series", "/data/tv"),
            make(
                3,
                "Home Videos",
                None,
                "com.plexapp.agents.none",
                "Plex Video Files Scanner",
                "/data/home-videos",
            ),
        ]

    def section(self, key: str) -> Section | None:
        self._finish_scans()
        return next((s for s in self.sections if s.key == key), None)

    def section_of(self, kind: str) -> Section:
        return next(s for s in self.sections if s.kind == kind)

    def all_sections(self) -> list[Section]:
        self._finish_scans()
        return list(self.sections)

    def start_scan(self, section: Section, *, force: bool, path: str | None) -> None:
        self.scans.append(ScanRequest(section.key, force, path, self.clock()))
        section.refreshing = True

    def cancel_scan(self, section: Section) -> None:
        section.refreshing = False

    def _finish_scans(self) -> None:
        now = self.clock()
        for section in self.sections:
            started = [s.at for s in self.scans if s.section == section.key]
            if section.refreshing and started and now - started[-1] >= SCAN_SECONDS:
                section.refreshing = False

    def token_of(self, request: Request) -> str | None:
        return request.headers.get("x-plex-token") or request.query_params.get("X-Plex-Token")

    def authorised(self, request: Request, *, admin: bool = False) -> bool:
        token = self.token_of(request)
        if token in self.admin_tokens:
            return True
        return not admin and token in self.user_tokens
