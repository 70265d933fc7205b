"""``medianest keys`` as an operator runs it: real processes, real exit codes, a real database."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medianest.database import Database
from medianest.errors import AuthenticationError
from medianest.security import ApiKeyInfo, ApiKeyService, find_api_keys, load_or_create_secret

MEDIANEST = [sys.executable, "-m", "medianest"]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIANEST_")}
    env.update(
        MEDIANEST_DATA_DIR=str(tmp_path / "data"), MEDIANEST_LOG__FORMAT="json", COLUMNS="200"
    )
    return subprocess.run(
        [*MEDIANEST, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def verify(tmp_path: Path, key: str) -> ApiKeyInfo:
    """Check ``key`` in this process, with the database and secret file the CLI used."""

    async def check() -> ApiKeyInfo:
        secret = load_or_create_secret(None, tmp_path / "data")
        async with Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'medianest.db'}") as db:
            return await ApiKeyService(db, secret).verify(key)

    return asyncio.run(check())


def the_key(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    keys = find_api_keys(result.stdout)
    assert len(keys) == 1, result.stdout
    assert "shown only this once" in result.stdout.lower()
    assert keys[0] not in result.stderr
    return keys[0]


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    result = run(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_key_lifecycle(migrated: Path) -> None:
    tmp_path = migrated
    key = the_key(
        run(tmp_path, "keys", "create", "backup script", "--owner", "bob", "-s", "catalog:read")
    )
    info = verify(tmp_path, key)
    assert (info.name, info.owner, info.scopes) == ("backup script", "bob", ("catalog:read",))

    listed = run(tmp_path, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert info.prefix in listed.stdout
    assert "backup script" in listed.stdout
    assert "active" in listed.stdout
    assert key not in listed.stdout + listed.stderr
    assert key.split("_")[2][:12] not in listed.stdout

    rotated = run(tmp_path, "keys", "rotate", info.key_id, "--overlap", "2")
    new_key = the_key(rotated)
    assert new_key != key
    assert re.search(rf"{info.prefix} keeps working until \d{{4}}-", rotated.stdout)
    assert verify(tmp_path, key).key_id == info.key_id
    new = verify(tmp_path, new_key)
    assert "rotating" in run(tmp_path, "keys", "list").stdout

    revoked = run(tmp_path, "keys", "revoke", info.prefix)
    assert revoked.returncode == 0, revoked.stderr
    assert f"Revoked {info.prefix}" in revoked.stdout
    with pytest.raises(AuthenticationError):
        verify(tmp_path, key)
    assert verify(tmp_path, new_key).key_id == new.key_id
    assert info.prefix not in run(tmp_path, "keys", "list").stdout
    everything = run(tmp_path, "keys", "list", "--all").stdout
    assert info.prefix in everything
    assert "revoked" in everything

    expiring = the_key(run(tmp_path, "keys", "create", "temp", "--owner", "x", "--expires-in", "7"))
    assert verify(tmp_path, expiring).expires_at is not None

    for secret in (key, new_key, expiring):
        for result in (listed, rotated, revoked):
            assert secret not in result.stderr


def test_unknown_key_exits_1(migrated: Path) -> None:
    for command in ("rotate", "revoke"):
        result = run(migrated, "keys", command, "zzzzzzzzzzzz")
        assert result.returncode == 1
        assert "no API key 'zzzzzzzzzzzz'" in result.stderr
        assert "Traceback" not in result.stderr
    assert run(migrated, "keys", "list").stdout.strip() == "no API keys"


@pytest.mark.parametrize(
    "args",
    [
        ["create", "x"],
        ["create", "x", "--owner", "bob", "--expires-in", "0"],
        ["create", "x", "--owner", "bob", "--scope", "Not A Scope"],
        ["rotate", "abcdefabcdef", "--overlap", "-1"],
        ["revoke"],
        ["frobnicate"],
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = run(tmp_path, "keys", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_unmigrated_database_exits_1_with_advice(tmp_path: Path) -> None:
    result = run(tmp_path, "keys", "create", "x", "--owner", "bob")
    assert result.returncode == 1
    assert "medianest migrate" in result.stderr
    assert not find_api_keys(result.stdout + result.stderr)
