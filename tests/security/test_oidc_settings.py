"""OIDC pieces that need no provider: settings, the sealed login state, the open-redirect
guard, role mapping and the token endpoint's client authentication."""

from __future__ import annotations

import string
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from medianest.config.oidc import DEFAULT_ALGORITHMS, OidcSettings
from medianest.errors import AuthenticationError, ConfigurationError, ValidationError
from medianest.security.oidc import OidcClient
from medianest.security.oidc_idtoken import claim_at, map_role
from medianest.security.oidc_provider import ProviderMetadata
from medianest.security.oidc_state import LoginState, StateSealer, safe_return_to
from medianest.security.oidc_tokens import auth_method, basic_credentials

SECRET = b"0123456789abcdef0123456789abcdef"


def settings(**values: Any) -> OidcSettings:
    base: dict[str, Any] = {"issuer": "https://id.example.com", "client_id": "medianest"}
    return OidcSettings.model_validate({**base, **values})


def test_defaults() -> None:
    oidc = settings()
    assert oidc.scopes == ("openid", "profile", "email")
    assert oidc.allowed_algorithms == DEFAULT_ALGORITHMS == ("RS256", "PS256", "ES256", "EdDSA")
    assert oidc.role_claim == "groups"
    assert oidc.default_role == "guest"
    assert oidc.leeway_seconds == 60
    assert oidc.jwks_ttl_seconds == 3600
    assert oidc.username_claim == "preferred_username"
    assert oidc.display_name == "Single sign-on"
    assert oidc.client_secret is None


def test_every_field_is_documented() -> None:
    for name, field in OidcSettings.model_fields.items():
        assert field.description, name


@pytest.mark.parametrize("algs", [["none"], ["HS256"], ["RS256", "HS512"], ["hs384"], ["XS1"], []])
def test_symmetric_none_and_unknown_algorithms_are_refused(algs: list[str]) -> None:
    with pytest.raises(PydanticValidationError):
        settings(allowed_algorithms=algs)


def test_lists_come_space_or_comma_separated_and_openid_is_always_asked() -> None:
    oidc = settings(scopes="profile, email offline_access", allowed_algorithms="ES256,EdDSA")
    assert oidc.scopes == ("openid", "profile", "email", "offline_access")
    assert oidc.allowed_algorithms == ("ES256", "EdDSA")


@pytest.mark.parametrize("value", ["none", "", "None"])
def test_default_role_none_refuses_unmapped_users(value: str) -> None:
    assert settings(default_role=value).default_role is None


@pytest.mark.parametrize(
    "issuer", ["http://id.example.com", "ftp://id.example.com", "id.example.com", "https://x/?a=1"]
)
def test_issuer_must_be_https_unless_local(issuer: str) -> None:
    with pytest.raises(PydanticValidationError):
        settings(issuer=issuer)


def test_plain_http_is_accepted_on_loopback_or_when_allowed() -> None:
    assert settings(issuer="http://127.0.0.1:9000").issuer == "http://127.0.0.1:9000"
    assert settings(issuer="http://localhost:9000/realms/home").allows_url("http://localhost/x")
    lan = settings(issuer="http://auth.lan", allow_insecure_http=True)
    assert lan.allows_url("http://auth.lan/token")
    assert not settings().allows_url("http://id.example.com/token")


def test_secret_methods_need_a_secret() -> None:
    with pytest.raises(PydanticValidationError):
        settings(token_endpoint_auth_method="client_secret_post")


def test_secrets_stay_out_of_reprs() -> None:
    oidc = settings(client_secret="very-secret-value", redirect_uri="https://m.example/cb")
    client = OidcClient(oidc, secret=SECRET)
    assert "very-secret-value" not in repr(oidc)
    assert "very-secret-value" not in repr(client)


def test_a_redirect_uri_is_required() -> None:
    with pytest.raises(ConfigurationError):
        OidcClient(settings(), secret=SECRET)
    assert OidcClient(settings(), secret=SECRET, redirect_uri="https://m/cb").redirect_uri


# --- sealed login state ---------------------------------------------------------------


def login(created: float = 1000.0) -> LoginState:
    return LoginState("state-1", "nonce-1", "v" * 64, "/catalog", created)


def sealer(now: float = 1000.0, secret: bytes = SECRET, context: str = "iss|client") -> StateSealer:
    return StateSealer(secret, context=context, max_age=600, clock=lambda: now)


def test_sealed_state_round_trips_and_hides_its_contents() -> None:
    sealed = sealer().seal(login())
    assert sealer(now=1599).unseal(sealed) == login()
    for secret_part in ("state-1", "nonce-1", "v" * 16, "catalog"):
        assert secret_part not in sealed
    assert sealer().seal(login()) != sealed  # a fresh nonce every time


