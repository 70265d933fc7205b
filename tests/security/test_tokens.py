"""Hub access tokens: issue, verify, the attacks a verifier must refuse, and key rotation."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import event, select

from medianest.database import Database, upgrade
from medianest.database.schema import signing_keys
from medianest.errors import AuthenticationError, ValidationError
from medianest.security import tokens as tokens_module
from medianest.security.roles import Principal, Role
from medianest.security.tokens import TokenIssuer
from medianest.security.users_store import User
from medianest.security.vault import Vault
from tests.conftest import LogCapture
from tests.support.wallclock import Clock

ISSUER = "https://hub.example"
KEY = secrets.token_bytes(32)
REJECTED = "invalid or expired token"


@pytest.fixture
def vault() -> Vault:
    return Vault([KEY])


def make_issuer(db: Database, vault: Vault, clock: Clock, **options: Any) -> TokenIssuer:
    return TokenIssuer(db, vault, issuer=ISSUER, clock=clock, **options)


@pytest.fixture
async def issuer(db: Database, vault: Vault, clock: Clock) -> TokenIssuer:
    hub = make_issuer(db, vault, clock)
    await hub.start()
    return hub


def person(role: Role = Role.USER, user_id: str = "user-1") -> User:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    return User(
        id=user_id,
        username="alice",
        display_name="Alice",
        role=role,
        created_at=now,
        updated_at=now,
    )


@contextlib.contextmanager
def selects_of_keys(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "signing_keys" in statement:
            seen.append(statement)

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact(header: dict[str, Any], claims: Any, signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(signature)}"


def good_claims(clock: Clock, **changes: Any) -> dict[str, Any]:
    now = int(clock.now.timestamp())
    claims = {
        "iss": ISSUER,
        "aud": "medianest",
        "sub": "user-1",
        "sid": "session-1",
        "role": "user",
        "iat": now,
        "exp": now + 600,
        "jti": secrets.token_urlsafe(8),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


async def current_kid(db: Database) -> str:
    async with db.connect() as conn:
        rows = (await conn.execute(select(signing_keys.c.kid))).all()
    assert len(rows) == 1
    return str(rows[0][0])


async def hub_private_key(db: Database, vault: Vault, kid: str) -> ECKey:
    async with db.connect() as conn:
        sealed = (
            await conn.execute(
                select(signing_keys.c.private_key_enc).where(signing_keys.c.kid == kid)
            )
        ).scalar_one()
    return ECKey.import_key(json.loads(vault.decrypt(sealed, f"signing_key:{kid}")))


async def hub_signed(db: Database, vault: Vault, claims: dict[str, Any], **header: Any) -> str:
    """A token signed with the hub's own key: only the claims or header under test differ."""
    kid = await current_kid(db)
    full = {"alg": "ES256", "kid": kid, "typ": "at+jwt", **header}
    full = {k: v for k, v in full.items() if v is not None}
    key = await hub_private_key(db, vault, kid)
    return jwt.encode(full, claims, key, algorithms=["ES256"])


async def refused(issuer: TokenIssuer, token: Any) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await issuer.verify(token)
    assert caught.value.message == REJECTED
    assert caught.value.extra == {}


# --- issuing ---------------------------------------------------------------------------------


async def test_issued_token_carries_the_claims_and_verifies(
    issuer: TokenIssuer, clock: Clock, db: Database
) -> None:
    token, expires_at = await issuer.issue(person(), "session-1")
    assert expires_at == clock.now + timedelta(minutes=15)
    header = json.loads(unb64(token.split(".")[0]))
    assert header == {"alg": "ES256", "kid": await current_kid(db), "typ": "at+jwt"}
    claims = await issuer.verify(token)
    assert claims["iss"] == ISSUER
    assert claims["aud"] == "medianest"
    assert (claims["sub"], claims["sid"], claims["role"]) == ("user-1", "session-1", "user")
    assert claims["exp"] - claims["iat"] == 900
    assert claims["iat"] == int(clock.now.timestamp())
    other, _ = await issuer.issue(person(), "session-1")
    assert (await issuer.verify(other))["jti"] != claims["jti"]


async def test_issue_for_a_principal_and_refusals(issuer: TokenIssuer) -> None:
    admin = Principal.for_user("user-9", "root", Role.ADMIN, session_id="s-9")
    claims = await issuer.verify((await issuer.issue(admin))[0])
    assert (claims["sub"], claims["sid"], claims["role"]) == ("user-9", "s-9", "admin")
    short, _ = await issuer.issue(person(), "s", ttl=timedelta(minutes=1))
    short_claims = await issuer.verify(short)
    assert short_claims["exp"] - short_claims["iat"] == 60
    key = Principal.for_api_key("k1", "ci", ["admin"], owner="bob")
    for bad in (
        issuer.issue(key, "s"),
        issuer.issue(person(), None),
        issuer.issue(person(), "s", ttl=timedelta(minutes=16)),
    ):
        with pytest.raises(ValidationError):
            await bad


