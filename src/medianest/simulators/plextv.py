"""The plex.tv simulator: PIN login and account APIs under ``/api/v2`` (NOTES.md section 2).

=========================================  ===================================================
``POST /api/v2/pins[?strong=true]``        201, a new PIN (``strong``: 25-char code, else 4)
``GET /api/v2/pins/{id}``                  the PIN; ``authToken`` null until claimed; 404 once
                                           expired (or polled with another client identifier)
``GET /api/v2/user``                       the account of ``X-Plex-Token``; 401 when unknown
``GET /api/v2/resources``                  a bare JSON array of devices; the simulated PMS is
                                           listed with its own per-account ``accessToken``
=========================================  ===================================================

Every call must identify the client with ``X-Plex-Client-Identifier`` (header or query):
without it plex.tv answers 400 ``{"errors": [{"code": 1000, ...}]}``. Creating a PIN also
needs ``X-Plex-Product`` (the name plex.tv shows the user; the simulator is strict about it
so an adapter cannot forget it). JSON needs ``Accept: application/json``; other requests get
the same data as XML.

A PIN is claimed by the simulated user on its ``pin_claim_after + 1``-th poll (never when
``pin_claim_after`` is None; a test can also call :meth:`PinStore.claim`). It expires
``pin_lifetime`` seconds after creation by the options' clock.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import string
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from medianest.simulators.faults import FaultControl
from medianest.simulators.options import PlexAccount, SimulatorOptions
from medianest.simulators.plextv_data import device_list, user_json
from medianest.simulators.server import SimulatorApp
from medianest.simulators.xmlrender import render, render_list

CLIENT_MISSING = (400, 1000, "X-Plex-Client-Identifier is missing")
PRODUCT_MISSING = (400, 1000, "X-Plex-Product is missing")
NOT_AUTHENTICATED = (401, 1001, "User could not be authenticated")
PIN_NOT_FOUND = (404, 1020, "Code not found or expired")


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pin:
    id: int
    code: str
    product: str
    client_identifier: str
    created_at: float
    expires_at: float
    polls: int = 0
    auth_token: str | None = None

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "code": self.code,
            "product": self.product,
            "trusted": False,
            "qr": f"https://plex.tv/api/v2/pins/qr/{self.code}",
            "clientIdentifier": self.client_identifier,
            "location": {
                "code": "US",
                "european_union_member": False,
                "continent_code": "NA",
                "country": "United States",
                "city": "Springfield",
                "time_zone": "America/Chicago",
                "postal_code": "62701",
                "in_privacy_restricted_country": False,
                "in_privacy_restricted_region": False,
                "subdivisions": "Illinois",
                "coordinates": "39.7990, -89.6440",
            },
            "expiresIn": max(0, math.ceil(self.expires_at - now)),
            "createdAt": iso(self.created_at),
            "expiresAt": iso(self.expires_at),
            "authToken": self.auth_token,
            "newRegistration": None,
        }


@dataclass
class PinStore:
    """The PINs of the simulated plex.tv, and the accounts they may be claimed by."""

    options: SimulatorOptions
    pins: dict[int, Pin] = field(default_factory=dict)
    _rng: random.Random = field(init=False)
    _next_id: int = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.options.seed)
        self._next_id = 700_000_000 + (self.options.seed % 1000) * 1000

    @property
    def accounts(self) -> tuple[PlexAccount, ...]:
        return self.options.plex_accounts()

    def account(self, token: str | None) -> PlexAccount | None:
        return next((a for a in self.accounts if token and a.token == token), None)

    def create(self, *, strong: bool, product: str, client: str) -> Pin:
        now = self.options.clock()
        lifetime = self.options.pin_lifetime or (1800.0 if strong else 900.0)
        if strong:
            code = "".join(self._rng.choices(string.ascii_lowercase + string.digits, k=25))
        else:
            code = "".join(self._rng.choices(string.ascii_uppercase + string.digits, k=4))
        self._next_id += 1
        pin = Pin(self._next_id, code, product, client, now, now + lifetime)
        self.pins[pin.id] = pin
        return pin

    def poll(self, pin_id: int, client: str) -> Pin | None:
        """The PIN as a poll sees it (None: unknown, expired or another client's)."""
        pin = self.pins.get(pin_id)
        if pin is None or pin.client_identifier != client:
            return None
        if self.options.clock() >= pin.expires_at:
            del self.pins[pin_id]
            return None
        pin.polls += 1
        claim_after = self.options.pin_claim_after
        if pin.auth_token is None and claim_after is not None and pin.polls > claim_after:
            pin.auth_token = self.options.pin_token or self.options.token
        return pin

    def claim(self, pin_id: int, token: str | None = None) -> None:
        """Approve a PIN now, as the user behind ``token`` (the owner by default)."""
        self.pins[pin_id].auth_token = token or self.options.pin_token or self.options.token

    def expire(self, pin_id: int) -> None:
        self.pins[pin_id].expires_at = self.options.clock()


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "").lower()


