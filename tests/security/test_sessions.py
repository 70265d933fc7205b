"""Sessions on every database: opaque tokens stored as hashes, sliding expiry, revocation, cache."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import event, select

from medianest.config.identity import IdentitySettings
from medianest.database import Database
from medianest.database.schema import sessions
from medianest.errors import AuthenticationError, NotFoundError, ValidationError
from medianest.security.apikeys import extract_api_key
from medianest.security.passwords import Passwords
from medianest.security.roles import Role
from medianest.security.sessions import SessionService, looks_like_session_token
from medianest.security.users import UserService
from medianest.security.users_store import User
from medianest.security.vault import Vault
from tests.conftest import LogCapture
from tests.support.wallclock import Clock

PASSWORD = "correct horse battery"
REJECTED = "invalid or expired session"


@pytest.fixture
def people(db: Database, clock: Clock) -> UserService:
    passwords = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    return UserService(db, Vault([secrets.token_bytes(32)]), passwords=passwords, clock=clock)


@pytest.fixture
def service(db: Database, people: UserService, clock: Clock) -> SessionService:
    return SessionService(db, people, clock=clock)


@pytest.fixture
async def admin(people: UserService) -> User:
    return await people.create_local("root", PASSWORD)


@pytest.fixture
async def alice(people: UserService, admin: User) -> User:
    return await people.create_local("alice", PASSWORD)


@contextlib.contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT")):
            seen.append(statement.lstrip().split()[0].upper())

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


async def rejected(service: SessionService, token: str) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await service.resolve(token)
    assert caught.value.message == REJECTED


async def stored(db: Database, session_id: str) -> dict[str, Any]:
    async with db.connect() as conn:
        result = await conn.execute(select(sessions).where(sessions.c.id == session_id))
        return dict(result.mappings().one())


def at(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def test_create_returns_the_token_once_and_stores_its_hash(
    service: SessionService, db: Database, alice: User, clock: Clock
) -> None:
    token, session = await service.create(alice, "cookie", user_agent="Firefox", ip="10.0.0.7")
    assert looks_like_session_token(token)
    assert token.startswith("mns_")
    assert len(token) == 47
    assert extract_api_key({"Authorization": f"Bearer {token}"}) is None
    assert (session.user_id, session.kind, session.user_agent, session.ip) == (
        alice.id,
        "cookie",
        "Firefox",
        "10.0.0.7",
    )
    assert session.created_at == session.last_seen_at == clock.now
    assert session.expires_at == clock.now + timedelta(days=14)
    row = await stored(db, session.id)
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    dumped = repr(row)
    for secret_part in (token, token[4:], token[4:24], token[-20:]):
        assert secret_part not in dumped
    assert token[4:24] not in repr(session) + session.model_dump_json()
    other, _ = await service.create(alice, "bearer")
    assert other != token


async def test_resolve_and_one_message_for_every_refusal(
    service: SessionService, alice: User, logs: LogCapture
) -> None:
    token, session = await service.create(alice, "bearer")
    found, user = await service.resolve(token)
    assert (found.id, user.id, user.role) == (session.id, alice.id, Role.USER)
    assert (await service.resolve_id(session.id))[0].id == session.id
    for bad in ("", "mns_", token[:-1], token + "x", "mns_" + "A" * 43, token.upper(), "x" * 5000):
        await rejected(service, bad)
    with pytest.raises(AuthenticationError, match=REJECTED):
        await service.resolve_id("no-such-session")
    assert token[4:] not in logs.text


async def test_expiry_slides_with_use_at_most_once_a_minute(
    service: SessionService, db: Database, alice: User, clock: Clock
) -> None:
    token, session = await service.create(alice, "cookie")
    clock.advance(seconds=30)
    with statements(db) as quiet:
        resolved, _ = await service.resolve(token)
    assert "UPDATE" not in quiet
    assert resolved.expires_at == session.expires_at
    clock.advance(seconds=31)
    with statements(db) as touched:
        resolved, _ = await service.resolve(token)
    assert touched.count("UPDATE") == 1
    assert resolved.last_seen_at == clock.now
    assert resolved.expires_at == clock.now + timedelta(days=14)
    row = await stored(db, session.id)
    assert at(row["expires_at"]) == clock.now + timedelta(days=14)
    assert at(row["last_seen_at"]) == clock.now
    with statements(db) as again:
        await service.resolve(token)
    assert "UPDATE" not in again


async def test_unused_sessions_expire(service: SessionService, alice: User, clock: Clock) -> None:
    token, _ = await service.create(alice, "cookie")
    clock.advance(days=13, hours=23, minutes=59)
    await service.resolve(token)
    clock.advance(days=14, seconds=-1)
    await service.resolve(token)
    clock.advance(days=14)
    await rejected(service, token)


async def test_a_busy_session_still_ends_at_its_maximum_age(
    db: Database, people: UserService, alice: User, clock: Clock
) -> None:
    settings = IdentitySettings(session_idle_days=14, session_max_days=30)
    service = SessionService.from_settings(db, people, settings, clock=clock)
    token, session = await service.create(alice, "cookie")
    for _ in range(3):
        clock.advance(days=9)
        resolved, _ = await service.resolve(token)
    assert resolved.expires_at == session.created_at + timedelta(days=30)
    clock.advance(days=3, seconds=-1)
    await service.resolve(token)
    clock.advance(seconds=1)
    await rejected(service, token)


async def test_revoke_is_immediate_here_and_reaches_other_instances_within_the_ttl(
    service: SessionService, db: Database, alice: User, clock: Clock
) -> None:
    token, session = await service.create(alice, "cookie")
    other_instance = SessionService(db, clock=clock, cache_ttl=5)
    await service.resolve(token)
    await other_instance.resolve(token)
    assert await service.revoke(session.id)
    assert not await service.revoke(session.id)
    await rejected(service, token)
    with pytest.raises(AuthenticationError):
        await service.resolve_id(session.id)
    await other_instance.resolve(token)
    clock.advance(seconds=5)
    await rejected(other_instance, token)
    assert at((await stored(db, session.id))["revoked_at"]) == clock.now - timedelta(seconds=5)


async def test_revoke_all_but_the_current_session(
    service: SessionService, alice: User, admin: User
) -> None:
    tokens = [(await service.create(alice, "cookie"))[0] for _ in range(3)]
    keep_token, keep = await service.create(alice, "bearer")
    admin_token, _ = await service.create(admin, "cookie")
    for token in (*tokens, keep_token, admin_token):
        await service.resolve(token)
    assert await service.revoke_all(alice.id, except_session=keep.id) == 3
    for token in tokens:
        await rejected(service, token)
    await service.resolve(keep_token)
    await service.resolve(admin_token)
    assert [s.id for s in await service.list_for_user(alice.id)] == [keep.id]
    assert len(await service.list_for_user(alice.id, include_inactive=True)) == 4
    assert await service.revoke_all(alice.id) == 1
    await rejected(service, keep_token)


async def test_disabling_a_user_ends_their_sessions_at_once(
    service: SessionService, people: UserService, db: Database, alice: User, admin: User
) -> None:
    token, session = await service.create(alice, "cookie")
    await service.resolve(token)
    await people.disable(alice.id, actor_id=admin.id)
    await rejected(service, token)
    assert (await stored(db, session.id))["revoked_at"] is not None
    enabled = await people.enable(alice.id, actor_id=admin.id)
    await rejected(service, token)
    disabled_again = await people.disable(alice.id, actor_id=admin.id)
    with pytest.raises(AuthenticationError, match="disabled"):
        await service.create(disabled_again, "cookie")
    stale_copy_token, _ = await service.create(enabled, "cookie")
    await rejected(service, stale_copy_token)


async def test_a_disabled_user_is_refused_even_with_unrevoked_sessions(
    db: Database, people: UserService, alice: User, admin: User, clock: Clock
) -> None:
    """Another instance's cache: the user row says disabled, the session row does not."""
    other_instance = SessionService(db, clock=clock)
    token, session = await other_instance.create(alice, "cookie")
    await people.disable(alice.id, actor_id=admin.id)
    async with db.begin() as conn:
        await conn.execute(
            sessions.update().where(sessions.c.id == session.id).values(revoked_at=None)
        )
    await rejected(other_instance, token)