async def test_a_token_signed_by_the_hub_key_outside_issue_verifies(
    issuer: TokenIssuer, db: Database, vault: Vault, clock: Clock
) -> None:
    """The crafted tokens below differ from this one only in what they attack."""
    token = await hub_signed(db, vault, good_claims(clock))
    assert (await issuer.verify(token))["sub"] == "user-1"


# --- what the verifier refuses -------------------------------------------------------------


async def test_alg_none_is_refused(issuer: TokenIssuer, db: Database, clock: Clock) -> None:
    kid = await current_kid(db)
    for alg in ("none", "None", "NONE", ""):
        header = {"alg": alg, "kid": kid, "typ": "at+jwt"}
        await refused(issuer, compact(header, good_claims(clock)))
        await refused(issuer, compact(header, good_claims(clock)).rstrip("."))


async def test_hs256_with_the_public_key_as_secret_is_refused(
    issuer: TokenIssuer, db: Database, clock: Clock
) -> None:
    kid = await current_kid(db)
    jwks = await issuer.jwks()
    public = ECKey.import_key(jwks["keys"][0])
    pem = public.as_pem(private=False)
    der = public.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, der, json.dumps(jwks["keys"][0]).encode()):
        for alg in ("HS256", "HS512"):
            header = {"alg": alg, "kid": kid, "typ": "at+jwt"}
            unsigned = compact(header, good_claims(clock)).rsplit(".", 1)[0]
            digest = hashlib.sha256 if alg == "HS256" else hashlib.sha512
            mac = hmac.new(secret, unsigned.encode(), digest).digest()
            await refused(issuer, f"{unsigned}.{b64(mac)}")


async def test_a_token_signed_by_another_key_is_refused(
    issuer: TokenIssuer, db: Database, clock: Clock
) -> None:
    kid = await current_kid(db)
    attacker = ECKey.generate_key("P-256", private=True)
    header = {"alg": "ES256", "kid": kid, "typ": "at+jwt"}
    await refused(issuer, jwt.encode(header, good_claims(clock), attacker, algorithms=["ES256"]))
    embedded = {**header, "jwk": attacker.as_dict(private=False)}
    await refused(issuer, jwt.encode(embedded, good_claims(clock), attacker, algorithms=["ES256"]))
    jku = {**header, "jku": "https://evil.example/jwks.json"}
    await refused(issuer, jwt.encode(jku, good_claims(clock), attacker, algorithms=["ES256"]))


async def test_headers_other_than_alg_kid_typ_are_refused(
    issuer: TokenIssuer, db: Database, vault: Vault, clock: Clock
) -> None:
    claims = good_claims(clock)
    for header in (
        {"typ": "JWT"},
        {"typ": None},
        {"kid": None},
        {"cty": "JWT"},
        {"x5u": "https://evil.example/x"},
    ):
        await refused(issuer, await hub_signed(db, vault, claims, **header))


async def test_expiry_with_thirty_seconds_leeway(issuer: TokenIssuer, clock: Clock) -> None:
    token, _ = await issuer.issue(person(), "s")
    clock.advance(minutes=15, seconds=29)
    await issuer.verify(token)
    clock.advance(seconds=2)
    await refused(issuer, token)


async def test_tokens_from_the_future_are_refused(
    issuer: TokenIssuer, db: Database, vault: Vault, clock: Clock
) -> None:
    now = int(clock.now.timestamp())
    await issuer.verify(await hub_signed(db, vault, good_claims(clock, iat=now + 20)))
    await issuer.verify(await hub_signed(db, vault, good_claims(clock, nbf=now + 20)))
    for changes in ({"iat": now + 60}, {"nbf": now + 60}, {"iat": now + 3600, "exp": now + 4000}):
        await refused(issuer, await hub_signed(db, vault, good_claims(clock, **changes)))


async def test_wrong_audience_issuer_and_claims_are_refused(
    issuer: TokenIssuer, db: Database, vault: Vault, clock: Clock
) -> None:
    now = int(clock.now.timestamp())
    for changes in (
        {"aud": "other"},
        {"aud": ["other", "another"]},
        {"aud": None},
        {"iss": "https://evil.example"},
        {"iss": ISSUER + "/"},
        {"iss": None},
        {"sub": None},
        {"sub": 42},
        {"sid": None},
        {"sid": 7},
        {"jti": None},
        {"exp": None},
        {"iat": None},
        {"exp": "tomorrow"},
        {"role": "superuser"},
        {"role": None},
        {"iat": now - 10, "exp": now + 86_400},
        {"iat": -(10**20)},
    ):
        await refused(issuer, await hub_signed(db, vault, good_claims(clock, **changes)))


