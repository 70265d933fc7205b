"""OpenID Connect single sign-on settings (Authentik, Authelia, Keycloak...).

The section is enabled by its presence: ``[oidc]`` with at least ``issuer`` and ``client_id``
(``MEDIANEST_OIDC__ISSUER``, ``MEDIANEST_OIDC__CLIENT_ID``...). MediaNest is a relying party
using the authorization code flow with PKCE (S256); the identity provider's endpoints and
keys come from its discovery document.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from medianest.config.section import Section

OidcRole = Literal["admin", "user", "guest"]
TokenEndpointAuthMethod = Literal["auto", "client_secret_basic", "client_secret_post", "none"]

#: Signature algorithms an ID token may use: asymmetric only. ``none`` and the HMAC family
#: (HS256...) are refused outright: with HS* a forger who knows the public key could sign.
SUPPORTED_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "Ed25519",
    "Ed448",
)
DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
DEFAULT_SCOPES = ("openid", "profile", "email")


def _split_words(value: object) -> object:
    if isinstance(value, str):
        return tuple(part for part in value.replace(",", " ").split() if part)
    return value


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses, where plain http cannot be sniffed."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OidcSettings(Section):
    """Sign-in through an OpenID provider; present means enabled."""

    issuer: str = Field(
        description="The provider's issuer URL, exactly as its discovery document states it "
        "(Keycloak `https://id.example.com/realms/home`, Authentik "
        "`https://id.example.com/application/o/medianest/` with its trailing slash). The "
        "document is read from `<issuer>/.well-known/openid-configuration`.",
        examples=["https://auth.example.com"],
    )
    client_id: str = Field(
        min_length=1, description="The client ID registered for MediaNest at the provider."
    )
    client_secret: SecretStr | None = Field(
        None,
        description="The client secret. Leave unset for a public client (PKCE only).",
    )
    token_endpoint_auth_method: TokenEndpointAuthMethod = Field(
        "auto",
        description="How MediaNest authenticates at the token endpoint: `client_secret_basic`, "
        "`client_secret_post` or `none`. `auto`: `none` without a secret, else basic when the "
        "provider supports it, else post.",
    )
    scopes: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_SCOPES,
        description="Scopes to request (space- or comma-separated in the environment); "
        "`openid` is always included. Add `offline_access` for refresh tokens where the "
        "provider wants it, and `groups` for Authelia's group claim.",
    )
    redirect_uri: str | None = Field(
        None,
        description="The callback URL registered at the provider. Default: "
        "`<public URL>/api/v1/auth/oidc/callback`.",
    )
    role_claim: str = Field(
        "groups",
        min_length=1,
        description="Claim that carries group or role names, as a dotted path "
        "(`groups`; Keycloak realm roles: `realm_access.roles`).",
    )
    role_map: dict[str, OidcRole] = Field(
        default_factory=dict,
        description="Claim value → MediaNest role (`admin`, `user` or `guest`); when several "
        'match, the strongest wins. Example: `{"media-admins" = "admin", "family" = "user"}`.',
    )
    default_role: Literal["user", "guest"] | None = Field(
        "guest",
        description="Role of a user none of whose claim values is in `role_map`. Set it to "
        "`none` (or empty) to refuse sign-in to such users instead.",
    )
    allowed_algorithms: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_ALGORITHMS,
        description="ID token signature algorithms accepted. Only asymmetric ones "
        "(RS*, PS*, ES*, EdDSA, Ed25519, Ed448); `none` and HS* are refused.",
    )
    leeway_seconds: int = Field(
        60, ge=0, le=600, description="Clock skew allowed when checking exp, iat and nbf."
    )
    jwks_ttl_seconds: int = Field(
        3600, ge=1, le=86400, description="How long the provider's keys (JWKS) are cached."
    )
    jwks_refetch_interval_seconds: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="Least time between two key refetches caused by an unknown key id, so "
        "tokens with forged key ids cannot make MediaNest hammer the provider.",
    )
    userinfo: bool = Field(
        True,
        description="Also read the userinfo endpoint after sign-in and merge its claims "
        "(Authelia puts groups only there).",
    )
    display_name: str = Field(
        "Single sign-on", min_length=1, description="Label of the sign-in button."
    )
    username_claim: str = Field(
        "preferred_username",
        min_length=1,
        description="Claim used as the MediaNest user name (falls back to email, then sub).",
    )
    http_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="Timeout of each request to the provider."
    )
    login_timeout_seconds: int = Field(
        600,
        ge=30,
        le=3600,
        description="How long a user may take at the provider between leaving MediaNest and "
        "coming back to the callback.",
    )
    allow_insecure_http: bool = Field(
        False,
        description="Accept a plain-http issuer and endpoints on a host other than localhost "
        "(testing only: tokens would cross the network in clear).",
    )

    @field_validator("issuer", "redirect_uri")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an absolute http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value

    @field_validator("default_role", mode="before")
    @classmethod
    def _none_role(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value

    @field_validator("scopes", "allowed_algorithms", mode="before")
    @classmethod
    def _words(cls, value: object) -> object:
        return _split_words(value)

    @field_validator("scopes")
    @classmethod
    def _openid_first(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(("openid", *value)))

    @field_validator("allowed_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one algorithm is needed")
        for alg in value:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(
                    f"{alg!r} is refused: ID tokens must carry an asymmetric signature"
                )
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(
                    f"unknown algorithm {alg!r}; use {', '.join(SUPPORTED_ALGORITHMS)}"
                )
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _secure_transport(self) -> OidcSettings:
        if not self.allows_url(self.issuer):
            raise ValueError("oidc.issuer must be https (set allow_insecure_http only for testing)")
        if self.token_endpoint_auth_method.startswith("client_secret") and not self.client_secret:
            raise ValueError(f"{self.token_endpoint_auth_method} needs oidc.client_secret")
        return self

    def allows_url(self, url: str) -> bool:
        """Whether an endpoint URL from the discovery document may be used: https, or http
        on a loopback host, or any http when ``allow_insecure_http`` is set."""
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname:
            return True
        return parts.scheme == "http" and (
            self.allow_insecure_http or is_loopback_host(parts.hostname)
        )
