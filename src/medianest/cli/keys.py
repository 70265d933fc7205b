"""``medianest keys``: create, list, rotate and revoke API keys.

``create`` and ``rotate`` print the new key once; only its HMAC is stored, so it cannot be
shown again. ``list`` never shows keys, only their ``mn_<key id>`` prefixes. A key may be
named by its key id, its prefix or the whole key. Exit codes: 0 done, 1 unknown key or a
failed operation, 2 bad options or configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from medianest.cli.main import ConfigOption, out_console, run_async, settings_from
from medianest.config import Settings
from medianest.database import Database
from medianest.database import migrations_runner as migrations
from medianest.errors import BackendError, ValidationError
from medianest.security import ApiKeyInfo, ApiKeyService, server_secret, validate_scopes

T = TypeVar("T")

app = typer.Typer(
    name="keys",
    help="Create, list, rotate and revoke API keys (a new key is shown only once).",
    no_args_is_help=True,
)

SHOWN_ONCE = "Shown only this once: store it now, it cannot be recovered."


def _scopes(values: list[str] | None) -> list[str]:
    try:
        return list(validate_scopes(values or ()))
    except ValidationError as exc:
        raise typer.BadParameter(exc.message) from None


KeyIdArgument = Annotated[str, typer.Argument(help="Key id, `mn_<key id>` or the whole key.")]


@contextlib.asynccontextmanager
async def _service(settings: Settings) -> AsyncIterator[ApiKeyService]:
    secret = await asyncio.to_thread(server_secret, settings)
    async with Database(settings.database_url) as db:
        state = await migrations.status(db)
        if not state.up_to_date:
            raise BackendError(
                f"the database is not migrated (pending: {', '.join(state.pending)}); "
                "run `medianest migrate` first"
            )
        yield ApiKeyService(db, secret)


def _run(settings: Settings, action: Callable[[ApiKeyService], Awaitable[T]]) -> T:
    async def run() -> T:
        async with _service(settings) as service:
            return await action(service)

    result: T = run_async(run())
    return result


def _when(moment: datetime | None, default: str = "-") -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else default


def _describe(info: ApiKeyInfo) -> str:
    scopes = ", ".join(info.scopes) or "none"
    return (
        f"{info.prefix} {escape(repr(info.name))} for {escape(info.owner)} "
        f"(scopes: {escape(scopes)}; expires: {_when(info.expires_at, 'never')})"
    )


def _show_new_key(headline: str, plaintext: str) -> None:
    out_console.print(headline)
    out_console.print(plaintext, markup=False)
    out_console.print(f"[bold yellow]{SHOWN_ONCE}[/]")


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. `backup script`.")],
    owner: Annotated[str, typer.Option("--owner", help="Who the key belongs to.")],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", "-s", help="A scope to grant (repeatable); `admin` grants all."),
    ] = None,
    expires_in: Annotated[
        int | None,
        typer.Option("--expires-in", min=1, metavar="DAYS", help="Expire after DAYS days."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create an API key and print it once."""
    scopes = _scopes(scope)
    settings = settings_from(config)
    expires_at = datetime.now(UTC) + timedelta(days=expires_in) if expires_in else None
    info, plaintext = _run(
        settings, lambda service: service.create(name, owner, scopes, expires_at=expires_at)
    )
    _show_new_key(f"Created API key {_describe(info)}", plaintext)


@app.command("list")
def list_keys(
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    owner: Annotated[str | None, typer.Option("--owner", help="Only this owner's keys.")] = None,
    config: ConfigOption = None,
) -> None:
    """List API keys (never the keys themselves, only their prefixes)."""
    settings = settings_from(config)
    keys = _run(settings, lambda service: service.list(owner, include_revoked=all_keys))
    if not keys:
        out_console.print("no API keys")
        return
    now = datetime.now(UTC)
    table = Table("key", "name", "owner", "scopes", "created", "expires", "last used", "state")
    for info in keys:
        state: str = info.state(now)
        if info.replaced_by:
            state += f" by mn_{info.replaced_by}"
        if state.startswith("rotating"):
            state += f" until {_when(info.overlap_until)}"
        table.add_row(
            info.prefix,
            escape(info.name),
            escape(info.owner),
            escape(", ".join(info.scopes)),
            _when(info.created_at),
            _when(info.expires_at, "never"),
            _when(info.last_used_at, "never"),
            state,
        )
    out_console.print(table)


@app.command()
def rotate(
    key_id: KeyIdArgument,
    overlap: Annotated[
        float,
        typer.Option("--overlap", min=0, metavar="HOURS", help="Hours the old key keeps working."),
    ] = 24.0,
    config: ConfigOption = None,
) -> None:
    """Replace a key with a new one; the old key keeps working for the overlap window."""
    settings = settings_from(config)

    async def action(service: ApiKeyService) -> tuple[ApiKeyInfo, ApiKeyInfo, str]:
        new, plaintext = await service.rotate(key_id, overlap=timedelta(hours=overlap))
        old = await service.get(key_id)
        return old, new, plaintext

    old, new, plaintext = _run(settings, action)
    _show_new_key(f"Rotated {old.prefix}: new API key {_describe(new)}", plaintext)
    out_console.print(f"{old.prefix} keeps working until {_when(old.overlap_until)}.")


@app.command()
def revoke(key_id: KeyIdArgument, config: ConfigOption = None) -> None:
    """Revoke a key at once."""
    settings = settings_from(config)
    info = _run(settings, lambda service: service.revoke(key_id))
    out_console.print(f"Revoked {_describe(info)} at {_when(info.revoked_at)}.")