async def test_tampered_payload_or_signature_is_refused(issuer: TokenIssuer, clock: Clock) -> None:
    token, _ = await issuer.issue(person(Role.GUEST), "s")
    head, body, signature = token.split(".")
    claims = json.loads(unb64(body))
    claims["role"] = "admin"
    await refused(issuer, f"{head}.{b64(json.dumps(claims).encode())}.{signature}")
    raw = bytearray(unb64(signature))
    for position in (0, 31, 32, 63):
        flipped = bytearray(raw)
        flipped[position] ^= 0x01
        await refused(issuer, f"{head}.{body}.{b64(bytes(flipped))}")
    await refused(issuer, f"{head}.{body}.{b64(bytes(raw[:-1]))}")
    await refused(issuer, f"{head}.{body}.")
    await refused(issuer, f"{head}.{body}")
    assert (await issuer.verify(token))["role"] == "guest"


async def test_oversized_tokens_are_refused_before_parsing(
    issuer: TokenIssuer,
    db: Database,
    vault: Vault,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fits = await hub_signed(db, vault, good_claims(clock, pad="x" * 5000))
    assert 6000 < len(fits) <= 8192
    await issuer.verify(fits)
    too_big = await hub_signed(db, vault, good_claims(clock, pad="x" * 6500))
    assert len(too_big) > 8192
    parsed: list[Any] = []
    real = tokens_module.jws.extract_compact

    def spy(*args: Any, **kwargs: Any) -> Any:
        parsed.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(tokens_module.jws, "extract_compact", spy)
    await refused(issuer, too_big)
    await refused(issuer, "a" * 100_000)
    assert parsed == []


async def test_malformed_tokens_are_refused(
    issuer: TokenIssuer, db: Database, clock: Clock
) -> None:
    kid = await current_kid(db)
    header = b64(json.dumps({"alg": "ES256", "kid": kid, "typ": "at+jwt"}).encode())
    body = b64(json.dumps(good_claims(clock)).encode())
    for bad in (
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "!!!.@@@.###",
        f"{header}.{body}.%%%",
        f"{b64(b'not json')}.{body}.AAAA",
        f"{b64(b'[1, 2]')}.{body}.AAAA",
        f"{header}.{b64(b'not json')}.AAAA",
        f"{header}.{b64(b'[]')}.AAAA",
        f"{header}.{body}.AAAA\u00e9",
        "\u00e9\u00e9.\u00e9.\u00e9",
        None,
        b"bytes.are.not_text",
    ):
        await refused(issuer, bad)


async def test_unknown_kid_rereads_the_keys_once_then_refuses(
    issuer: TokenIssuer, db: Database, clock: Clock
) -> None:
    attacker = ECKey.generate_key("P-256", private=True)
    header = {"alg": "ES256", "kid": "no-such-key", "typ": "at+jwt"}
    token = jwt.encode(header, good_claims(clock), attacker, algorithms=["ES256"])
    with selects_of_keys(db) as reads:
        await refused(issuer, token)
    assert len(reads) == 1
    with selects_of_keys(db) as reads:
        await asyncio.gather(*(refused(issuer, token) for _ in range(5)))
    assert 1 <= len(reads) <= 2


async def test_refusals_never_log_the_token(
    issuer: TokenIssuer, clock: Clock, logs: LogCapture
) -> None:
    token, _ = await issuer.issue(person(), "s")
    clock.advance(hours=1)
    await refused(issuer, token)
    await refused(issuer, token[:-4] + "AAAA")
    assert "access token rejected" in [r["event"] for r in logs.records]
    for part in token.split("."):
        assert part not in logs.text


# --- keys ------------------------------------------------------------------------------------


async def test_keys_are_encrypted_at_rest_and_published_without_private_parts(
    issuer: TokenIssuer, db: Database, vault: Vault
) -> None:
    kid = await current_kid(db)
    async with db.connect() as conn:
        row = (await conn.execute(select(signing_keys))).mappings().one()
    assert row["algorithm"] == "ES256"
    assert row["private_key_enc"].startswith(f"v1.{vault.primary_key_id}.")
    private = (await hub_private_key(db, vault, kid)).as_dict(private=True)
    assert "d" in private
    assert str(private["d"]) not in repr(dict(row))
    assert "d" not in row["public_jwk"]
    published = (await issuer.jwks())["keys"]
    assert published == [row["public_jwk"]]
    assert published[0]["kid"] == kid
    assert published[0]["alg"] == "ES256"
    assert ECKey.import_key(published[0]).thumbprint() == kid


async def test_rotation_new_key_signs_old_key_verifies_until_its_end(
    issuer: TokenIssuer, db: Database, clock: Clock
) -> None:
    first_kid = await current_kid(db)
    clock.advance(hours=23, minutes=59, seconds=59)
    late, _ = await issuer.issue(person(), "s")
    assert json.loads(unb64(late.split(".")[0]))["kid"] == first_kid
    clock.advance(seconds=2)
    fresh, _ = await issuer.issue(person(), "s")
    second_kid = json.loads(unb64(fresh.split(".")[0]))["kid"]
    assert second_kid != first_kid
    await issuer.verify(late)
    assert {k["kid"] for k in (await issuer.jwks())["keys"]} == {first_kid, second_kid}
    clock.advance(minutes=15, seconds=27)
    await issuer.verify(late)
    clock.advance(seconds=3)
    await refused(issuer, late)
    assert [k["kid"] for k in (await issuer.jwks())["keys"]] == [second_kid]
    await refused(issuer, fresh)
    newest, _ = await issuer.issue(person(), "s")
    assert json.loads(unb64(newest.split(".")[0]))["kid"] == second_kid
    await issuer.verify(newest)


async def test_another_instance_rotated_the_key_is_found_by_rereading(
    db: Database, vault: Vault, clock: Clock, database_url: str
) -> None:
    one = make_issuer(db, vault, clock)
    await one.start()
    async with Database(database_url) as other_db:
        two = make_issuer(other_db, vault, clock)
        await two.start()
        assert (await one.jwks()) == (await two.jwks())
        clock.advance(seconds=1)
        new_kid = await two.rotate()
        token, _ = await two.issue(person(), "s")
        assert json.loads(unb64(token.split(".")[0]))["kid"] == new_kid
        with selects_of_keys(db) as reads:
            assert (await one.verify(token))["sub"] == "user-1"
        assert len(reads) == 1
        with selects_of_keys(db) as reads:
            await one.verify(token)
        assert reads == []
        older, _ = await one.issue(person(), "s")
        assert json.loads(unb64(older.split(".")[0]))["kid"] == new_kid


async def test_retired_key_stops_verifying_here_at_once_and_elsewhere_on_reread(
    db: Database, vault: Vault, clock: Clock
) -> None:
    one = make_issuer(db, vault, clock)
    two = make_issuer(db, vault, clock)
    await one.start()
    await two.start()
    token, _ = await one.issue(person(), "s")
    await two.verify(token)
    kid = await current_kid(db)
    await one.retire(kid)
    await refused(one, token)
    await two.verify(token)
    clock.advance(seconds=61)
    await refused(two, token)
    replacement, _ = await one.issue(person(), "s")
    assert json.loads(unb64(replacement.split(".")[0]))["kid"] != kid
    await two.verify(replacement)


async def test_instances_starting_together_verify_each_others_tokens(
    database_url: str, vault: Vault, clock: Clock
) -> None:
    async with Database(database_url) as first, Database(database_url) as second:
        await upgrade(first)
        hubs = [make_issuer(first, vault, clock), make_issuer(second, vault, clock)]
        await asyncio.gather(*(hub.start() for hub in hubs))
        tokens = [(await hub.issue(person(), "s"))[0] for hub in hubs]
        for hub in hubs:
            for token in tokens:
                assert (await hub.verify(token))["sub"] == "user-1"
        async with first.connect() as conn:
            count = len((await conn.execute(select(signing_keys.c.kid))).all())
        assert count in (1, 2)


async def test_keys_survive_a_restart_and_vault_key_rotation(
    issuer: TokenIssuer, db: Database, vault: Vault, clock: Clock
) -> None:
    token, _ = await issuer.issue(person(), "s")
    kid = await current_kid(db)
    new_key = secrets.token_bytes(32)
    rotated = Vault([new_key, KEY])
    restarted = make_issuer(db, rotated, clock)
    await restarted.start()
    await restarted.verify(token)
    assert await restarted.reencrypt_keys() == 1
    assert await restarted.reencrypt_keys() == 0
    assert await current_kid(db) == kid
    again, _ = await make_issuer(db, Vault([new_key]), clock).issue(person(), "s")
    assert json.loads(unb64(again.split(".")[0]))["kid"] == kid


async def test_a_key_the_vault_cannot_open_still_verifies_but_no_longer_signs(
    issuer: TokenIssuer, db: Database, clock: Clock
) -> None:
    token, _ = await issuer.issue(person(), "s")
    old_kid = await current_kid(db)
    stranger = make_issuer(db, Vault([secrets.token_bytes(32)]), clock)
    await stranger.start()
    await stranger.verify(token)
    own, _ = await stranger.issue(person(), "s")
    assert json.loads(unb64(own.split(".")[0]))["kid"] != old_kid
    await issuer.verify(own)
