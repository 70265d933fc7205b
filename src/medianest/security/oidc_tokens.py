"""The provider's token endpoint (code exchange, refresh) and what a sign-in yields.

Client authentication follows ``oidc.token_endpoint_auth_method``; with ``auto`` a client
without a secret is public (``none``: PKCE alone protects the code), and one with a secret
uses ``client_secret_basic`` when the provider supports it, else ``client_secret_post``.
Refusals (``invalid_grant``, ``invalid_client``...) become AuthenticationError with a message
for the user; the details for the administrator go to the log.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from medianest.config.oidc import OidcRole, OidcSettings
from medianest.errors import AuthenticationError, UpstreamContractError
from medianest.observability import get_logger
from medianest.security.oidc_provider import SERVICE, HttpAnswer, ProviderHttp, ProviderMetadata

_log = get_logger("medianest.security.oidc")
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """A successful token endpoint answer (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3)."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    id_token: str | None = field(repr=False)
    expires_at: float | None
    scope: str | None


@dataclass(frozen=True, slots=True)
class OidcIdentity:
    """Who signed in, as the provider vouches: ``(issuer, subject)`` is the stable id."""

    issuer: str
    subject: str
    username: str
    email: str | None
    name: str | None
    role: OidcRole
    return_to: str
    claims: Mapping[str, Any] = field(repr=False)
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float | None
    id_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class OidcTokens:
    """The result of a refresh. ``claims`` and ``role`` are set when a new ID token came."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float | None
    id_token: str | None = field(repr=False)
    claims: Mapping[str, Any] | None = field(repr=False)
    role: OidcRole | None


def basic_credentials(client_id: str, secret: str) -> str:
    """An ``Authorization: Basic`` value per RFC 6749 §2.3.1: both parts form-encoded first."""
    return aiohttp.encode_basic_auth(quote(client_id, safe=""), quote(secret, safe=""))


def auth_method(settings: OidcSettings, metadata: ProviderMetadata) -> str:
    """The client authentication method to use with this provider."""
    if settings.token_endpoint_auth_method in ("client_secret_basic", "client_secret_post", "none"):
        return settings.token_endpoint_auth_method
    if settings.client_secret is None:
        return "none"
    supported = metadata.token_endpoint_auth_methods
    if "client_secret_basic" not in supported and "client_secret_post" in supported:
        return "client_secret_post"
    return "client_secret_basic"


class TokenEndpoint:
    """One provider's token endpoint as seen by this client."""

    def __init__(
        self,
        http: ProviderHttp,
        metadata: ProviderMetadata,
        settings: OidcSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._metadata = metadata
        self._settings = settings
        self._clock = clock

    async def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str
    ) -> TokenResponse:
        """Trade an authorization code (and its PKCE verifier) for tokens."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        return await self._post(form, grant="authorization_code")

    async def refresh(self, refresh_token: str) -> TokenResponse:
        """Trade a refresh token for fresh tokens (the provider may rotate it)."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return await self._post(form, grant="refresh_token")

    async def _post(self, form: dict[str, str], *, grant: str) -> TokenResponse:
        headers: dict[str, str] = {}
        method = auth_method(self._settings, self._metadata)
        client_id = self._settings.client_id
        secret = self._settings.client_secret
        if method == "client_secret_basic" and secret is not None:
            headers["Authorization"] = basic_credentials(client_id, secret.get_secret_value())
        elif method == "client_secret_post" and secret is not None:
            form = {**form, "client_id": client_id, "client_secret": secret.get_secret_value()}
        else:
            form = {**form, "client_id": client_id}
        answer = await self._http.post_form(
            self._metadata.token_endpoint, form, endpoint="token", headers=headers
        )
        if answer.status != 200:
            raise _refusal(answer, grant)
        return self._parse(answer)

    def _parse(self, answer: HttpAnswer) -> TokenResponse:
        body = answer.body
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise UpstreamContractError(
                "the identity provider's token answer has no access_token",
                service=SERVICE,
                endpoint="token",
                status=answer.status,
            )
        token_type = body.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise AuthenticationError(
                "the identity provider issued a token type MediaNest cannot use",
                reason="token_type",
            )
        expires_in = body.get("expires_in")
        expires_at = (
            self._clock() + float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else None
        )
        return TokenResponse(
            access_token=body["access_token"],
            refresh_token=_text(body.get("refresh_token")),
            id_token=_text(body.get("id_token")),
            expires_at=expires_at,
            scope=_text(body.get("scope")),
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _refusal(answer: HttpAnswer, grant: str) -> AuthenticationError:
    body = answer.body if isinstance(answer.body, dict) else {}
    raw = body.get("error")
    code = raw if isinstance(raw, str) and _ERROR_CODE.match(raw) else "unknown_error"
    _log.warning(
        "OIDC token request refused",
        grant=grant,
        status=answer.status,
        error=code,
        description=str(body.get("error_description", ""))[:200],
    )
    if code == "invalid_grant" and grant == "refresh_token":
        message = "your single sign-on session has ended; please sign in again"
    elif code == "invalid_grant":
        message = "the sign-in code is invalid, expired or already used; please sign in again"
    elif code in ("invalid_client", "unauthorized_client"):
        message = "the identity provider does not accept MediaNest's client credentials"
    else:
        message = f"the identity provider refused the token request ({code})"
    return AuthenticationError(message, reason="token_refused", provider_error=code)
