"""API keys against every database the hub supports: format, storage, verification, lifecycle."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import event, select

from medianest.database import Database
from medianest.database.schema import api_keys
from medianest.errors import (
    AuthenticationError,
    ConfigurationError,
    MediaNestError,
    NotFoundError,
    ValidationError,
)
from medianest.security import (
    ApiKeyService,
    apikeys_store,
    find_api_keys,
    generate_api_key,
    load_or_create_secret,
    looks_like_api_key,
    parse_key_id,
)
from medianest.security import apikeys as apikeys_module
from tests.conftest import LogCapture
from tests.support.wallclock import Clock

SECRET = secrets.token_bytes(32)
KEY_SHAPE = re.compile(r"^mn_[0-9a-z]{12}_[0-9A-Za-z]{49}$")


@pytest.fixture
def service(db: Database, clock: Clock) -> ApiKeyService:
    return ApiKeyService(db, SECRET, clock=clock)


@contextlib.contextmanager
def database_traffic(db: Database) -> Iterator[list[str]]:
    """Every SQL statement and connection checkout on ``db`` while the block runs."""
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    def on_checkout(*_: Any) -> None:
        seen.append("<checkout>")

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine.pool, "checkout", on_checkout)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine.pool, "checkout", on_checkout)


async def stored_row(db: Database, key_id: str) -> dict[str, Any]:
    async with db.connect() as conn:
        result = await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))
        return dict(result.mappings().one())


async def rejected(service: ApiKeyService, key: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await service.verify(key)
    return caught.value.message


# --- the format, offline -------------------------------------------------------------------


def test_format_and_checksum_recognised_offline() -> None:
    keys = {generate_api_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert KEY_SHAPE.match(key), key
        assert looks_like_api_key(key)
        assert parse_key_id(key) == key[3:15]
    key = next(iter(keys))
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for position in range(16, len(key)):
        for replacement in (alphabet[(alphabet.index(key[position]) + 1) % 62], "0"):
            if replacement != key[position]:
                corrupted = key[:position] + replacement + key[position + 1 :]
                assert not looks_like_api_key(corrupted), position
    for not_a_key in ("", "mn_", key[:-1], key + "x", key.upper(), f" {key}", "ghp_" + key[3:]):
        assert not looks_like_api_key(not_a_key)


def test_leaked_keys_found_in_text() -> None:
    good, other = generate_api_key(), generate_api_key()
    broken = good[:-1] + ("A" if good[-1] != "A" else "B")
    text = f'config: {{"key": "{good}"}}\nAuthorization: Bearer {other},\n{broken}\nx{good}y'
    assert find_api_keys(text) == [good, other]


# --- the service, on each database ---------------------------------------------------------


async def test_create_returns_the_key_once_and_stores_only_its_hmac(
    service: ApiKeyService, db: Database, clock: Clock
) -> None:
    info, key = await service.create("backup", "bob", ["catalog:read", "catalog:read"])
    assert KEY_SHAPE.match(key)
    assert info.prefix == f"mn_{info.key_id}"
    assert key.startswith(info.prefix + "_")
    assert info.scopes == ("catalog:read",)
    assert info.created_at == clock.now
    assert info.last_used_at is None
    assert info.expires_at is None
    row = await stored_row(db, info.key_id)
    assert row["hmac"] == hmac.new(SECRET, key.encode(), hashlib.sha256).hexdigest()
    dumped = repr(row)
    secret_part = key.split("_")[2]
    for forbidden in (key, secret_part, secret_part[:20], SECRET.hex()):
        assert forbidden not in dumped
    for shown in (repr(info), info.model_dump_json(), repr(service)):
        assert secret_part[:20] not in shown
        assert row["hmac"] not in shown
        assert SECRET.hex() not in shown


async def test_verify_accepts_the_key_and_rejects_everything_else(
    service: ApiKeyService,
) -> None:
    info, key = await service.create("ci", "bob", ["admin"])
    assert (await service.verify(key)).key_id == info.key_id
    same_id_other_secret = generate_api_key(info.key_id)
    messages = {
        await rejected(service, same_id_other_secret),
        await rejected(service, generate_api_key()),
        await rejected(service, key[:-1]),
        await rejected(service, key + " "),
        await rejected(service, ""),
        await rejected(service, "mn_nonsense"),
    }
    assert messages == {"invalid API key"}


async def test_corrupted_key_is_rejected_before_any_database_lookup(
    service: ApiKeyService, db: Database
) -> None:
    _, key = await service.create("ci", "bob", [])
    corrupted = key[:20] + ("x" if key[20] != "x" else "y") + key[21:]
    with database_traffic(db) as traffic:
        await rejected(service, corrupted)
    assert traffic == []


async def test_comparisons_are_constant_time(
    service: ApiKeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(apikeys_module.hmac, "compare_digest", spy)
    _, key = await service.create("ci", "bob", [])
    await service.verify(key)
    await rejected(service, generate_api_key(parse_key_id(key)))
    await rejected(service, generate_api_key())
    assert len(calls) == 3  # every check of a presented secret against a stored HMAC
    calls.clear()
    await service.verify(key)
    # A cache hit matches a SHA-256 fingerprint of the whole key: a near miss cannot be
    # steered byte by byte through it, and no stored HMAC is compared.
    assert calls == []


async def test_cache_hit_needs_no_database(
    service: ApiKeyService, db: Database, clock: Clock
) -> None:
    _, key = await service.create("ci", "bob", [])
    with database_traffic(db) as first:
        await service.verify(key)
    assert any(s.lstrip().upper().startswith("SELECT") for s in first)
    clock.advance(seconds=10)
    with database_traffic(db) as cached:
        for _ in range(5):
            await service.verify(key)
        await rejected(service, generate_api_key(parse_key_id(key)))
    assert cached == []
    clock.advance(seconds=25)
    with database_traffic(db) as expired:
        await service.verify(key)
    assert any(s.lstrip().upper().startswith("SELECT") for s in expired)


async def test_revocation_is_immediate_despite_the_cache(
    service: ApiKeyService, db: Database, clock: Clock
) -> None:
    info, key = await service.create("ci", "bob", [])
    other_instance = ApiKeyService(db, SECRET, clock=clock)
    await service.verify(key)
    await other_instance.verify(key)
    revoked = await service.revoke(info.key_id)
    assert revoked.revoked_at == clock.now
    await rejected(service, key)
    assert (await other_instance.verify(key)).key_id == info.key_id
    other_instance.invalidate(info.key_id)
    await rejected(other_instance, key)
    assert (await service.revoke(info.key_id)).revoked_at == revoked.revoked_at


async def test_revocation_during_a_verification_is_not_undone_by_its_cache_entry(
    service: ApiKeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    info, key = await service.create("ci", "bob", [])
    reading, release = asyncio.Event(), asyncio.Event()
    real_fetch = apikeys_store.fetch

    async def slow_fetch(*args: Any) -> Any:
        found = await real_fetch(*args)
        reading.set()
        await release.wait()
        return found

    monkeypatch.setattr(apikeys_store, "fetch", slow_fetch)
    verification = asyncio.create_task(service.verify(key))
    await reading.wait()
    monkeypatch.setattr(apikeys_store, "fetch", real_fetch)
    await service.revoke(info.key_id)
    release.set()
    assert (await verification).key_id == info.key_id
    await rejected(service, key)


async def test_concurrent_verifications_of_a_lapsed_entry_share_one_read(
    service: ApiKeyService, db: Database, clock: Clock
) -> None:
    _, key = await service.create("ci", "bob", [])
    await service.verify(key)
    clock.advance(seconds=31)
    with database_traffic(db) as traffic:
        infos = await asyncio.gather(*(service.verify(key) for _ in range(20)))
    assert {i.key_id for i in infos} == {infos[0].key_id}
    assert sum(s.lstrip().upper().startswith("SELECT") for s in traffic) == 1


async def test_other_instances_notice_revocation_when_their_cache_expires(
    service: ApiKeyService, db: Database, clock: Clock
) -> None:
    info, key = await service.create("ci", "bob", [])
    other_instance = ApiKeyService(db, SECRET, clock=clock, cache_ttl=30)
    await other_instance.verify(key)
    await service.revoke(info.key_id)
    clock.advance(seconds=30)
    await rejected(other_instance, key)


async def test_rotation_keeps_the_old_key_for_the_overlap_window(
    service: ApiKeyService, clock: Clock
) -> None:
    expires = clock.now + timedelta(days=90)
    old, old_key = await service.create("deploy", "bob", ["catalog:read"], expires_at=expires)
    await service.verify(old_key)
    new, new_key = await service.rotate(old.key_id, overlap=timedelta(hours=1))
    assert new_key != old_key
    assert new.key_id != old.key_id
    assert (new.name, new.owner, new.scopes, new.expires_at) == (
        "deploy",
        "bob",
        ("catalog:read",),
        expires,
    )
    replaced = await service.get(old.key_id)
    assert replaced.replaced_by == new.key_id
    assert replaced.overlap_until == clock.now + timedelta(hours=1)
    assert replaced.state(clock.now) == "rotating"
    assert (await service.verify(old_key)).key_id == old.key_id
    clock.advance(minutes=59)
    assert (await service.verify(old_key)).key_id == old.key_id
    clock.advance(minutes=1)
    await rejected(service, old_key)
    assert (await service.verify(new_key)).key_id == new.key_id
    assert (await service.get(old.key_id)).state(clock.now) == "replaced"
    with pytest.raises(ValidationError, match="replaced by"):
        await service.rotate(old.key_id)


async def test_rotation_without_overlap_and_refusals(service: ApiKeyService) -> None:
    old, old_key = await service.create("deploy", "bob", [])
    _, new_key = await service.rotate(f"mn_{old.key_id}", overlap=timedelta(0))
    await rejected(service, old_key)
    await service.verify(new_key)
    revoked, _ = await service.create("gone", "bob", [])
    await service.revoke(revoked.key_id)
    with pytest.raises(ValidationError, match="revoked"):
        await service.rotate(revoked.key_id)
    with pytest.raises(ValidationError):
        await service.rotate(old.key_id, overlap=timedelta(hours=-1))
    with pytest.raises(NotFoundError):
        await service.rotate("zzzzzzzzzzzz")


async def test_concurrent_rotations_issue_one_successor(service: ApiKeyService) -> None:
    info, _ = await service.create("deploy", "bob", [])
    results = await asyncio.gather(
        service.rotate(info.key_id), service.rotate(info.key_id), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, tuple)]
    assert len(winners) == 1, results
    assert all(isinstance(r, MediaNestError) for r in results if not isinstance(r, tuple))
    assert (await service.get(info.key_id)).replaced_by == winners[0][0].key_id


async def test_expiry(service: ApiKeyService, clock: Clock) -> None:
    info, key = await service.create("temp", "bob", [], expires_at=clock.now + timedelta(days=1))
    await service.verify(key)
    clock.advance(hours=23, minutes=59, seconds=50)
    await service.verify(key)
    clock.advance(seconds=10)
    await rejected(service, key)
    assert (await service.get(info.key_id)).state(clock.now) == "expired"
    with pytest.raises(ValidationError, match="past"):
        await service.create("late", "bob", [], expires_at=clock.now - timedelta(seconds=1))


async def test_last_used_is_recorded_at_most_once_a_minute(db: Database, clock: Clock) -> None:
    service = ApiKeyService(db, SECRET, clock=clock, cache_ttl=3600)
    info, key = await service.create("ci", "bob", [])
    started = clock.now
    await service.verify(key)
    await service.drain()  # the write happens in the background: no request waits for it
    assert (await stored_row(db, info.key_id))["last_used_at"].replace(tzinfo=UTC) == started
    clock.advance(seconds=59)
    with database_traffic(db) as quiet:
        assert (await service.verify(key)).last_used_at == started
        await service.drain()
    assert quiet == []
    other_instance = ApiKeyService(db, SECRET, clock=clock)
    with database_traffic(db) as other:
        await other_instance.verify(key)
        await other_instance.drain()
    assert not [s for s in other if s.lstrip().upper().startswith("UPDATE")]
    clock.advance(seconds=1)
    with database_traffic(db) as touched:
        await asyncio.gather(*(service.verify(key) for _ in range(5)))
        await service.drain()
    assert len([s for s in touched if s.lstrip().upper().startswith("UPDATE")]) == 1
    stored = (await stored_row(db, info.key_id))["last_used_at"].replace(tzinfo=UTC)
    assert stored == clock.now
    assert (await service.verify(key)).last_used_at == clock.now
    assert (await service.get(info.key_id)).last_used_at == clock.now


async def test_list_get_and_revoke(service: ApiKeyService, clock: Clock) -> None:
    a, key_a = await service.create("a", "alice", ["catalog:read"])
    clock.advance(seconds=1)
    b, _ = await service.create("b", "bob", [])
    clock.advance(seconds=1)
    c, _ = await service.create("c", "alice", [])
    assert [k.key_id for k in await service.list()] == [a.key_id, b.key_id, c.key_id]
    assert [k.key_id for k in await service.list("alice")] == [a.key_id, c.key_id]
    await service.revoke(c.key_id)
    assert [k.key_id for k in await service.list("alice")] == [a.key_id]
    everything = await service.list("alice", include_revoked=True)
    assert [k.key_id for k in everything] == [a.key_id, c.key_id]
    assert everything[1].state(clock.now) == "revoked"
    for name in (a.key_id, a.prefix, key_a):
        assert (await service.get(name)).key_id == a.key_id
    for unknown in ("zzzzzzzzzzzz", "not a key id"):
        with pytest.raises(NotFoundError):
            await service.get(unknown)
        with pytest.raises(NotFoundError):
            await service.revoke(unknown)


async def test_bad_input_is_refused(service: ApiKeyService, db: Database) -> None:
    for name, owner, scopes in (
        ("", "bob", []),
        ("ok", " ", []),
        ("ok", "bob", ["Admin"]),
        ("ok", "bob", ["read all"]),
        ("x" * 201, "bob", []),
    ):
        with pytest.raises(ValidationError):
            await service.create(name, owner, scopes)
    with pytest.raises(ConfigurationError):
        ApiKeyService(db, b"too short")


async def test_a_different_server_secret_rejects_every_key(
    service: ApiKeyService, db: Database, clock: Clock
) -> None:
    _, key = await service.create("ci", "bob", [])
    await rejected(ApiKeyService(db, secrets.token_bytes(32), clock=clock), key)


async def test_keys_never_reach_the_logs(service: ApiKeyService, logs: LogCapture) -> None:
    info, key = await service.create("ci", "bob", ["admin"])
    await service.verify(key)
    await rejected(service, generate_api_key(info.key_id))
    _, new_key = await service.rotate(info.key_id)
    await service.revoke(info.key_id)
    await rejected(service, key)
    text = logs.text
    events = [r["event"] for r in logs.records]
    for expected in ("api key created", "api key rotated", "api key revoked", "api key rejected"):
        assert expected in events
    assert info.key_id in text
    for presented in (key, new_key):
        assert presented not in text
        assert presented.split("_")[2][:16] not in text
    assert SECRET.hex() not in text


# --- the server secret ---------------------------------------------------------------------


def test_configured_secret_is_decoded_and_must_be_long_enough(tmp_path: Path) -> None:
    raw = secrets.token_bytes(32)
    assert load_or_create_secret(SecretStr("hex:" + raw.hex()), tmp_path) == raw
    encoded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert load_or_create_secret(SecretStr("base64:" + encoded), tmp_path) == raw
    text = secrets.token_urlsafe(32)
    assert load_or_create_secret(SecretStr(text), tmp_path) == text.encode()
    for short in ("too-short", "hex:" + raw.hex()[:62], "hex:zz" * 40):
        with pytest.raises(ConfigurationError) as caught:
            load_or_create_secret(SecretStr(short), tmp_path)
        assert short not in caught.value.message
    assert not (tmp_path / "secret.key").exists()


def test_file_secret_is_created_once_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_or_create_secret(None, data_dir)
    assert len(first) == 32
    path = data_dir / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(None, data_dir) == first
    assert sorted(p.name for p in data_dir.iterdir()) == ["secret.key"]
    path.write_text("garbage\n")
    with pytest.raises(ConfigurationError, match=r"secret\.key"):
        load_or_create_secret(None, data_dir)


def test_processes_racing_to_create_the_secret_agree(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path;"
        "from medianest.security.secret import load_or_create_secret;"
        "print(load_or_create_secret(None, Path(sys.argv[1])).hex())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "data")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    secrets_seen = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert secrets_seen == {(tmp_path / "data" / "secret.key").read_text().strip()}
