"""Passwords: the policy, argon2id hashing off the event loop, verification and rehashing."""

from __future__ import annotations

import threading

import pytest
from argon2 import PasswordHasher

from medianest.errors import ValidationError
from medianest.security import passwords as passwords_module
from medianest.security.passwords import (
    Passwords,
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_password,
)

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(CHEAP)


@pytest.mark.parametrize(
    ("password", "username", "reason"),
    [
        ("", None, "at least 12"),
        ("elevenchars", None, "at least 12"),
        ("x" * 1025 + "y", None, "at most 1024"),
        ("aaaaaaaaaaaaaaaa", None, "one character"),
        ("            ", None, "one character"),
        ("LongUserName2024", "longusername2024", "username"),
        ("longusername2024", " LongUserName2024 ", "username"),
    ],
)
def test_policy_refuses(
    passwords: Passwords, password: str, username: str | None, reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        passwords.check_policy(password, username)
    assert reason in caught.value.errors["password"]
    assert reason in caught.value.message
    if password:
        assert password not in caught.value.message


def test_policy_accepts_long_passphrases_of_any_composition(passwords: Passwords) -> None:
    for password in (
        "correct horse battery",
        "aaaaaaaaaaab",
        "x" * 1023 + "y",
        "пароль-длинный",
        "alice-password",
    ):
        passwords.check_policy(password, "alice")
    check_password_policy("twelve chars", "bob")


def test_minimum_length_is_configurable() -> None:
    strict = Passwords(CHEAP, min_length=20)
    with pytest.raises(ValidationError, match="at least 20"):
        strict.check_policy("nineteen characters")
    strict.check_policy("twenty characters ok")
    with pytest.raises(ValueError, match="min_length"):
        Passwords(CHEAP, min_length=0)


async def test_hash_is_argon2id_salted_and_verifies(passwords: Passwords) -> None:
    first = await passwords.hash("correct horse battery")
    second = await passwords.hash("correct horse battery")
    assert first.startswith("$argon2id$v=19$")
    assert first != second
    assert "correct horse" not in first
    assert await passwords.verify(first, "correct horse battery")
    assert await passwords.verify(second, "correct horse battery")
    assert not await passwords.verify(first, "correct horse batterY")
    assert not await passwords.verify(first, "")
    assert not await passwords.verify(first, "x" * 2000)


async def test_broken_hashes_never_match(passwords: Passwords) -> None:
    for broken in ("", "plain text", "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$", "$2b$12$abc"):
        assert not await passwords.verify(broken, "anything at all")


async def test_hashing_and_verifying_run_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    class Recording(PasswordHasher):
        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            seen.append(threading.get_ident())
            return super().hash(password, salt=salt)

        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            seen.append(threading.get_ident())
            return super().verify(hash, password)

    recording = Passwords(Recording(time_cost=1, memory_cost=1024, parallelism=1))
    hashed = await recording.hash("correct horse battery")
    assert await recording.verify(hashed, "correct horse battery")
    await recording.verify_nothing("who knows")
    assert len(seen) == 4
    assert loop_thread not in seen


async def test_rehash_needed_when_parameters_change(passwords: Passwords) -> None:
    cheap_hash = await passwords.hash("correct horse battery")
    assert not passwords.needs_rehash(cheap_hash)
    stronger = Passwords(PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    assert stronger.needs_rehash(cheap_hash)
    assert await stronger.verify(cheap_hash, "correct horse battery")
    assert needs_rehash(cheap_hash)
    assert passwords.needs_rehash("not a hash")


async def test_module_functions_use_the_default_parameters() -> None:
    hashed = await hash_password("correct horse battery")
    default = PasswordHasher()
    assert f"m={default.memory_cost},t={default.time_cost},p={default.parallelism}" in hashed
    assert await verify_password(hashed, "correct horse battery")
    assert not await verify_password(hashed, "wrong horse battery")
    assert not needs_rehash(hashed)


def test_repr_shows_parameters_only(passwords: Passwords) -> None:
    assert repr(passwords) == "Passwords(min_length=12, argon2id m=1024 t=1 p=1)"
    assert passwords_module.MAX_LENGTH == 1024
