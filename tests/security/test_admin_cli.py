"""``medianest admin`` as an operator runs it: real processes, exit codes, a real database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from medianest.database import Database
from medianest.errors import AuthenticationError
from medianest.security import load_or_create_secret
from medianest.security.users import UserService
from medianest.security.vault import Vault

MEDIANEST = [sys.executable, "-m", "medianest"]
PASSWORD = "a-long-admin-password-7"


def run(
    tmp_path: Path, *args: str, stdin: str = "", **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIANEST_")}
    env.update(MEDIANEST_DATA_DIR=str(tmp_path / "data"), MEDIANEST_LOG__FORMAT="json")
    env.update(extra_env)
    return subprocess.run(
        [*MEDIANEST, *args],
        env=env,
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def sign_in(tmp_path: Path, username: str, password: str) -> tuple[str, bool]:
    async def check() -> tuple[str, bool]:
        secret = load_or_create_secret(None, tmp_path / "data")
        async with Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'medianest.db'}") as db:
            users = UserService(db, Vault.from_config((), secret))
            user = await users.authenticate(username, password)
            return user.role.value, user.must_change_password

    return asyncio.run(check())


def test_create_a_local_admin_who_must_change_the_password(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0
    result = run(tmp_path, "admin", "create", "root", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    assert "must be changed" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    assert sign_in(tmp_path, "root", PASSWORD) == ("admin", True)
    try:
        sign_in(tmp_path, "root", "not-the-password")
    except AuthenticationError:
        pass
    else:
        raise AssertionError("a wrong password signed in")
    again = run(tmp_path, "admin", "create", "ROOT", "--password-stdin", stdin=PASSWORD + "\n")
    assert again.returncode == 1
    assert "error:" in again.stderr


def test_refusals_have_clear_messages_and_exit_codes(tmp_path: Path) -> None:
    unmigrated = run(tmp_path, "admin", "create", "root", "--password-stdin", stdin=PASSWORD)
    assert unmigrated.returncode == 1
    assert "medianest migrate" in unmigrated.stderr
    assert run(tmp_path, "migrate").returncode == 0
    weak = run(tmp_path, "admin", "create", "root", "--password-stdin", stdin="short\n")
    assert weak.returncode == 2
    assert "password" in weak.stderr
    assert "Traceback" not in weak.stderr


def test_reencrypt_after_putting_a_new_key_first(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0
    old, new = "base64:" + "A" * 43 + "=", "base64:" + "B" * 43 + "="

    async def plex_user() -> None:
        secret = load_or_create_secret(None, tmp_path / "data")
        async with Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'medianest.db'}") as db:
            users = UserService(db, Vault.from_config(_keys(old), secret))
            await users.upsert_plex(42, "plexer", token="plex-token-xyz")

    asyncio.run(plex_user())
    result = run(tmp_path, "admin", "reencrypt", MEDIANEST_IDENTITY__ENCRYPTION_KEYS=f"{new},{old}")
    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 1 Plex token(s)" in result.stdout

    async def token_with_new_key_only() -> str | None:
        secret = load_or_create_secret(None, tmp_path / "data")
        async with Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'medianest.db'}") as db:
            users = UserService(db, Vault.from_config(_keys(new), secret))
            return await users.plex_token((await users.get_by_plex_id(42)).id)

    assert asyncio.run(token_with_new_key_only()) == "plex-token-xyz"


def _keys(value: str) -> tuple[object, ...]:
    from pydantic import SecretStr

    return (SecretStr(value),)
