"""People on every database: local accounts, Plex and OIDC sign-ins, roles, the first admin."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from medianest.config.identity import IdentitySettings
from medianest.database import Database
from medianest.database.schema import instance_metadata, users
from medianest.errors import (
    AuthenticationError,
    AuthorizationError,
    ConfigurationError,
    NotFoundError,
    ValidationError,
)
from medianest.security.apikeys_store import validate_scopes
from medianest.security.passwords import Passwords
from medianest.security.roles import ROLE_SCOPES, SCOPES, Principal, Role, scopes_of
from medianest.security.users import UserService
from medianest.security.vault import Vault
from tests.conftest import LogCapture
from tests.support.wallclock import Clock

KEY = secrets.token_bytes(32)
PASSWORD = "correct horse battery"


def cheap(**params: int) -> Passwords:
    options = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1, **params}
    return Passwords(PasswordHasher(**options))


@pytest.fixture
def vault() -> Vault:
    return Vault([KEY])


@pytest.fixture
def service(db: Database, vault: Vault, clock: Clock) -> UserService:
    return UserService(db, vault, passwords=cheap(), clock=clock)


async def row(db: Database, user_id: str) -> dict[str, Any]:
    async with db.connect() as conn:
        result = await conn.execute(select(users).where(users.c.id == user_id))
        return dict(result.mappings().one())


async def admins(db: Database) -> list[str]:
    async with db.connect() as conn:
        result = await conn.execute(select(users.c.username).where(users.c.role == "admin"))
        return sorted(result.scalars())


# --- local accounts --------------------------------------------------------------------------


async def test_first_local_user_is_admin_the_next_are_not(
    service: UserService, clock: Clock
) -> None:
    first = await service.create_local("Alice", PASSWORD, email="a@example.org")
    second = await service.create_local("bob", PASSWORD, display_name="Bob B.")
    assert (first.role, second.role) == (Role.ADMIN, Role.USER)
    assert first.username == "Alice"
    assert first.display_name == "Alice"
    assert second.display_name == "Bob B."
    assert first.email == "a@example.org"
    assert first.has_password
    assert first.must_change_password
    assert first.created_at == first.updated_at == clock.now
    assert first.last_login_at is None
    guest = await service.create_local("carol", PASSWORD, role="guest", must_change_password=False)
    assert guest.role is Role.GUEST
    assert not guest.must_change_password


async def test_usernames_are_unique_whatever_the_case(service: UserService) -> None:
    alice = await service.create_local("Alice", PASSWORD)
    for taken in ("alice", "ALICE", " Alice "):
        with pytest.raises(ValidationError) as caught:
            await service.create_local(taken, PASSWORD)
        assert caught.value.errors == {"username": "taken"}
    assert (await service.get_by_username("aLiCe")).id == alice.id
    for bad in ("", "   ", "x" * 201, "tab\there"):
        with pytest.raises(ValidationError):
            await service.create_local(bad, PASSWORD)
    with pytest.raises(ValidationError) as policy:
        await service.create_local("dave", "short")
    assert "password" in policy.value.errors
    assert await service.count() == 1


async def test_password_hash_is_argon2id_and_authentication(
    service: UserService, db: Database, clock: Clock
) -> None:
    user = await service.create_local("alice", PASSWORD)
    stored = await row(db, user.id)
    assert stored["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in repr(stored)
    assert "argon2" not in repr(user)
    assert "argon2" not in user.model_dump_json()
    clock.advance(minutes=5)
    signed_in = await service.authenticate("ALICE", PASSWORD)
    assert signed_in.id == user.id
    assert signed_in.last_login_at == clock.now
    messages = set()
    for username, password in (("alice", "wrong horse battery"), ("nobody", PASSWORD)):
        with pytest.raises(AuthenticationError) as caught:
            await service.authenticate(username, password)
        messages.add(caught.value.message)
    assert messages == {"invalid username or password"}


async def test_authentication_rehashes_with_new_parameters(
    db: Database, vault: Vault, clock: Clock
) -> None:
    old = UserService(db, vault, passwords=cheap(), clock=clock)
    user = await old.create_local("alice", PASSWORD)
    before = (await row(db, user.id))["password_hash"]
    new = UserService(db, vault, passwords=cheap(time_cost=2), clock=clock)
    await new.authenticate("alice", PASSWORD)
    after = (await row(db, user.id))["password_hash"]
    assert after != before
    assert ",t=2," in after
    await new.authenticate("alice", PASSWORD)
    assert (await row(db, user.id))["password_hash"] == after


async def test_change_and_set_password(service: UserService) -> None:
    user = await service.create_local("alice", PASSWORD)
    with pytest.raises(AuthenticationError):
        await service.change_password(user.id, "not the password", "a brand new passphrase")
    with pytest.raises(ValidationError, match="differ"):
        await service.change_password(user.id, PASSWORD, PASSWORD)
    with pytest.raises(ValidationError):
        await service.change_password(user.id, PASSWORD, "alice")
    changed = await service.change_password(user.id, PASSWORD, "a brand new passphrase")
    assert not changed.must_change_password
    await service.authenticate("alice", "a brand new passphrase")
    with pytest.raises(AuthenticationError):
        await service.authenticate("alice", PASSWORD)
    reset = await service.set_password(user.id, "temporary passphrase")
    assert reset.must_change_password
    await service.authenticate("alice", "temporary passphrase")
    with pytest.raises(NotFoundError):
        await service.set_password("missing", "temporary passphrase")


async def test_disabled_users_cannot_sign_in(service: UserService) -> None:
    await service.create_local("root", PASSWORD)
    alice = await service.create_local("alice", PASSWORD)
    disabled = await service.disable(alice.id, actor_id=None)
    assert disabled.disabled
    with pytest.raises(AuthenticationError, match="invalid username or password"):
        await service.authenticate("alice", PASSWORD)
    assert not (await service.enable(alice.id)).disabled
    await service.authenticate("alice", PASSWORD)


# --- Plex sign-ins ---------------------------------------------------------------------------


async def test_plex_upsert_creates_then_updates(
    service: UserService, db: Database, clock: Clock
) -> None:
    user, created = await service.upsert_plex(
        1001, "PlexFan", email="fan@example.org", display_name="Fan", token="tok-one"
    )
    assert created
    assert user.plex_id == "1001"
    assert user.has_plex_token
    assert (user.username, user.display_name, user.role) == ("PlexFan", "Fan", Role.ADMIN)
    assert user.last_login_at == clock.now
    clock.advance(days=1)
    again, created = await service.upsert_plex(
        "1001", "PlexFan2", email="new@example.org", token="tok-two"
    )
    assert not created
    assert again.id == user.id
    assert (again.username, again.display_name, again.email) == (
        "PlexFan2",
        "PlexFan2",
        "new@example.org",
    )
    assert again.last_login_at == clock.now
    assert again.created_at == user.created_at
    assert await service.plex_token(again) == "tok-two"
    kept, _ = await service.upsert_plex(1001, "PlexFan2")
    assert kept.email == "new@example.org"
    assert await service.plex_token(kept) == "tok-two"
    assert (await service.get_by_plex_id(1001)).id == user.id
    with pytest.raises(ValidationError):
        await service.upsert_plex("12ab", "x")


async def test_plex_token_is_encrypted_and_bound_to_its_user(
    service: UserService, db: Database, vault: Vault
) -> None:
    alice, _ = await service.upsert_plex(1, "alice", token="alice-plex-token")
    bob, _ = await service.upsert_plex(2, "bob", token="bob-plex-token")
    stored = await row(db, alice.id)
    assert stored["plex_token_enc"].startswith(f"v1.{vault.primary_key_id}.")
    assert "alice-plex-token" not in repr(stored)
    assert "alice-plex-token" not in repr(alice)
    assert await service.plex_token(alice.id) == "alice-plex-token"
    async with db.begin() as conn:
        await conn.execute(
            update(users)
            .where(users.c.id == bob.id)
            .values(plex_token_enc=stored["plex_token_enc"])
        )
    with pytest.raises(AuthenticationError):
        await service.plex_token(bob.id)
    none, _ = await service.upsert_plex(3, "carol")
    assert await service.plex_token(none) is None


async def test_plex_username_clash_gets_a_suffix(service: UserService) -> None:
    local = await service.create_local("bob", PASSWORD)
    plex_bob, _ = await service.upsert_plex(7, "Bob")
    other_bob, _ = await service.upsert_plex(8, "BOB")
    assert [local.username, plex_bob.username, other_bob.username] == ["bob", "Bob-2", "BOB-3"]
    renamed, _ = await service.upsert_plex(8, "bob")
    assert renamed.username == "BOB-3"


async def test_reencrypt_tokens_after_vault_key_rotation(
    db: Database, vault: Vault, clock: Clock
) -> None:
    service = UserService(db, vault, passwords=cheap(), clock=clock)
    ids = [
        (await service.upsert_plex(n + 1, f"user{n}", token=f"token-{n}"))[0].id for n in range(3)
    ]
    await service.upsert_plex(9, "no-token")
    new_key = secrets.token_bytes(32)
    during = UserService(db, Vault([new_key, KEY]), passwords=cheap(), clock=clock)
    assert await during.reencrypt_tokens() == 3
    assert await during.reencrypt_tokens() == 0
    only_new = UserService(db, Vault([new_key]), passwords=cheap(), clock=clock)
    for n, user_id in enumerate(ids):
        assert await only_new.plex_token(user_id) == f"token-{n}"
        assert (await row(db, user_id))["plex_token_enc"].split(".")[1] != vault.primary_key_id
    with pytest.raises(ConfigurationError):
        await service.plex_token(ids[0])


# --- OIDC sign-ins ---------------------------------------------------------------------------


async def test_oidc_upsert_applies_the_role_mapping_at_each_sign_in(service: UserService) -> None:
    root = await service.create_local("root", PASSWORD)
    claims = {"preferred_username": "carol", "email": "c@example.org", "name": "Carol C."}
    carol, created = await service.upsert_oidc("https://idp", "sub-1", claims, role="guest")
    assert created
    assert carol.role is Role.GUEST
    assert (carol.username, carol.email, carol.display_name) == (
        "carol",
        "c@example.org",
        "Carol C.",
    )
    promoted, created = await service.upsert_oidc("https://idp", "sub-1", claims, role=Role.ADMIN)
    assert not created
    assert promoted.role is Role.ADMIN
    assert promoted.id == carol.id
    kept, _ = await service.upsert_oidc("https://idp", "sub-1", claims, role=None)
    assert kept.role is Role.ADMIN
    demoted, _ = await service.upsert_oidc("https://idp", "sub-1", claims, role="user")
    assert demoted.role is Role.USER
    other_idp, created = await service.upsert_oidc("https://other", "sub-1", claims, role=None)
    assert created
    assert other_idp.id != carol.id
    assert other_idp.username == "carol-2"
    assert (await service.get_by_oidc("https://idp", "sub-1")).id == carol.id
    assert root.role is Role.ADMIN


async def test_oidc_mapping_never_demotes_the_last_admin(
    service: UserService, logs: LogCapture
) -> None:
    first, _ = await service.upsert_oidc("https://idp", "s1", {"email": "a@x.org"}, role="user")
    assert first.role is Role.ADMIN
    assert first.username == "a@x.org"
    again, _ = await service.upsert_oidc("https://idp", "s1", {}, role="guest")
    assert again.role is Role.ADMIN
    assert "role mapping would demote the last admin; kept" in logs.text


# --- the first admin and the configured admin --------------------------------------------------


async def instances(
    stack: contextlib.AsyncExitStack, url: str, vault: Vault, count: int
) -> list[UserService]:
    """``count`` services as if in as many processes, connected already so that their
    transactions really overlap."""
    services = []
    for _ in range(count):
        database = await stack.enter_async_context(Database(url))
        await database.ping()
        services.append(UserService(database, vault))
    return services


async def test_concurrent_first_sign_ins_make_exactly_one_admin(
    database_url: str, db: Database, vault: Vault
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        services = await instances(stack, database_url, vault, 8)
        results = await asyncio.gather(
            *(s.upsert_plex(100 + n, f"racer{n}", token=f"t{n}") for n, s in enumerate(services))
        )
    assert all(created for _, created in results)
    made_admin = [user.username for user, _ in results if user.role is Role.ADMIN]
    assert len(made_admin) == 1
    assert await admins(db) == made_admin
    async with db.connect() as conn:
        marker = (
            await conn.execute(
                select(instance_metadata.c.value).where(instance_metadata.c.key == "first_admin")
            )
        ).scalar_one()
    assert marker == next(user.id for user, _ in results if user.role is Role.ADMIN)


async def test_concurrent_first_sign_ins_of_one_account_make_one_user(
    database_url: str, db: Database, vault: Vault
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        services = await instances(stack, database_url, vault, 4)
        results = await asyncio.gather(*(s.upsert_plex(42, "same") for s in services))
    assert sum(created for _, created in results) == 1
    assert {user.id for user, _ in results} == {results[0][0].id}
    assert all(user.role is Role.ADMIN for user, _ in results)


async def test_configured_admin_plex_account(db: Database, vault: Vault, clock: Clock) -> None:
    settings = IdentitySettings(admin_plex_username="TheOwner", default_role="guest")
    service = UserService.from_settings(db, vault, settings, passwords=cheap(), clock=clock)
    friend, _ = await service.upsert_plex(1, "friend")
    assert friend.role is Role.GUEST
    owner, _ = await service.upsert_plex(2, "theowner")
    assert owner.role is Role.ADMIN
    other_admin = await service.set_role(friend.id, Role.ADMIN, actor_id=owner.id)
    await service.set_role(owner.id, Role.USER, actor_id=other_admin.id)
    assert (await service.get(owner.id)).role is Role.USER
    again, _ = await service.upsert_plex(2, "TheOwner")
    assert again.role is Role.ADMIN
    by_id = UserService(db, vault, admin_plex="3", clock=clock)
    assert (await by_id.upsert_plex(3, "someone"))[0].role is Role.ADMIN
    assert (await by_id.upsert_plex(4, "3"))[0].role is Role.USER
    assert (await by_id.upsert_plex(5, "nobody"))[0].role is Role.USER


# --- keeping an admin ------------------------------------------------------------------------


async def test_admins_cannot_demote_or_disable_themselves(service: UserService) -> None:
    root = await service.create_local("root", PASSWORD)
    other = await service.create_local("other", PASSWORD, role="admin")
    with pytest.raises(AuthorizationError, match="your own admin role"):
        await service.set_role(root.id, "user", actor_id=root.id)
    with pytest.raises(AuthorizationError, match="your own account"):
        await service.disable(root.id, actor_id=root.id)
    assert (await service.get(root.id)).role is Role.ADMIN
    assert (await service.set_role(root.id, "guest", actor_id=other.id)).role is Role.GUEST
    with pytest.raises(ValidationError, match="no role"):
        await service.set_role(root.id, "emperor", actor_id=other.id)
    with pytest.raises(ValidationError, match="one of admin, user, guest"):
        await service.create_local("emperor", PASSWORD, role="emperor")


async def test_the_last_enabled_admin_is_kept(service: UserService) -> None:
    root = await service.create_local("root", PASSWORD)
    helper = await service.create_local("helper", PASSWORD)
    for change in (
        service.set_role(root.id, "user", actor_id=helper.id),
        service.disable(root.id, actor_id=helper.id),
    ):
        with pytest.raises(ValidationError, match="last enabled admin") as caught:
            await change
        assert "root" in caught.value.message
    second = await service.set_role(helper.id, "admin", actor_id=root.id)
    await service.disable(second.id, actor_id=root.id)
    with pytest.raises(ValidationError, match="last enabled admin"):
        await service.set_role(root.id, "user", actor_id=second.id)
    await service.enable(second.id)
    assert (await service.set_role(root.id, "user", actor_id=second.id)).role is Role.USER
    assert await admins(service._db) == ["helper"]


async def test_two_admins_demoting_each_other_at_once_leave_one(
    database_url: str, db: Database, vault: Vault
) -> None:
    setup = UserService(db, vault, passwords=cheap())
    one = await setup.create_local("one", PASSWORD)
    two = await setup.create_local("two", PASSWORD, role="admin")
    async with contextlib.AsyncExitStack() as stack:
        a, b = await instances(stack, database_url, vault, 2)
        results = await asyncio.gather(
            a.set_role(two.id, "user", actor_id=one.id),
            b.set_role(one.id, "user", actor_id=two.id),
            return_exceptions=True,
        )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1, results
    assert isinstance(failures[0], ValidationError), results
    assert len(await admins(db)) == 1


# --- reading ---------------------------------------------------------------------------------


async def test_get_list_count_and_not_found(service: UserService, clock: Clock) -> None:
    created = []
    for n in range(5):
        created.append(await service.create_local(f"user{n}", PASSWORD))
        clock.advance(seconds=1)
    assert await service.count() == 5
    page = await service.list(offset=1, limit=2)
    assert [u.id for u in page] == [created[1].id, created[2].id]
    assert [u.id for u in await service.list()] == [u.id for u in created]
    for bad in ({"offset": -1}, {"limit": 0}, {"limit": 1001}):
        with pytest.raises(ValidationError):
            await service.list(**bad)
    for missing in (
        service.get("nope"),
        service.get_by_username("nobody"),
        service.get_by_plex_id(404),
        service.get_by_oidc("https://idp", "nobody"),
        service.set_role("nope", "user", actor_id=None),
        service.disable("nope", actor_id=None),
        service.plex_token("nope"),
    ):
        with pytest.raises(NotFoundError):
            await missing


async def test_listeners_hear_every_change(service: UserService) -> None:
    heard: list[str] = []
    service.add_listener(heard.append)
    root = await service.create_local("root", PASSWORD)
    alice, _ = await service.upsert_plex(5, "alice")
    assert heard == []
    await service.upsert_plex(5, "alice")
    await service.set_role(alice.id, "guest", actor_id=root.id)
    await service.disable(alice.id, actor_id=root.id)
    await service.enable(alice.id, actor_id=root.id)
    await service.set_password(root.id, "another passphrase")
    assert heard == [alice.id] * 4 + [root.id]


# --- roles and principals --------------------------------------------------------------------


def test_role_scopes_and_principals() -> None:
    assert validate_scopes(SCOPES) == tuple(SCOPES)
    assert scopes_of("admin") == {"admin"}
    assert scopes_of(Role.GUEST) == {"catalog:read", "services:read"}
    assert ROLE_SCOPES[Role.USER] == {
        "catalog:read",
        "services:read",
        "requests:read",
        "requests:write",
        "downloads:read",
        "downloads:write",
    }
    for role, granted in ROLE_SCOPES.items():
        assert granted <= set(SCOPES), role
    root = Principal.for_user("u1", "root", "admin", session_id="s1")
    assert (root.kind, root.role, root.session_id, root.key_id, root.owner) == (
        "user",
        Role.ADMIN,
        "s1",
        None,
        "u1",
    )
    assert all(root.has(scope) for scope in [*SCOPES, "added:later"])
    assert root.is_admin
    assert root.can_see_all
    guest = Principal.for_user("u2", "visitor", Role.GUEST)
    assert guest.has("catalog:read")
    assert not guest.has("requests:write")
    assert not guest.is_admin
    assert not guest.can_see_all
    user = Principal.for_user("u3", "alice", Role.USER)
    assert user.has("downloads:write")
    assert not user.has("users:admin")
    key = Principal.for_api_key("k1", "ci", ["requests:read"], owner="u3")
    assert (key.kind, key.role, key.key_id, key.session_id, key.owner) == (
        "api_key",
        None,
        "k1",
        None,
        "u3",
    )
    assert key.has("requests:read")
    assert not key.has("requests:write")
    assert Principal.for_api_key("k2", "ops", ["admin"], owner="u1").can_see_all
    with pytest.raises(ValueError, match="emperor"):
        Principal.for_user("u4", "x", "emperor")
