"""A test "browser" for the OIDC redirect flow: aiohttp with a cookie jar, redirects by hand.

It follows every redirect itself (``allow_redirects=False``), fills the provider's login and
consent forms, and stops when a ``Location`` points at the client's redirect URI, returning
that URI's query, exactly what the provider sends the user back to MediaNest with.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp

from medianest.security.oidc import OidcClient, OidcIdentity

_FORM = re.compile(r"<form\b[^>]*\baction=\"([^\"]+)\"[^>]*>(.*?)</form>", re.S | re.I)
_INPUT = re.compile(r"<input\b([^>]*)>", re.I)
_ATTR = re.compile(r"(\w+)=\"([^\"]*)\"")


class BrowserError(AssertionError):
    """The flow went somewhere a browser would not expect."""


@asynccontextmanager
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A session that keeps cookies for IP hosts too (the provider runs on 127.0.0.1)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


def _form(page: str, url: str) -> tuple[str, dict[str, str]]:
    match = _FORM.search(page)
    if match is None:
        raise BrowserError(f"no form on {url}: {page[:500]}")
    fields: dict[str, str] = {}
    for raw in _INPUT.findall(match.group(2)):
        attrs = dict(_ATTR.findall(raw))
        if "name" in attrs:
            fields[attrs["name"]] = html.unescape(attrs.get("value", ""))
    return urljoin(url, html.unescape(match.group(1))), fields


async def sign_in(
    session: aiohttp.ClientSession,
    authorization_url: str,
    redirect_uri: str,
    *,
    login: str,
    password: str = "any-password",
    abort: bool = False,
    max_steps: int = 20,
) -> dict[str, str]:
    """Go from ``authorization_url`` through login and consent to ``redirect_uri``; return
    the query parameters the provider sent back. ``abort`` cancels at the login page."""
    method, url, data = "GET", authorization_url, None
    for _ in range(max_steps):
        async with session.request(method, url, data=data, allow_redirects=False) as response:
            body = await response.text()
            status = response.status
            location = response.headers.get("Location")
        if status in (301, 302, 303, 307, 308):
            assert location is not None
            target = urljoin(url, location)
            if target.startswith(redirect_uri):
                return dict(parse_qsl(urlsplit(target).query))
            method, url, data = "GET", target, None
            continue
        if status != 200:
            raise BrowserError(f"{method} {url} answered {status}: {body[:500]}")
        action, fields = _form(body, url)
        if abort:
            method, url, data = "GET", action.rstrip("/") + "/abort", None
            continue
        if "login" in fields or fields.get("prompt") == "login":
            fields.update(login=login, password=password)
        method, url, data = "POST", action, fields
    raise BrowserError(f"no redirect to {redirect_uri} after {max_steps} steps")


async def callback_query(
    client: OidcClient, redirect_uri: str, *, login: str, return_to: str = "/", abort: bool = False
) -> tuple[dict[str, str], str]:
    """``begin`` a sign-in, play the browser through it; ``(callback query, sealed state)``."""
    url, sealed = await client.begin(return_to)
    async with browser() as session:
        query = await sign_in(session, url, redirect_uri, login=login, abort=abort)
    return query, sealed


async def sign_in_as(client: OidcClient, redirect_uri: str, login: str) -> OidcIdentity:
    """The whole flow: ``begin``, the browser's trip through the provider, ``complete``."""
    query, sealed = await callback_query(client, redirect_uri, login=login)
    return await client.complete(query, sealed)