async def test_role_changes_show_at_once(
    service: SessionService, people: UserService, alice: User, admin: User
) -> None:
    token, _ = await service.create(alice, "cookie")
    assert (await service.resolve(token))[1].role is Role.USER
    await people.set_role(alice.id, "guest", actor_id=admin.id)
    assert (await service.resolve(token))[1].role is Role.GUEST


async def test_cache_answers_a_burst_with_one_query(
    service: SessionService, db: Database, alice: User, clock: Clock
) -> None:
    token, _ = await service.create(alice, "cookie")
    with statements(db) as burst:
        results = await asyncio.gather(*(service.resolve(token) for _ in range(20)))
    assert burst == ["SELECT"]
    assert {session.id for session, _ in results} == {results[0][0].id}
    clock.advance(seconds=4)
    with statements(db) as cached:
        await service.resolve(token)
    assert cached == []
    clock.advance(seconds=1)
    with statements(db) as expired:
        await service.resolve(token)
    assert expired == ["SELECT"]


async def test_a_caller_giving_up_does_not_fail_the_others(
    service: SessionService, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, session = await service.create(alice, "cookie")
    started, gate, loads = asyncio.Event(), asyncio.Event(), []
    real_load = service._load

    async def held_load(where: Any) -> Any:
        loads.append(where)
        started.set()
        await gate.wait()
        return await real_load(where)

    monkeypatch.setattr(service, "_load", held_load)
    first = asyncio.ensure_future(service.resolve(token))
    others = [asyncio.ensure_future(service.resolve(token)) for _ in range(3)]
    await started.wait()
    assert len(loads) == 1
    first.cancel()
    gate.set()
    results = await asyncio.gather(*others)
    assert all(found.id == session.id for found, _ in results)
    assert first.cancelled()
    assert len(loads) == 1


async def test_list_prune_and_bad_input(service: SessionService, alice: User, clock: Clock) -> None:
    _, first = await service.create(alice, "cookie")
    clock.advance(seconds=1)
    _, second = await service.create(alice, "bearer", user_agent="x" * 600)
    assert second.user_agent == "x" * 500
    assert [s.id for s in await service.list_for_user(alice.id)] == [second.id, first.id]
    await service.revoke(first.id)
    clock.advance(days=31)
    assert await service.prune(older_than=timedelta(days=30)) == 1
    assert [s.id for s in await service.list_for_user(alice.id, include_inactive=True)] == [
        second.id
    ]
    with pytest.raises(ValidationError):
        await service.create(alice, "carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        await service.create(alice.model_copy(update={"id": "no-such-user"}), "cookie")


def test_session_durations_come_from_identity_settings(db: Database) -> None:
    with pytest.raises(PydanticValidationError, match="session_max_days"):
        IdentitySettings(session_idle_days=30, session_max_days=7)
    with pytest.raises(ValueError, match="max_age"):
        SessionService(db, idle=timedelta(days=2), max_age=timedelta(days=1))
    assert "idle=14 days" in repr(SessionService.from_settings(db, None, IdentitySettings()))
