"""``medianest doctor``: check configuration and every backend and upstream, print a table."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from medianest.api.health import run_checks
from medianest.cli.main import ConfigOption, out_console, run_async, settings_from
from medianest.config import config_path


def doctor(config: ConfigOption = None) -> None:
    """Check the configuration and connectivity to each backend and upstream.

    Prints one row per check with its verdict and the reason; exits 1 if any failed.
    """
    settings = settings_from(config)
    from medianest.app import Hub

    source = config_path(config)
    rows: list[tuple[str, str, str]] = [
        ("configuration", "ok", f"loaded from {source or 'environment and defaults'}")
    ]

    async def run() -> tuple[bool, dict[str, Any]]:
        hub = Hub(settings)
        await hub.database.start()
        try:
            return await run_checks(hub.diagnostics())
        finally:
            await hub.close()
            await hub.database.close()

    ok, results = run_async(run())
    for name, result in results.items():
        reason = result.get("detail") or result.get("reason") or ""
        rows.append((name, result["status"], f"{reason} ({result['duration_ms']} ms)"))
    table = Table(title="medianest doctor", show_lines=False)
    table.add_column("check")
    table.add_column("verdict")
    table.add_column("reason", overflow="fold")
    for name, verdict, reason in rows:
        style = "green" if verdict == "ok" else "red"
        table.add_row(name, f"[{style}]{verdict}[/]", reason)
    out_console.print(table)
    out_console.print("verdict: " + ("[green]healthy[/]" if ok else "[red]problems found[/]"))
    if not ok:
        raise typer.Exit(1)
