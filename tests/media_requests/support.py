"""What the media request tests share: signing in, waiting, and looking inside Overseerr."""

from __future__ import annotations

from typing import Any

import aiohttp

from medianest.simulators import SimulatorApp
from medianest.simulators.data import Catalogue

OWNER_TOKEN = "plex-owner-token"
FRIEND_TOKEN = "plex-friend-token"
SEED, SIZE = 3, 60
"""The simulated catalogue of these tests."""


async def send(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.request(method, url, allow_redirects=False, **kw) as response:
        return response.status, await response.json(content_type=None), response


async def bearer_sign_in(
    http: aiohttp.ClientSession, hub_url: str, plextv: SimulatorApp[Any], token: str
) -> dict[str, str]:
    """Sign in with Plex (the simulated plex.tv approves the PIN for ``token``); the
    ``Authorization`` header of the session. The first person to sign in is the admin."""
    status, pin, _ = await send(http, "POST", f"{hub_url}/api/v1/auth/plex/pin")
    assert status == 201, pin
    plextv.state.claim(pin["id"], token)
    poll = f"{hub_url}/api/v1/auth/plex/pin/{pin['id']}?session=bearer"
    status, body, _ = await send(http, "GET", poll, headers={"X-Pin-Secret": pin["poll_secret"]})
    assert status == 200, body
    return {"Authorization": f"Bearer {body['access_token']}"}


def requestable_movies(count: int, *, seed: int = SEED, size: int = SIZE) -> list[int]:
    """TMDB ids of movies TMDB knows but the library does not have (so Overseerr takes a
    request for them), in the catalogue the simulators build from ``seed`` and ``size``."""
    catalogue = Catalogue(seed, size)
    found = [
        catalogue.title(uid).tmdb_id
        for uid in range(catalogue.size, catalogue.universe)
        if catalogue.title(uid).kind == "movie"
    ]
    assert len(found) >= count, "the simulated catalogue is too small"
    return found[:count]


def overseerr_requests(overseerr: SimulatorApp[Any]) -> dict[int, list[int]]:
    """The requests the Overseerr simulator holds: request ids by TMDB id."""
    state = overseerr.state
    held: dict[int, list[int]] = {}
    for request in state.requests.values():
        uid = state.media_of(request).uid
        held.setdefault(state.catalogue.title(uid).tmdb_id, []).append(request.id)
    return held
