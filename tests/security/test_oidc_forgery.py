"""Forged and broken ID tokens, checked against the real provider's JWKS.

Tokens are crafted here: some signed with the provider's own private key (the test made it)
but carrying bad claims, some signed in ways only a forger would (``alg: none``, HS256 keyed
with the provider's public key, a foreign key claiming the provider's ``kid``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, RSAKey

from medianest.errors import AuthenticationError
from medianest.security.oidc import OidcClient
from medianest.security.oidc_idtoken import IdTokenRules, validate_id_token
from tests.security.conftest import ClientFactory
from tests.support.oidc_provider import RunningProvider

NONCE = "n-0123456789abcdef"
RSA_KID = "k1-rsa"


@pytest.fixture
def oidc(oidc_provider: RunningProvider, make_client: ClientFactory) -> OidcClient:
    """A client accepting the default algorithms (RS256, PS256, ES256, EdDSA)."""
    return make_client(oidc_provider, allowed_algorithms=["RS256", "PS256", "ES256", "EdDSA"])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(provider: RunningProvider, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": provider.issuer,
        "sub": "alice",
        "aud": "medianest",
        "exp": now + 300,
        "iat": now,
        "nonce": NONCE,
        "groups": ["media-admins"],
    }
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def signed(
    provider: RunningProvider,
    *,
    kid: str = RSA_KID,
    alg: str = "RS256",
    key: Any = None,
    **changes: Any,
) -> str:
    """A token signed with the provider's key ``kid`` (or ``key``), claims changed."""
    signing_key = key if key is not None else provider.private_key(kid)
    header = {"alg": alg, "kid": kid}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode(header, claims_for(provider, **changes), signing_key, algorithms=[alg])


async def refused(oidc: OidcClient, token: str, *, nonce: str | None = NONCE, **kw: Any) -> str:
    """The reason ``token`` is refused; the message never shows the token's contents."""
    with pytest.raises(AuthenticationError) as excinfo:
        await oidc.validate_id_token(token, nonce=nonce, **kw)
    message = str(excinfo.value)
    for part in token.split("."):
        assert len(part) < 8 or part not in message
    assert "alice" not in message
    return str(excinfo.value.extra["reason"])


async def test_a_well_formed_token_signed_by_the_provider_passes(
    oidc: OidcClient, oidc_provider: RunningProvider
) -> None:
    claims = await oidc.validate_id_token(signed(oidc_provider), nonce=NONCE)
    assert claims["sub"] == "alice"
    for kid, alg in (("k1-rsa", "PS256"), ("k1-ec", "ES256"), ("k1-ed", "EdDSA")):
        assert await oidc.validate_id_token(signed(oidc_provider, kid=kid, alg=alg), nonce=NONCE)


async def test_alg_none_is_refused(oidc: OidcClient, oidc_provider: RunningProvider) -> None:
    header = b64(json.dumps({"alg": "none", "kid": RSA_KID}).encode())
    payload = b64(json.dumps(claims_for(oidc_provider)).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}.c2ln"):
        assert await refused(oidc, token) == "bad_alg"


