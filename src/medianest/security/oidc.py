"""OpenID Connect single sign-on: MediaNest as relying party of Authentik, Authelia, Keycloak.

The flow is the authorization code flow with PKCE (S256), ``state`` and ``nonce``::

    url, sealed = await client.begin("/catalog")      # keep `sealed` in a short-lived cookie,
                                                      # redirect the browser to `url`
    identity = await client.complete(callback_query, sealed)   # at the redirect URI
    tokens = await client.refresh(identity.refresh_token, subject=identity.subject)

:class:`OidcClient` reads the provider's discovery document (cached, its ``issuer`` must be
the configured one exactly), keeps the JWKS cached with a TTL and refetches it on an unknown
``kid`` (rate-limited, single-flight), exchanges the code with the ``code_verifier``,
validates the ID token (:mod:`~medianest.security.oidc_idtoken`), optionally merges the
userinfo claims, and maps a claim to a role.

Errors: everything about the sign-in itself (state, refused code, bad ID token, no role) is
an :class:`~medianest.errors.AuthenticationError` whose message may be shown to the user; a
provider that is down or answers nonsense raises an
:class:`~medianest.errors.UpstreamError` (``service="oidc"``: ``UpstreamUnavailable``,
``UpstreamTimeout``, ``UpstreamContractError``); a discovery document that does not fit the
configuration raises :class:`~medianest.errors.ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from joserfc.jwk import Key

from medianest.config.oidc import OidcRole, OidcSettings
from medianest.errors import AuthenticationError, ConfigurationError, MediaNestError
from medianest.observability import get_logger
from medianest.security.oidc_idtoken import (
    PROTOCOL_CLAIMS,
    IdTokenRules,
    map_role,
    text_claim,
    validate_id_token,
)
from medianest.security.oidc_keys import JwksCache, parse_jwks
from medianest.security.oidc_provider import ProviderHttp, ProviderMetadata, discovery_url
from medianest.security.oidc_state import LoginState, StateSealer, safe_return_to
from medianest.security.oidc_tokens import OidcIdentity, OidcTokens, TokenEndpoint, TokenResponse

_log = get_logger("medianest.security.oidc")

__all__ = ["OidcClient", "OidcIdentity", "OidcTokens"]
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")


class OidcClient:
    """The relying party for one provider. ``secret`` (the server secret) keys the sealed
    login state; ``session`` is used as given (the caller closes it), else one is owned.
    ``redirect_uri`` overrides ``settings.redirect_uri``; one of them is required."""

    def __init__(
        self,
        settings: OidcSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        secret: bytes,
        redirect_uri: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        uri = redirect_uri or settings.redirect_uri
        if not uri:
            raise ConfigurationError(
                "OIDC needs a redirect URI", problems=[("oidc.redirect_uri", "None", "a URL")]
            )
        self.settings = settings
        self.redirect_uri = uri
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._sealer = StateSealer(
            secret,
            context=f"{settings.issuer}|{settings.client_id}",
            max_age=settings.login_timeout_seconds,
            clock=clock,
        )
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._metadata_lock = asyncio.Lock()
        self.jwks = JwksCache(
            self._fetch_jwks,
            ttl=settings.jwks_ttl_seconds,
            refetch_interval=settings.jwks_refetch_interval_seconds,
        )
        self._rules = IdTokenRules(
            issuer=settings.issuer,
            client_id=settings.client_id,
            algorithms=settings.allowed_algorithms,
            leeway=settings.leeway_seconds,
        )

    def __repr__(self) -> str:
        return f"OidcClient(issuer={self.settings.issuer!r}, client_id={self.settings.client_id!r})"

    async def start(self) -> None:
        """Open the HTTP session if this client owns one. The provider is contacted lazily."""
        self._http()

    async def close(self) -> None:
        """Close the owned HTTP session (a session given by the caller stays open)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> OidcClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def discovery(self) -> ProviderMetadata:
        """The provider's metadata, fetched once and kept ``jwks_ttl_seconds``; when a later
        refetch fails, the last good document keeps being used."""
        current = self._metadata
        ttl = self.settings.jwks_ttl_seconds
        if current is not None and time.monotonic() - self._metadata_at < ttl:
            return current
        async with self._metadata_lock:
            if self._metadata is not current and self._metadata is not None:
                return self._metadata
            try:
                document = await self._http().get_json_object(
                    discovery_url(self.settings.issuer), endpoint="discovery"
                )
                metadata = ProviderMetadata.parse(document, self.settings)
            except MediaNestError:
                if current is None:
                    raise
                _log.warning("OIDC discovery refetch failed, keeping the last document")
                return current
            self._metadata, self._metadata_at = metadata, time.monotonic()
            return metadata

    async def begin(self, return_to: str = "/") -> tuple[str, str]:
        """``(authorization_url, sealed_state)``: send the browser to the URL and keep the
        sealed state (in a cookie) for :meth:`complete`. ``return_to`` must be a local path
        (ValidationError otherwise: no open redirects)."""
        login = LoginState(
            state=generate_token(32),
            nonce=generate_token(32),
            code_verifier=generate_token(64),
            return_to=safe_return_to(return_to),
            created=self._clock(),
        )
        metadata = await self.discovery()
        url = prepare_grant_uri(
            metadata.authorization_endpoint,
            client_id=self.settings.client_id,
            response_type="code",
            redirect_uri=self.redirect_uri,
            scope=" ".join(self.settings.scopes),
            state=login.state,
            nonce=login.nonce,
            code_challenge=create_s256_code_challenge(login.code_verifier),
            code_challenge_method="S256",
        )
        return str(url), self._sealer.seal(login)

    async def complete(self, params: Mapping[str, str], sealed_state: str) -> OidcIdentity:
        """The identity behind the provider's redirect to the callback (its query ``params``)
        once state, code and ID token all check out; AuthenticationError otherwise."""
        login = self._sealer.unseal(sealed_state)
        returned = params.get("state", "")
        if not hmac.compare_digest(returned.encode(), login.state.encode()):
            raise AuthenticationError(
                "the sign-in answer does not belong to this browser's sign-in; please sign in "
                "again",
                reason="state_mismatch",
            )
        metadata = await self.discovery()
        iss_expected = "iss" in params or metadata.iss_parameter_supported
        if iss_expected and params.get("iss") != self.settings.issuer:
            raise AuthenticationError(
                "the sign-in answer comes from another identity provider", reason="bad_iss"
            )
        if "error" in params:
            error = params["error"] if _ERROR_CODE.match(params["error"]) else "error"
            message = (
                "sign-in was cancelled at the identity provider"
                if error == "access_denied"
                else f"the identity provider refused the sign-in ({error})"
            )
            raise AuthenticationError(message, reason="provider_error", provider_error=error)
        code = params.get("code")
        if not code:
            raise AuthenticationError("the sign-in answer has no code", reason="no_code")
        tokens = await self._token_endpoint(metadata).exchange_code(
            code, self.redirect_uri, login.code_verifier
        )
        if tokens.id_token is None:
            raise AuthenticationError(
                "the identity provider sent no ID token (is the openid scope allowed?)",
                reason="no_id_token",
            )
        claims = await self.validate_id_token(
            tokens.id_token, nonce=login.nonce, access_token=tokens.access_token
        )
        if self.settings.userinfo and metadata.userinfo_endpoint:
            claims = await self._merge_userinfo(metadata, claims, tokens.access_token)
        subject = str(claims["sub"])
        return OidcIdentity(
            issuer=self.settings.issuer,
            subject=subject,
            username=text_claim(claims, self.settings.username_claim, "email") or subject,
            email=text_claim(claims, "email"),
            name=text_claim(claims, "name"),
            role=map_role(self.settings, claims),
            return_to=login.return_to,
            claims=claims,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_at=tokens.expires_at,
            id_token=tokens.id_token,
        )

    async def refresh(self, refresh_token: str, *, subject: str) -> OidcTokens:
        """New tokens for ``refresh_token`` of the user ``subject``. A new ID token, when one
        comes, is validated, must name the same subject, and its claims are mapped again
        (a user removed from every group loses access here when ``default_role`` is none)."""
        metadata = await self.discovery()
        tokens = await self._token_endpoint(metadata).refresh(refresh_token)
        return await self._refreshed(tokens, subject)

    async def validate_id_token(
        self, id_token: str, *, nonce: str | None, access_token: str | None = None
    ) -> dict[str, Any]:
        """The claims of ``id_token`` after every check; see :func:`validate_id_token`."""
        return await validate_id_token(
            id_token,
            self.jwks,
            self._rules,
            nonce=nonce,
            now=lambda: int(self._clock()),
            access_token=access_token,
        )

    async def _refreshed(self, tokens: TokenResponse, subject: str) -> OidcTokens:
        claims: dict[str, Any] | None = None
        role: OidcRole | None = None
        if tokens.id_token is not None:
            claims = await self.validate_id_token(
                tokens.id_token, nonce=None, access_token=tokens.access_token
            )
            if claims["sub"] != subject:
                raise AuthenticationError(
                    "the refreshed ID token names another user", reason="subject_changed"
                )
            role = map_role(self.settings, claims)
        return OidcTokens(
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_at=tokens.expires_at,
            id_token=tokens.id_token,
            claims=claims,
            role=role,
        )

    async def _merge_userinfo(
        self, metadata: ProviderMetadata, claims: dict[str, Any], access_token: str
    ) -> dict[str, Any]:
        assert metadata.userinfo_endpoint is not None
        answer = await self._http().get(
            metadata.userinfo_endpoint,
            endpoint="userinfo",
            headers={"Authorization": f"Bearer {access_token}"},
        )
        if answer.status != 200 or not isinstance(answer.body, dict):
            _log.warning(
                "OIDC userinfo unusable, using the ID token claims only",
                status=answer.status,
                content_type=answer.content_type,
            )
            return claims
        if answer.body.get("sub") != claims["sub"]:
            raise AuthenticationError(
                "the identity provider's profile names another user", reason="userinfo_sub"
            )
        extra = {k: v for k, v in answer.body.items() if k not in PROTOCOL_CLAIMS}
        return {**claims, **extra}

    def _token_endpoint(self, metadata: ProviderMetadata) -> TokenEndpoint:
        return TokenEndpoint(self._http(), metadata, self.settings, clock=self._clock)

    async def _fetch_jwks(self) -> list[Key]:
        metadata = await self.discovery()
        return parse_jwks(await self._http().get_json_object(metadata.jwks_uri, endpoint="jwks"))

    def _http(self) -> ProviderHttp:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return ProviderHttp(self._session, self.settings.http_timeout_seconds)
