"""The JWKS cache: TTL, refetch on an unknown ``kid`` (real key rotation), rate limit, and
single flight; plus the discovery document being fetched once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from joserfc import jws, jwt
from joserfc.jwk import Key, RSAKey

from medianest.errors import AuthenticationError, UpstreamUnavailable
from medianest.security.oidc_keys import JwksCache, fits, parse_jwks
from tests.security.conftest import ClientFactory, RequestLog
from tests.support.oidc_provider import (
    REDIRECT_URI,
    RunningProvider,
    running_provider,
    signing_keys,
)
from tests.support.oidc_provider.browser import callback_query, sign_in_as

Traced = tuple[aiohttp.ClientSession, RequestLog]


def header_kid(token: str) -> str:
    return str(jws.extract_compact(token.encode()).headers()["kid"])


async def test_keys_and_discovery_are_fetched_once_for_many_sign_ins(
    oidc_provider: RunningProvider, make_client: ClientFactory, traced_session: Traced
) -> None:
    _, log = traced_session
    oidc = make_client(oidc_provider)
    for login in ("alice", "bob", "alice"):
        await sign_in_as(oidc, REDIRECT_URI, login)
    assert log.count("/jwks") == 1
    assert log.count("/.well-known/openid-configuration") == 1
    assert log.count("/token") == 3
    assert oidc.jwks.fetches == 1


async def test_rotation_refetches_the_keys_once_and_forged_kids_do_not_hammer(
    make_client: ClientFactory, traced_session: Traced
) -> None:
    """The provider starts signing with a key the client has never seen."""
    _, log = traced_session
    with running_provider(jwks=signing_keys("old")) as provider:
        oidc = make_client(provider, jwks_refetch_interval_seconds=300)
        before = await sign_in_as(oidc, REDIRECT_URI, "alice")
        assert header_kid(before.id_token) == "old-rsa"
        assert log.count("/jwks") == 1

        await provider.arotate(signing_keys("new"))
        # Two sign-ins completed at once: both meet the unknown kid, one refetch serves both.
        flows = [await callback_query(oidc, REDIRECT_URI, login=name) for name in ("alice", "bob")]
        identities = await asyncio.gather(*(oidc.complete(q, s) for q, s in flows))
        assert [header_kid(i.id_token) for i in identities] == ["new-rsa", "new-rsa"]
        assert [i.role for i in identities] == ["admin", "user"]
        assert log.count("/jwks") == 2

        # A refresh token from before the rotation works; its new ID token uses the new key.
        tokens = await oidc.refresh(before.refresh_token or "", subject="alice")
        assert tokens.id_token is not None
        assert header_kid(tokens.id_token) == "new-rsa"

        # Tokens naming keys nobody published: refused, and no refetch within the interval.
        stranger = RSAKey.generate_key(2048, parameters={"kid": "forged"})
        claims = {"iss": provider.issuer, "sub": "alice", "aud": "medianest"}
        now = int(time.time())
        forged = jwt.encode(
            {"alg": "RS256", "kid": "forged"}, {**claims, "exp": now + 60, "iat": now}, stranger
        )
        for _ in range(5):
            with pytest.raises(AuthenticationError, match="does not publish"):
                await oidc.validate_id_token(forged, nonce=None)
        assert log.count("/jwks") == 2


async def test_an_old_key_dropped_by_the_provider_is_refused_after_refetch(
    make_client: ClientFactory, traced_session: Traced
) -> None:
    with running_provider(jwks=signing_keys("old")) as provider:
        oidc = make_client(provider, jwks_refetch_interval_seconds=0)
        before = await sign_in_as(oidc, REDIRECT_URI, "bob")
        await provider.arotate(signing_keys("new"))
        oidc.jwks.invalidate()
        with pytest.raises(AuthenticationError, match="does not publish"):
            await oidc.validate_id_token(before.id_token, nonce=None)


class FakeProvider:
    """A key source with a clock, counting fetches; ``fail`` makes fetches raise."""

    def __init__(self) -> None:
        self.keys: list[Key] = [RSAKey.generate_key(2048, parameters={"kid": "a"})]
        self.fetches = 0
        self.now = 1000.0
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def fetch(self) -> list[Key]:
        self.fetches += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise UpstreamUnavailable("down", service="oidc")
        return list(self.keys)

    def cache(self, **kw: Any) -> JwksCache:
        return JwksCache(
            self.fetch,
            ttl=kw.get("ttl", 3600),
            refetch_interval=kw.get("refetch_interval", 10),
            clock=lambda: self.now,
        )


async def test_keys_expire_after_the_ttl() -> None:
    fake = FakeProvider()
    cache = fake.cache(ttl=60)
    await cache.key_for("a", "RS256")
    fake.now += 59
    await cache.key_for("a", "RS256")
    assert fake.fetches == 1
    fake.now += 2
    await cache.key_for("a", "RS256")
    assert fake.fetches == 2


async def test_unknown_kid_refetch_is_rate_limited() -> None:
    fake = FakeProvider()
    cache = fake.cache(refetch_interval=10)
    await cache.key_for("a", "RS256")
    for _ in range(3):  # the first miss refetches, the others wait for the interval
        with pytest.raises(AuthenticationError):
            await cache.key_for("b", "RS256")
    assert fake.fetches == 2
    fake.keys.append(RSAKey.generate_key(2048, parameters={"kid": "b"}))
    fake.now += 9
    with pytest.raises(AuthenticationError):
        await cache.key_for("b", "RS256")
    fake.now += 1
    assert (await cache.key_for("b", "RS256")).kid == "b"
    assert fake.fetches == 3


async def test_concurrent_lookups_share_one_fetch() -> None:
    fake = FakeProvider()
    fake.gate = asyncio.Event()
    cache = fake.cache()
    lookups = [asyncio.create_task(cache.key_for("a", "RS256")) for _ in range(10)]
    await asyncio.sleep(0)
    fake.gate.set()
    assert {key.kid for key in await asyncio.gather(*lookups)} == {"a"}
    assert fake.fetches == 1


async def test_expired_keys_serve_while_the_provider_is_down() -> None:
    fake = FakeProvider()
    cache = fake.cache(ttl=60)
    await cache.key_for("a", "RS256")
    fake.now += 120
    fake.fail = True
    assert (await cache.key_for("a", "RS256")).kid == "a"
    with pytest.raises(UpstreamUnavailable):
        await fake.cache().key_for("a", "RS256")


def test_jwks_parsing_skips_what_cannot_verify() -> None:
    good = RSAKey.generate_key(2048, parameters={"kid": "good"}).as_dict()
    document = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**good, "kid": "enc", "use": "enc"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {"kty": "ML-DSA", "kid": "future"},
            good,
        ]
    }
    assert [key.kid for key in parse_jwks(document)] == ["good"]


def test_a_key_fits_only_its_own_algorithms() -> None:
    rsa = RSAKey.generate_key(2048, parameters={"kid": "r"})
    assert fits(rsa, "RS256")
    assert fits(rsa, "PS512")
    assert not fits(rsa, "ES256")
    assert not fits(rsa, "HS256")
    assert not fits(rsa, "none")
    pinned = RSAKey.generate_key(2048, parameters={"kid": "p", "alg": "PS256"})
    assert fits(pinned, "PS256")
    assert not fits(pinned, "RS256")
