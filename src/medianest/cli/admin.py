"""``medianest admin``: the first local admin, and re-encryption after a key rotation.

``create`` makes a local admin account for a hub without Plex (or before anyone signed in):
the password is read from standard input (``--password-stdin``) or asked for twice without
echo, checked against the password policy, stored as an argon2id hash, and must be changed
at the first sign-in. There is no default password anywhere.

``reencrypt`` re-encrypts every Plex token and token-signing key still under an older
``identity.encryption_keys`` entry with the first one; run it after putting a new key first,
then drop the old key from the configuration.

Exit codes: 0 done, 1 refused (the name is taken, the database is not migrated), 2 bad
options or configuration (a password that breaks the policy included).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from medianest.cli.main import ConfigOption, fail, out_console, run_async, settings_from
from medianest.database import Database
from medianest.database import migrations_runner as migrations
from medianest.errors import BackendError, ValidationError
from medianest.security import server_secret
from medianest.security.passwords import Passwords
from medianest.security.roles import Role
from medianest.security.tokens import TokenIssuer
from medianest.security.users import UserService
from medianest.security.vault import Vault

app = typer.Typer(
    name="admin",
    help="Create a local admin; re-encrypt secrets after rotating the encryption key.",
    no_args_is_help=True,
)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = typer.prompt("Password", hide_input=True)
    if typer.prompt("Again", hide_input=True) != first:
        fail("the two passwords differ", 2)
    return str(first)


async def _ready(db: Database) -> None:
    state = await migrations.status(db)
    if not state.up_to_date:
        raise BackendError(
            f"the database is not migrated (pending: {', '.join(state.pending)}); "
            "run `medianest migrate` first"
        )


@app.command()
def create(
    username: Annotated[str, typer.Argument(help="The admin's user name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    email: Annotated[str | None, typer.Option("--email", help="Their e-mail address.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create a local admin who must change the password at first sign-in."""
    settings = settings_from(config)
    password = _password(password_stdin)
    try:
        Passwords(min_length=settings.identity.password_min_length).check_policy(password, username)
    except ValidationError as exc:
        fail(exc.message, 2)

    async def run() -> str:
        secret = await asyncio.to_thread(server_secret, settings)
        async with Database(settings.database_url) as db:
            await _ready(db)
            vault = Vault.from_config(settings.identity.encryption_keys, secret)
            users = UserService.from_settings(db, vault, settings.identity)
            user = await users.create_local(
                username, password, email=email, role=Role.ADMIN, must_change_password=True
            )
            return user.id

    user_id = run_async(run())
    out_console.print(f"Created admin {username} ({user_id}); the password must be changed at")
    out_console.print("the first sign-in (POST /api/v1/auth/login, then /api/v1/auth/password).")


@app.command()
def reencrypt(config: ConfigOption = None) -> None:
    """Re-encrypt Plex tokens and signing keys under the first configured encryption key."""
    settings = settings_from(config)

    async def run() -> tuple[int, int]:
        secret = await asyncio.to_thread(server_secret, settings)
        async with Database(settings.database_url) as db:
            await _ready(db)
            vault = Vault.from_config(settings.identity.encryption_keys, secret)
            users = UserService.from_settings(db, vault, settings.identity)
            tokens = TokenIssuer.from_settings(
                db, vault, settings.identity, settings.server.base_url
            )
            return await users.reencrypt_tokens(vault), await tokens.reencrypt_keys(vault)

    plex_tokens, keys = run_async(run())
    out_console.print(f"Re-encrypted {plex_tokens} Plex token(s) and {keys} signing key(s).")
