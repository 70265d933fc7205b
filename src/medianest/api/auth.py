"""Who is calling: credentials to a :class:`Principal`, and what each endpoint requires.

Every ``/api/v1`` endpoint declares its need with :func:`requires` (a scope from
:mod:`medianest.security.roles`), as a dependency that answers:

* **401** with ``WWW-Authenticate: Bearer realm="medianest"`` when no credential came (plus
  ``error="invalid_token"`` when one came and was refused: bad, expired, revoked, a closed
  session, a disabled user — the body never says which);
* **403** with ``error="insufficient_scope"`` when the caller may not do this, and a 403
  ``password-change-required`` for a local account that still has to change its password
  (only ``/auth/me``, ``/auth/password`` and ``/auth/logout`` are open to it).

Credentials, tried in order: an API key (``Authorization: Bearer mn_...`` or
``X-Api-Key``), a hub access token (``Authorization: Bearer <JWT>``), the session cookie.
A cookie-authenticated unsafe request (POST, PUT, PATCH, DELETE) must come from the hub's own
origin: its ``Origin`` (or, without one, ``Referer``) must be the hub's base URL or the
request's own host, else 403 — the cookie's ``SameSite=Lax`` is the first line, this the
second. With ``allow_anonymous`` a request without credentials acts as a guest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import Request

from medianest.errors import AuthenticationError, AuthorizationError, ConfigurationError
from medianest.security.apikeys import bearer_token, extract_api_key, www_authenticate
from medianest.security.identity import Identity
from medianest.security.roles import ROLE_SCOPES, Principal, Role, grants

SESSION_COOKIE = "__Host-mn_session"
LOOPBACK_COOKIE = "mn_session"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OPEN_BEFORE_PASSWORD_CHANGE = frozenset(
    {"/api/v1/auth/me", "/api/v1/auth/password", "/api/v1/auth/logout"}
)
GUEST = Principal("user", "anonymous", "anonymous", Role.GUEST, ROLE_SCOPES[Role.GUEST])


def identity(request: Request) -> Identity:
    """The hub's :class:`Identity` (``app.state.identity``)."""
    found: Identity | None = getattr(request.app.state, "identity", None)
    if found is None:
        raise ConfigurationError("sign-in is not available: the hub's database is not migrated")
    return found


def is_loopback_http(request: Request) -> bool:
    """Plain http to a loopback host: the only place a session cookie may lack ``Secure``."""
    host = (request.url.hostname or "").strip("[]")
    return request.url.scheme == "http" and host in ("localhost", "127.0.0.1", "::1")


def session_cookie(request: Request) -> str | None:
    token = request.cookies.get(SESSION_COOKIE)
    if token is None and is_loopback_http(request):
        token = request.cookies.get(LOOPBACK_COOKIE)
    return token


def check_origin(request: Request) -> None:
    """Refuse a cookie-authenticated unsafe request from another origin (CSRF)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        raise AuthorizationError(
            "cross-site request refused: an Origin header is required with a session cookie"
        )
    parts = urlsplit(source)
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    allowed = {
        str(request.app.state.base_url).lower(),
        f"{request.url.scheme}://{request.headers.get('host', '')}".lower(),
    }
    if origin not in allowed:
        raise AuthorizationError("cross-site request refused: the Origin is not this hub")


async def authenticate(request: Request) -> Principal | None:
    """The caller, ``None`` when no credential came; AuthenticationError for a bad one."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    principal: Principal | None = None
    must_change = False
    presented = extract_api_key(request.headers)
    bearer = bearer_token(request.headers)
    try:
        if presented is not None:
            principal = await identity(request).from_api_key(presented)
        elif bearer is not None:
            principal, user = await identity(request).from_access_token(bearer)
            must_change = user.must_change_password
        elif (cookie := session_cookie(request)) is not None:
            principal, user = await identity(request).from_session_token(cookie)
            must_change = user.must_change_password
            if request.method in _UNSAFE:
                check_origin(request)
    except AuthenticationError as exc:
        raise AuthenticationError(
            exc.message, challenge=www_authenticate("invalid_token")
        ) from None
    if principal is not None:
        request.state.principal = principal
        request.state.must_change_password = must_change
    return principal


def requires(*needed: str, anonymous: bool = True) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, who must hold every scope in ``needed``. Without
    credentials the caller is a guest when ``allow_anonymous`` is on and ``anonymous``."""

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if principal is None:
            if not (anonymous and getattr(request.app.state, "allow_anonymous", False)):
                raise AuthenticationError(
                    "sign-in required: send a session cookie, an access token or an API key",
                    challenge=www_authenticate(),
                )
            principal = GUEST
        if getattr(request.state, "must_change_password", False) and (
            request.url.path not in _OPEN_BEFORE_PASSWORD_CHANGE
        ):
            raise AuthorizationError(
                "change your password first (POST /api/v1/auth/password)",
                reason="password_change_required",
            )
        missing = [scope for scope in needed if not grants(principal.scopes, scope)]
        if missing and principal is GUEST:
            raise AuthenticationError(
                f"sign-in required: guests may not use this ({', '.join(missing)})",
                challenge=www_authenticate(),
            )
        if missing:
            raise AuthorizationError(
                f"missing scope(s): {', '.join(missing)}",
                challenge=www_authenticate("insufficient_scope", " ".join(needed)),
            )
        return principal

    return dependency


signed_in = requires(anonymous=False)
