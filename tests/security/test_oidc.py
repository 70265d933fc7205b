"""OIDC sign-in end to end against a real OpenID provider (panva/oidc-provider).

The test plays the browser: it follows the authorization URL through the provider's login
and consent pages to the redirect URI, then hands the callback query to ``complete``.
"""

from __future__ import annotations

import shutil
import time
from urllib.parse import parse_qsl, urlsplit

import pytest

from medianest.errors import (
    AuthenticationError,
    ConfigurationError,
    UpstreamUnavailable,
    ValidationError,
)
from medianest.security.oidc import OidcClient
from medianest.security.oidc_state import StateSealer
from tests.security.conftest import SERVER_SECRET, ClientFactory, RequestLog, oidc_settings
from tests.support.oidc_provider import (
    CLIENTS,
    REDIRECT_URI,
    RunningProvider,
    node_binary,
    running_provider,
)
from tests.support.oidc_provider.browser import callback_query, sign_in_as
from tests.support.servers import free_port


def reason(excinfo: pytest.ExceptionInfo[AuthenticationError]) -> str:
    return str(excinfo.value.extra.get("reason"))


async def test_authorization_url_asks_for_a_code_with_pkce_state_and_nonce(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    oidc = make_client(oidc_provider)
    url, sealed = await oidc.begin("/catalog")
    assert url.startswith(f"{oidc_provider.issuer}/auth?")
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["response_type"] == "code"
    assert query["client_id"] == "medianest"
    assert query["redirect_uri"] == REDIRECT_URI
    assert query["scope"].split() == ["openid", "profile", "email", "offline_access"]
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 32
    assert len(query["nonce"]) >= 32
    assert query["state"] != query["nonce"]
    # The cookie value is sealed: neither the state, the nonce nor the verifier shows.
    assert query["state"] not in sealed
    assert query["nonce"] not in sealed
    second_url, _ = await oidc.begin("/catalog")
    assert dict(parse_qsl(urlsplit(second_url).query))["state"] != query["state"]


async def test_alice_signs_in_as_admin(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    oidc = make_client(oidc_provider)
    query, sealed = await callback_query(oidc, REDIRECT_URI, login="alice", return_to="/requests")
    assert set(query) == {"code", "state", "iss"}
    identity = await oidc.complete(query, sealed)
    assert identity.issuer == oidc_provider.issuer
    assert identity.subject == "alice"
    assert identity.username == "alice"
    assert identity.email == "alice@example.test"
    assert identity.name == "Alice Admin"
    assert identity.role == "admin"
    assert identity.return_to == "/requests"
    assert identity.claims["groups"] == ["media-admins", "family"]
    assert identity.access_token
    assert identity.refresh_token
    assert identity.id_token
    assert identity.expires_at is not None
    assert identity.expires_at > time.time() + 60
    assert identity.access_token not in repr(identity)


@pytest.mark.parametrize(
    ("login", "role"), [("alice", "admin"), ("bob", "user"), ("carol", "guest")]
)
async def test_groups_are_mapped_to_roles(
    oidc_provider: RunningProvider, make_client: ClientFactory, login: str, role: str
) -> None:
    identity = await sign_in_as(make_client(oidc_provider), REDIRECT_URI, login)
    assert identity.role == role


async def test_unmapped_user_is_refused_without_a_default_role(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    oidc = make_client(oidc_provider, default_role=None)
    with pytest.raises(AuthenticationError, match="not allowed to use MediaNest") as excinfo:
        await sign_in_as(oidc, REDIRECT_URI, "carol")
    assert reason(excinfo) == "no_role"
    assert (await sign_in_as(oidc, REDIRECT_URI, "bob")).role == "user"


@pytest.mark.parametrize("kind", list(CLIENTS))
async def test_every_client_authentication_and_signature_algorithm(
    oidc_provider: RunningProvider, make_client: ClientFactory, kind: str
) -> None:
    """client_secret_basic + RS256, client_secret_post + PS256, public + ES256, EdDSA."""
    client = CLIENTS[kind]
    oidc = make_client(oidc_provider, client)
    identity = await sign_in_as(oidc, REDIRECT_URI, "bob")
    assert identity.subject == "bob"
    assert identity.role == "user"
    assert identity.claims["aud"] == client.client_id
    tokens = await oidc.refresh(identity.refresh_token or "", subject="bob")
    assert tokens.role == "user"


async def test_refresh_returns_new_tokens_and_the_old_refresh_token_dies(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    oidc = make_client(oidc_provider)
    identity = await sign_in_as(oidc, REDIRECT_URI, "alice")
    assert identity.refresh_token is not None
    tokens = await oidc.refresh(identity.refresh_token, subject="alice")
    assert tokens.access_token != identity.access_token
    assert tokens.refresh_token is not None
    assert tokens.refresh_token != identity.refresh_token
    assert tokens.claims is not None
    assert tokens.claims["sub"] == "alice"
    assert tokens.role == "admin"
    assert tokens.expires_at is not None
    assert tokens.expires_at > time.time()
    with pytest.raises(AuthenticationError, match="session has ended") as excinfo:
        await oidc.refresh(identity.refresh_token, subject="alice")
    assert excinfo.value.extra["provider_error"] == "invalid_grant"


async def test_refresh_refuses_an_id_token_for_another_subject(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    oidc = make_client(oidc_provider)
    identity = await sign_in_as(oidc, REDIRECT_URI, "bob")
    with pytest.raises(AuthenticationError, match="another user") as excinfo:
        await oidc.refresh(identity.refresh_token or "", subject="alice")
    assert reason(excinfo) == "subject_changed"


async def test_state_from_another_sign_in_is_refused(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    oidc = make_client(oidc_provider)
    query, _ = await callback_query(oidc, REDIRECT_URI, login="alice")
    _, other_sealed = await oidc.begin("/")
    with pytest.raises(AuthenticationError) as excinfo:
        await oidc.complete(query, other_sealed)
    assert reason(excinfo) == "state_mismatch"


async def test_a_tampered_state_parameter_is_refused(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    oidc = make_client(oidc_provider)
    query, sealed = await callback_query(oidc, REDIRECT_URI, login="alice")
    last = "y" if query["state"].endswith("x") else "x"
    with pytest.raises(AuthenticationError) as excinfo:
        await oidc.complete({**query, "state": query["state"][:-1] + last}, sealed)
    assert reason(excinfo) == "state_mismatch"
    with pytest.raises(AuthenticationError) as excinfo:
        await oidc.complete({k: v for k, v in query.items() if k != "state"}, sealed)
    assert reason(excinfo) == "state_mismatch"


async def test_a_replayed_code_is_refused(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    oidc = make_client(oidc_provider)
    query, sealed = await callback_query(oidc, REDIRECT_URI, login="alice")
    await oidc.complete(query, sealed)
    with pytest.raises(AuthenticationError, match="already used") as excinfo:
        await oidc.complete(query, sealed)
    assert excinfo.value.extra["provider_error"] == "invalid_grant"


async def test_the_provider_enforces_pkce_with_our_verifier(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    """Same state and nonce, another code_verifier: the provider refuses the code."""
    oidc = make_client(oidc_provider)
    query, sealed = await callback_query(oidc, REDIRECT_URI, login="alice")
    sealer = StateSealer(SERVER_SECRET, context=f"{oidc_provider.issuer}|medianest", max_age=600)
    login = sealer.unseal(sealed)
    forged = type(login)(login.state, login.nonce, "x" * 64, login.return_to, login.created)
    with pytest.raises(AuthenticationError) as excinfo:
        await oidc.complete(query, sealer.seal(forged))
    assert excinfo.value.extra["provider_error"] == "invalid_grant"


async def test_a_sign_in_cancelled_at_the_provider_says_so(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    oidc = make_client(oidc_provider)
    query, sealed = await callback_query(oidc, REDIRECT_URI, login="alice", abort=True)
    assert query["error"] == "access_denied"
    with pytest.raises(AuthenticationError, match="cancelled at the identity provider") as info:
        await oidc.complete(query, sealed)
    assert reason(info) == "provider_error"
    assert "End-User" not in str(info.value)  # the provider's free text is not echoed


async def test_an_answer_naming_another_issuer_is_refused(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    oidc = make_client(oidc_provider)
    query, sealed = await callback_query(oidc, REDIRECT_URI, login="alice")
    for bad in (
        {**query, "iss": "https://evil.example"},
        {k: v for k, v in query.items() if k != "iss"},
    ):
        with pytest.raises(AuthenticationError) as excinfo:
            await oidc.complete(bad, sealed)
        assert reason(excinfo) == "bad_iss"


async def test_open_redirects_are_refused_before_anything_is_sent(
    oidc_provider: RunningProvider,
    make_client: ClientFactory,
    traced_session: tuple[object, RequestLog],
) -> None:
    oidc = make_client(oidc_provider)
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example", "catalog"):
        with pytest.raises(ValidationError):
            await oidc.begin(target)
    assert traced_session[1].requests == []


async def test_userinfo_claims_are_merged_when_the_id_token_lacks_them(
    make_client: ClientFactory,
) -> None:
    """Like Authelia: groups come from the userinfo endpoint, not the ID token."""
    with running_provider(conform_id_token_claims=True) as provider:
        oidc = make_client(provider)
        identity = await sign_in_as(oidc, REDIRECT_URI, "alice")
        id_claims = await oidc.validate_id_token(identity.id_token, nonce=None)
        assert "groups" not in id_claims
        assert identity.role == "admin"
        assert identity.email == "alice@example.test"

        without_userinfo = make_client(provider, userinfo=False)
        assert (await sign_in_as(without_userinfo, REDIRECT_URI, "alice")).role == "guest"


async def test_discovery_naming_another_issuer_is_a_configuration_error(
    oidc_provider: RunningProvider, make_client: ClientFactory
) -> None:
    oidc = make_client(oidc_provider, issuer=oidc_provider.issuer + "/")
    with pytest.raises(ConfigurationError, match="must be identical"):
        await oidc.begin("/")


async def test_an_unreachable_provider_is_upstream_unavailable() -> None:
    settings = oidc_settings(f"http://127.0.0.1:{free_port()}")
    async with OidcClient(settings, secret=SERVER_SECRET) as oidc:
        with pytest.raises(UpstreamUnavailable) as excinfo:
            await oidc.begin("/")
    assert excinfo.value.service == "oidc"


def test_without_node_the_provider_tests_skip_or_fail_when_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.delenv("MEDIANEST_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"Node\.js and npm are needed"):
        node_binary()
    monkeypatch.setenv("MEDIANEST_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match=r"MEDIANEST_REQUIRE_SERVICES=1"):
        node_binary()
