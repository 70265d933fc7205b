"""``/api/v1/auth``: sign in with Plex, single sign-on or a password; tokens; sign out.

Browsers get a session cookie (``__Host-mn_session``: HttpOnly, Secure, SameSite=Lax, path
``/``; on plain http to a loopback address ``mn_session`` without Secure, since a ``__Host-``
cookie must be Secure); apps ask for ``"session": "bearer"`` and get a short-lived access
token plus a refresh token (``POST /auth/token``). Every sign-in endpoint is rate limited per
client address (``identity.sign_in_rate_limit``): 429 with ``Retry-After``.

Plex PIN sign-in: ``POST /auth/plex/pin`` answers the PIN, the plex.tv page to approve it and
a ``poll_secret``; the client polls ``GET /auth/plex/pin/{id}`` with that secret in
``X-Pin-Secret`` (PIN ids are small integers: the secret is what makes a poll yours) until
it answers 200 with the session, 202 while pending.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from medianest.api.auth import (
    LOOPBACK_COOKIE,
    SESSION_COOKIE,
    identity,
    is_loopback_http,
    session_cookie,
    signed_in,
)
from medianest.api.v1.deps import integrations
from medianest.config.gateway import RateLimit
from medianest.errors import (
    AuthenticationError,
    NotFoundError,
    RateLimitExceeded,
    UpstreamNotFound,
)
from medianest.gateway.ratelimit import RateIdentity, client_ip
from medianest.security.identity import Identity, SignIn
from medianest.security.roles import Principal
from medianest.security.users_store import User

router = APIRouter(prefix="/auth", tags=["auth"])
Ident = Annotated[Identity, Depends(identity)]
Caller = Annotated[Principal, Depends(signed_in)]
SessionKindField = Literal["cookie", "bearer"]
OIDC_COOKIE = "mn_oidc"
OIDC_PATH = "/api/v1/auth/oidc"


class SignInAnswer(BaseModel):
    """A new session. ``refresh_token`` and ``access_token`` for bearer sessions only."""

    user: User
    session_id: str
    session_expires_at: datetime
    access_token: str | None = None
    access_token_expires_at: datetime | None = None
    refresh_token: str | None = None
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the OAuth token type name
    must_change_password: bool = False


class PasswordLogin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)
    session: SessionKindField = "cookie"


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class Refresh(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=200)


class PinAnswer(BaseModel):
    id: int
    code: str
    auth_url: str
    expires_at: datetime | None
    poll_secret: str


class Me(BaseModel):
    user: User | None
    kind: str
    scopes: list[str]
    session_id: str | None
    must_change_password: bool


async def limit_sign_in(request: Request) -> None:
    """Count a sign-in attempt of the client address; 429 past ``sign_in_rate_limit``.

    A moving window: exact for the small counts of sign-in limits, where an approximate
    window would let a burst straddling a window boundary through."""
    limiter = getattr(request.app.state, "auth_limiter", None)
    if limiter is None:
        return
    settings = request.app.state.settings
    peer = request.client.host if request.client else None
    ip = client_ip(peer, request.headers, settings.gateway.trusted_proxies)
    rule = RateLimit(limit=settings.identity.sign_in_rate_limit, per="ip", strategy="moving_window")
    decision = await limiter.check("sign-in", [rule], RateIdentity(None, None, ip))
    if not decision.allowed:
        raise RateLimitExceeded(
            "too many sign-in attempts from this address; try again later",
            retry_after=decision.retry_after or 60.0,
        )


Limited = Depends(limit_sign_in)


def _answer(request: Request, sign_in: SignIn, kind: SessionKindField) -> JSONResponse:
    body = SignInAnswer(
        user=sign_in.user,
        session_id=sign_in.session.id,
        session_expires_at=sign_in.session.expires_at,
        access_token=sign_in.access_token,
        access_token_expires_at=sign_in.access_expires_at,
        refresh_token=sign_in.session_token if kind == "bearer" else None,
        must_change_password=sign_in.user.must_change_password,
    )
    response = JSONResponse(body.model_dump(mode="json"))
    response.headers["Cache-Control"] = "no-store"
    if kind == "cookie":
        set_session_cookie(request, response, sign_in.session_token)
    return response


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    loopback = is_loopback_http(request)
    response.set_cookie(
        LOOPBACK_COOKIE if loopback else SESSION_COOKIE,
        token,
        max_age=int(request.app.state.settings.identity.session_max_days * 86400),
        path="/",
        secure=not loopback,
        httponly=True,
        samesite="lax",
    )


def _client(request: Request) -> tuple[str | None, str | None]:
    return request.headers.get("user-agent"), request.client.host if request.client else None


@router.get("/providers", summary="Which sign-in methods this hub offers")
async def providers(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    kinds = {settings.upstream_kind(name) for name in settings.upstreams}
    oidc = settings.oidc
    return {
        "plex": "plextv" in kinds and "plex" in kinds,
        "oidc": {"name": oidc.display_name} if oidc is not None else None,
        "password": True,
    }


@router.post("/login", summary="Sign in with a local password", dependencies=[Limited])
async def login(body: PasswordLogin, request: Request, ident: Ident) -> JSONResponse:
    user = await ident.users.authenticate(body.username, body.password)
    agent, ip = _client(request)
    sign_in = await ident.open_session(user, body.session, user_agent=agent, ip=ip)
    return _answer(request, sign_in, body.session)


@router.post("/password", summary="Change your password (other sessions are signed out)")
async def change_password(body: PasswordChange, caller: Caller, ident: Ident) -> User:
    user = await ident.users.change_password(caller.id, body.current_password, body.new_password)
    await ident.sessions.revoke_all(user.id, except_session=caller.session_id)
    return user


@router.post("/token", summary="A new access token for a refresh token", dependencies=[Limited])
async def token(body: Refresh, request: Request, ident: Ident) -> JSONResponse:
    return _answer(request, await ident.refresh(body.refresh_token), "bearer")


@router.post("/logout", status_code=204, summary="Sign out: the session ends everywhere")
async def logout(request: Request, caller: Caller, ident: Ident) -> Response:
    await ident.sign_out(caller)
    response = Response(status_code=204)
    for name in (SESSION_COOKIE, LOOPBACK_COOKIE):
        if name in request.cookies:
            response.delete_cookie(name, path="/", secure=name == SESSION_COOKIE, httponly=True)
    return response


@router.get("/me", summary="Who you are signed in as")
async def me(request: Request, caller: Caller, ident: Ident) -> Me:
    user = await ident.users.get(caller.owner or caller.id) if caller.kind == "user" else None
    return Me(
        user=user,
        kind=caller.kind,
        scopes=sorted(caller.scopes),
        session_id=caller.session_id,
        must_change_password=bool(getattr(request.state, "must_change_password", False)),
    )


def _poll_secret(request: Request, pin_id: int, code: str) -> str:
    secret: bytes = request.app.state.server_secret
    return hmac.new(secret, f"plex-pin:{pin_id}:{code}".encode(), hashlib.sha256).hexdigest()


@router.post("/plex/pin", status_code=201, summary="Start a Plex sign-in", dependencies=[Limited])
async def plex_pin(request: Request) -> PinAnswer:
    plextv = integrations(request).plextv("Plex sign-in")
    pin = await plextv.create_pin()
    return PinAnswer(
        id=pin.id,
        code=pin.code,
        auth_url=plextv.auth_url(pin),
        expires_at=pin.expires_at,
        poll_secret=_poll_secret(request, pin.id, pin.code),
    )


@router.get(
    "/plex/pin/{pin_id}",
    summary="Poll a Plex sign-in: 202 while pending, 200 with the session once approved",
    responses={202: {"description": "Not approved yet"}},
    dependencies=[Limited],
)
async def plex_pin_poll(
    pin_id: int,
    request: Request,
    ident: Ident,
    x_pin_secret: Annotated[str, Header(min_length=1, max_length=128)],
    session: Annotated[SessionKindField, Query()] = "cookie",
) -> JSONResponse:
    source = integrations(request)
    plextv = source.plextv("Plex sign-in")
    try:
        pin = await plextv.poll_pin(pin_id)
    except UpstreamNotFound:
        raise NotFoundError(f"Plex PIN {pin_id} expired or does not exist") from None
    expected = _poll_secret(request, pin.id, pin.code)
    if not hmac.compare_digest(expected, x_pin_secret):
        raise AuthenticationError("this poll secret does not belong to this PIN")
    if pin.auth_token is None:
        pending = {"status": "pending", "expires_at": pin.expires_at}
        return JSONResponse(jsonable(pending), status_code=202, headers={"Retry-After": "1"})
    user = await ident.plex_user(
        pin.auth_token.get_secret_value(), plextv, source.plex("Plex sign-in")
    )
    agent, ip = _client(request)
    return _answer(
        request, await ident.open_session(user, session, user_agent=agent, ip=ip), session
    )


def jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


@router.get("/oidc/login", summary="Start single sign-on", dependencies=[Limited])
async def oidc_login(
    request: Request,
    ident: Ident,
    return_to: Annotated[str, Query(max_length=2000)] = "/",
) -> RedirectResponse:
    if ident.oidc is None:
        raise NotFoundError("single sign-on is not configured on this hub")
    url, sealed = await ident.oidc.begin(return_to)
    response = RedirectResponse(url, status_code=302)
    loopback = is_loopback_http(request)
    response.set_cookie(
        OIDC_COOKIE,
        sealed,
        max_age=int(request.app.state.settings.oidc.login_timeout_seconds),
        path=OIDC_PATH,
        secure=not loopback,
        httponly=True,
        samesite="lax",
    )
    return response


@router.get("/oidc/callback", summary="Where the identity provider sends the browser back")
async def oidc_callback(request: Request, ident: Ident) -> RedirectResponse:
    sealed = request.cookies.get(OIDC_COOKIE)
    if not sealed:
        raise AuthenticationError("this sign-in was not started here, or took too long")
    user, return_to = await ident.oidc_user(dict(request.query_params), sealed)
    agent, ip = _client(request)
    sign_in = await ident.open_session(user, "cookie", user_agent=agent, ip=ip)
    response = RedirectResponse(return_to or "/", status_code=303)
    response.delete_cookie(OIDC_COOKIE, path=OIDC_PATH, secure=not is_loopback_http(request))
    set_session_cookie(request, response, sign_in.session_token)
    return response


__all__ = ["router", "session_cookie"]