@pytest.mark.parametrize(
    "other",
    [
        sealer(now=1601),  # too old
        sealer(now=990),  # from the future
        sealer(secret=b"another-secret-another-secret-xx"),
        sealer(context="iss|another-client"),
    ],
)
def test_sealed_state_is_refused_when_old_foreign_or_keyed_otherwise(other: StateSealer) -> None:
    with pytest.raises(AuthenticationError, match="please sign in again"):
        other.unseal(sealer().seal(login()))


@pytest.mark.parametrize("index", [3, 10, 40, -1])
def test_a_flipped_character_breaks_the_seal(index: int) -> None:
    """The top bit of a base64 digit, so even the last one (with padding bits) changes."""
    sealed = sealer().seal(login())
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    flipped_char = alphabet[alphabet.index(sealed[index]) ^ 32]
    flipped = sealed[:index] + flipped_char + (sealed[index + 1 :] if index != -1 else "")
    with pytest.raises(AuthenticationError):
        sealer().unseal(flipped)


@pytest.mark.parametrize("junk", ["", "v1.", "v2.abc", "v1.!!!", "v1." + "A" * 5000, "nonsense"])
def test_junk_state_is_refused(junk: str) -> None:
    with pytest.raises(AuthenticationError):
        sealer().unseal(junk)


@pytest.mark.parametrize("path", ["/", "/catalog", "/catalog?q=dune&page=2#top", "/a//b"])
def test_local_paths_are_fine_return_targets(path: str) -> None:
    assert safe_return_to(path) == path


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/path",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "catalog",
        "/\nLocation: https://evil.example",
        "",
        "/" + "a" * 3000,
    ],
)
def test_open_redirect_targets_are_refused(target: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        safe_return_to(target)
    assert "return_to" in excinfo.value.errors


# --- roles ------------------------------------------------------------------------------


def test_the_strongest_mapped_role_wins() -> None:
    oidc = settings(role_map={"family": "user", "media-admins": "admin", "visitors": "guest"})
    assert map_role(oidc, {"groups": ["visitors", "media-admins", "family"]}) == "admin"
    assert map_role(oidc, {"groups": ["visitors", "family"]}) == "user"
    assert map_role(oidc, {"groups": "family"}) == "user"
    assert map_role(oidc, {"groups": ["strangers"]}) == "guest"
    assert map_role(oidc, {}) == "guest"


def test_nested_and_dotted_claims() -> None:
    keycloak = {"realm_access": {"roles": ["medianest-admin"]}}
    oidc = settings(role_claim="realm_access.roles", role_map={"medianest-admin": "admin"})
    assert map_role(oidc, keycloak) == "admin"
    assert claim_at({"https://example.com/groups": ["x"]}, "https://example.com/groups") == ["x"]
    assert claim_at({"a": {"b": 1}}, "a.c") is None
    assert claim_at({"a": [1]}, "a.b") is None


def test_unmapped_users_are_refused_without_a_default_role() -> None:
    oidc = settings(role_map={"family": "user"}, default_role=None)
    with pytest.raises(AuthenticationError, match="ask its administrator"):
        map_role(oidc, {"groups": ["strangers", 7, None]})


# --- client authentication ---------------------------------------------------------------


def metadata(methods: list[str] | None) -> ProviderMetadata:
    document: dict[str, Any] = {
        "issuer": "https://id.example.com",
        "authorization_endpoint": "https://id.example.com/auth",
        "token_endpoint": "https://id.example.com/token",
        "jwks_uri": "https://id.example.com/jwks",
    }
    if methods is not None:
        document["token_endpoint_auth_methods_supported"] = methods
    return ProviderMetadata.parse(document, settings())


def test_auto_client_authentication_follows_the_provider() -> None:
    confidential = settings(client_secret="s")
    assert auth_method(settings(), metadata(None)) == "none"
    assert auth_method(confidential, metadata(None)) == "client_secret_basic"
    assert auth_method(confidential, metadata(["client_secret_post"])) == "client_secret_post"
    both = metadata(["client_secret_post", "client_secret_basic"])
    assert auth_method(confidential, both) == "client_secret_basic"
    forced = settings(client_secret="s", token_endpoint_auth_method="client_secret_post")
    assert auth_method(forced, both) == "client_secret_post"


def test_basic_credentials_are_form_encoded_first() -> None:
    import base64

    value = basic_credentials("media nest", "a:b+c/d")
    decoded = base64.b64decode(value.removeprefix("Basic ")).decode()
    assert decoded == "media%20nest:a%3Ab%2Bc%2Fd"


def test_discovery_endpoints_must_be_https() -> None:
    document = {
        "issuer": "https://id.example.com",
        "authorization_endpoint": "https://id.example.com/auth",
        "token_endpoint": "http://id.example.com/token",
        "jwks_uri": "https://id.example.com/jwks",
    }
    with pytest.raises(ConfigurationError, match="not https"):
        ProviderMetadata.parse(document, settings())
    document["token_endpoint"] = "https://id.example.com/token"
    document["code_challenge_methods_supported"] = ["plain"]
    with pytest.raises(ConfigurationError, match="S256"):
        ProviderMetadata.parse(document, settings())
