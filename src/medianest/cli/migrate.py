"""``medianest migrate``: apply (or show) database migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from medianest.cli.main import ConfigOption, out_console, run_async, settings_from
from medianest.database import Database, MigrationStatus
from medianest.database import migrations_runner as migrations


def migrate(
    config: ConfigOption = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only report; exit 1 when migrations are pending.")
    ] = False,
) -> None:
    """Apply pending database migrations (idempotent; safe with several processes)."""
    settings = settings_from(config)

    async def run() -> tuple[MigrationStatus, MigrationStatus]:
        async with Database(settings.database_url) as db:
            before = await migrations.status(db)
            after = before if check else await migrations.upgrade(db)
            return before, after

    before, after = run_async(run())
    if check:
        if before.pending:
            out_console.print(f"pending: {', '.join(before.pending)} (at {before.current})")
            raise typer.Exit(1)
        out_console.print(f"up to date at {before.current}")
        return
    if after.applied:
        out_console.print(f"applied {', '.join(after.applied)}; now at {after.current}")
    else:
        out_console.print(f"already up to date at {after.current}")
