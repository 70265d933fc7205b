"""Request helpers shared by the simulator tests (Plex and Overseerr flavoured)."""

from __future__ import annotations

from typing import Any

import aiohttp
from yarl import URL

from tests.simulators.conftest import Running
from tests.simulators.spec import Contract

TOKEN = "plex-owner-token"

PLEX_HEADERS = {
    "X-Plex-Token": TOKEN,
    "Accept": "application/json",
    "X-Plex-Client-Identifier": "medianest-tests",
    "X-Plex-Product": "MediaNest",
}


async def plex_get(
    http: aiohttp.ClientSession,
    url: str,
    contract: Contract | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """GET a Plex URL as JSON (asserting 200), validated against ``contract`` if given."""
    async with http.get(url, headers={**PLEX_HEADERS, **(headers or {})}) as response:
        assert response.status == 200, await response.text()
        if contract is not None:
            return await contract.check(response)
        return await response.json()


async def plex_page(
    http: aiohttp.ClientSession, url: str, start: int, size: int, *, as_query: bool
) -> tuple[Any, Any]:
    """One page (paging in headers, or in the query when ``as_query``): (headers, body)."""
    if as_query:
        sep = "&" if "?" in url else "?"
        target, extra = f"{url}{sep}X-Plex-Container-Start={start}&X-Plex-Container-Size={size}", {}
    else:
        target = url
        extra = {"X-Plex-Container-Start": str(start), "X-Plex-Container-Size": str(size)}
    async with http.get(target, headers={**PLEX_HEADERS, **extra}) as r:
        assert r.status == 200
        return r.headers.copy(), await r.json()


KEY = {"X-Api-Key": "overseerr-api-key", "Accept": "application/json"}
AS_FRIEND = {**KEY, "X-API-User": "2"}
FORBIDDEN = {"status": 403, "error": "You do not have permission to access this endpoint"}
SIZE = 60
PARTIAL_SHOW = 23  # uid of a library show TMDB knows one more season of


async def overseerr_call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    contract: Contract | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> Any:
    """Call Overseerr with ``url`` sent exactly as written (no re-encoding of the query)."""
    target = URL(url, encoded=True)
    async with http.request(method, target, headers=headers or KEY, json=json) as response:
        assert response.status == status, await response.text()
        if contract is not None:
            return await contract.check(response)
        return await response.json() if response.status != 204 else None


def extra_title(ov: Running, kind: str) -> Any:
    """A title TMDB knows but the library does not have."""
    cat = ov.state.catalogue
    uid = next(u for u in range(cat.size + 1, cat.universe) if cat.kind_of(u) == kind)
    return cat.title(uid)