async def test_hs256_keyed_with_the_providers_public_key_is_refused(
    oidc: OidcClient, oidc_provider: RunningProvider
) -> None:
    """The classic key confusion: HMAC with the RSA public key, which anyone can fetch.

    joserfc itself refuses to make such a key, so the forger's token is assembled by hand.
    """
    key = oidc_provider.private_key(RSA_KID)
    assert isinstance(key, RSAKey)
    pem = key.as_pem(private=False)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    header = b64(json.dumps({"alg": "HS256", "kid": RSA_KID, "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims_for(oidc_provider)).encode())
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert await refused(oidc, f"{header}.{payload}.{b64(mac)}") == "bad_alg"


async def test_hs256_is_refused_even_by_rules_that_list_it(
    oidc: OidcClient, oidc_provider: RunningProvider
) -> None:
    """Settings refuse HS* in the allow-list; the validator refuses it on its own as well."""
    rules = IdTokenRules(oidc_provider.issuer, "medianest", ("HS256", "none", "RS256"), 60)
    header = b64(json.dumps({"alg": "HS256", "kid": RSA_KID}).encode())
    payload = b64(json.dumps(claims_for(oidc_provider)).encode())
    mac = hmac.new(b"guessable", f"{header}.{payload}".encode(), hashlib.sha256).digest()
    none = b64(json.dumps({"alg": "none", "kid": RSA_KID}).encode())
    for token in (f"{header}.{payload}.{b64(mac)}", f"{none}.{payload}."):
        with pytest.raises(AuthenticationError) as excinfo:
            await validate_id_token(
                token, oidc.jwks, rules, nonce=NONCE, now=lambda: int(time.time())
            )
        assert excinfo.value.extra["reason"] == "bad_alg"


async def test_a_token_without_kid_uses_the_one_key_that_fits(
    oidc: OidcClient, oidc_provider: RunningProvider
) -> None:
    key = oidc_provider.private_key(RSA_KID)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        token = jwt.encode({"alg": "RS256"}, claims_for(oidc_provider), key)
    assert (await oidc.validate_id_token(token, nonce=NONCE))["sub"] == "alice"


async def test_a_foreign_key_claiming_the_providers_kid_is_refused(
    oidc: OidcClient, oidc_provider: RunningProvider
) -> None:
    foreign = RSAKey.generate_key(2048, parameters={"kid": RSA_KID})
    assert await refused(oidc, signed(oidc_provider, key=foreign)) == "bad_signature"
    foreign_ec = ECKey.generate_key("P-256", parameters={"kid": "k1-ec"})
    token = signed(oidc_provider, kid="k1-ec", alg="ES256", key=foreign_ec)
    assert await refused(oidc, token) == "bad_signature"


async def test_an_algorithm_that_does_not_fit_the_named_key_is_refused(
    oidc: OidcClient, oidc_provider: RunningProvider
) -> None:
    ec_signed_as_rsa_kid = signed(
        oidc_provider, kid=RSA_KID, alg="ES256", key=oidc_provider.private_key("k1-ec")
    )
    assert await refused(oidc, ec_signed_as_rsa_kid) == "key_mismatch"


async def test_an_algorithm_outside_the_allow_list_is_refused(
    oidc: OidcClient, oidc_provider: RunningProvider
) -> None:
    assert await refused(oidc, signed(oidc_provider, alg="RS384")) == "bad_alg"


async def test_an_unknown_kid_is_refused(oidc: OidcClient, oidc_provider: RunningProvider) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "never-published"})
    token = signed(oidc_provider, kid="never-published", key=stranger)
    assert await refused(oidc, token) == "unknown_key"


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"exp": -120}, "expired"),
        ({"iat": 3600}, "bad_iat"),
        ({"nbf": 3600}, "bad_nbf"),
    ],
)
async def test_times_outside_the_leeway_are_refused(
    oidc: OidcClient, oidc_provider: RunningProvider, changes: dict[str, int], why: str
) -> None:
    now = int(time.time())
    times: dict[str, Any] = {name: now + delta for name, delta in changes.items()}
    token = signed(oidc_provider, **times)
    assert await refused(oidc, token) == why


async def test_times_inside_the_leeway_pass(
    oidc: OidcClient, oidc_provider: RunningProvider
) -> None:
    now = int(time.time())
    token = signed(oidc_provider, exp=now - 30, iat=now + 30, nbf=now + 30)
    assert await oidc.validate_id_token(token, nonce=NONCE)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"iss": "https://evil.example"}, "bad_iss"),
        ({"aud": "another-client"}, "bad_aud"),
        ({"aud": ["another-client", "third"]}, "bad_aud"),
        ({"aud": ["medianest", "another-client"]}, "bad_azp"),
        ({"aud": ["medianest", "another-client"], "azp": "another-client"}, "bad_azp"),
        ({"azp": "another-client"}, "bad_azp"),
        ({"sub": None}, "missing_claim"),
        ({"exp": None}, "missing_claim"),
        ({"iat": None}, "missing_claim"),
        ({"aud": None}, "missing_claim"),
    ],
)
async def test_bad_claims_are_refused(
    oidc: OidcClient, oidc_provider: RunningProvider, changes: dict[str, Any], why: str
) -> None:
    assert await refused(oidc, signed(oidc_provider, **changes)) == why


async def test_several_audiences_pass_when_azp_is_us(
    oidc: OidcClient, oidc_provider: RunningProvider
) -> None:
    token = signed(oidc_provider, aud=["medianest", "another-client"], azp="medianest")
    assert (await oidc.validate_id_token(token, nonce=NONCE))["azp"] == "medianest"


async def test_nonce_must_be_the_one_sent(oidc: OidcClient, oidc_provider: RunningProvider) -> None:
    assert await refused(oidc, signed(oidc_provider), nonce="another-nonce") == "bad_nonce"
    assert await refused(oidc, signed(oidc_provider, nonce=None)) == "bad_nonce"


async def test_at_hash_must_match_the_access_token(
    oidc: OidcClient, oidc_provider: RunningProvider
) -> None:
    token = signed(oidc_provider, at_hash="AAAAAAAAAAAAAAAAAAAAAA")
    assert await refused(oidc, token, access_token="the-access-token") == "bad_at_hash"


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("not-a-token", "id_token_malformed"),
        ("a.b.c", "id_token_malformed"),
        ("a.b.c.d.e", "id_token_encrypted"),
        ("x" * 20000, "id_token_malformed"),
    ],
)
async def test_garbage_is_refused(oidc: OidcClient, token: str, why: str) -> None:
    assert await refused(oidc, token) == why