def _param(request: Request, name: str) -> str | None:
    return request.headers.get(name) or request.query_params.get(name) or None


def _answer(request: Request, tag: str, data: Any, status: int = 200) -> Response:
    if _wants_json(request):
        return JSONResponse(data, status_code=status)
    body = render_list(tag, tag[:-1], data) if isinstance(data, list) else render(tag, data)
    return Response(body, status_code=status, media_type="application/xml")


def _error(request: Request, error: tuple[int, int, str]) -> Response:
    status, code, message = error
    item = {"code": code, "message": message, "status": status}
    if _wants_json(request):
        return JSONResponse({"errors": [item]}, status_code=status)
    return Response(
        render("errors", {"error": [item]}), status_code=status, media_type="application/xml"
    )


def plextv_error(status: int) -> tuple[str, bytes]:
    body = {"errors": [{"code": 1000 + status, "message": "simulated error", "status": status}]}
    return "application/json", json.dumps(body).encode()


def build_plextv(options: SimulatorOptions) -> SimulatorApp[PinStore]:
    """A plex.tv simulator for ``options`` (see the module docstring)."""
    store = PinStore(options)

    async def create_pin(request: Request) -> Response:
        client = _param(request, "X-Plex-Client-Identifier")
        if client is None:
            return _error(request, CLIENT_MISSING)
        product = _param(request, "X-Plex-Product")
        if product is None:
            return _error(request, PRODUCT_MISSING)
        strong = request.query_params.get("strong", "").lower() in ("1", "true")
        pin = store.create(strong=strong, product=product, client=client)
        return _answer(request, "pin", pin.to_json(options.clock()), status=201)

    async def get_pin(request: Request) -> Response:
        client = _param(request, "X-Plex-Client-Identifier")
        if client is None:
            return _error(request, CLIENT_MISSING)
        raw = request.path_params["pin_id"]
        pin = store.poll(int(raw), client) if raw.isdigit() else None
        if pin is None:
            return _error(request, PIN_NOT_FOUND)
        return _answer(request, "pin", pin.to_json(options.clock()))

    async def user(request: Request) -> Response:
        if _param(request, "X-Plex-Client-Identifier") is None:
            return _error(request, CLIENT_MISSING)
        account = store.account(_param(request, "X-Plex-Token"))
        if account is None:
            return _error(request, NOT_AUTHENTICATED)
        return _answer(request, "user", user_json(account, options))

    async def resources(request: Request) -> Response:
        if _param(request, "X-Plex-Client-Identifier") is None:
            return _error(request, CLIENT_MISSING)
        account = store.account(_param(request, "X-Plex-Token"))
        if account is None:
            return _error(request, NOT_AUTHENTICATED)
        https = request.query_params.get("includeHttps") == "1"
        relay = request.query_params.get("includeRelay") == "1"
        return _answer(
            request, "resources", device_list(account, options, https=https, relay=relay)
        )

    routes = [
        Route("/api/v2/pins", create_pin, methods=["POST"]),
        Route("/api/v2/pins/{pin_id}", get_pin),
        Route("/api/v2/user", user),
        Route("/api/v2/resources", resources),
    ]
    return SimulatorApp(
        "plextv",
        Starlette(routes=routes),
        store,
        faults=FaultControl.of(options.faults, options.seed),
        error_renderer=plextv_error,
        record_limit=options.record_requests,
        hang_limit=options.hang_limit,
    )
