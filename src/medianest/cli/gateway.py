"""``medianest gateway check|export``: validate a route table, export it for nginx."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medianest.cli.main import ConfigOption, out_console, report_error, settings_from
from medianest.config import Settings
from medianest.config.gateway import GatewaySettings
from medianest.errors import ConfigurationError
from medianest.gateway.table import RouteTable, load_routes_file

app = typer.Typer(help="The API gateway's route table.", no_args_is_help=True)


def _configured(config: Path | None) -> tuple[Settings, RouteTable]:
    """The settings and the route table they configure (inline routes + routes file)."""
    settings = settings_from(config)
    routes = list(settings.gateway.routes)
    if settings.gateway.routes_file:
        routes += load_routes_file(settings.gateway.routes_file).routes
    GatewaySettings(routes=tuple(routes))
    return settings, RouteTable.of(routes)


@app.command()
def check(
    routes_file: Annotated[Path, typer.Argument(help="TOML file with [[routes]].")],
    config: ConfigOption = None,
) -> None:
    """Validate a routes file and print what it changes against the configured table.

    Exit 0 when valid, 2 with every problem listed when not. Reload a running hub with
    SIGHUP, by editing its routes file, or via POST /api/v1/admin/gateway/reload.
    """
    try:
        new = load_routes_file(routes_file)
        _, current = _configured(config)
    except ConfigurationError as exc:
        report_error(exc.message)
        raise typer.Exit(2) from None
    diff = current.diff(new)
    out_console.print(f"{routes_file}: valid, {len(new.routes)} route(s)")
    for line in diff.lines() or ["(no change against the configured table)"]:
        out_console.print(f"  {line}")


@app.command("export")
def export(
    target: Annotated[str, typer.Argument(help="Only `nginx` for now.")],
    config: ConfigOption = None,
    routes_file: Annotated[
        Path | None, typer.Option("--routes", help="Routes file instead of the configured table.")
    ] = None,
    hub: Annotated[
        str, typer.Option(help="host:port of the hub for routes nginx cannot serve.")
    ] = ("127.0.0.1:8080"),
    listen: Annotated[str, typer.Option(help="nginx listen directive value.")] = "80",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default stdout).")
    ] = None,
) -> None:
    """Write an nginx configuration for what nginx can express of the route table."""
    from medianest.gateway.nginx import export_nginx

    if target != "nginx":
        report_error(f"unknown export target {target!r}; only nginx")
        raise typer.Exit(2)
    try:
        settings, table = _configured(config)
        if routes_file is not None:
            table = load_routes_file(routes_file)
    except ConfigurationError as exc:
        report_error(exc.message)
        raise typer.Exit(2) from None
    gw = settings.gateway
    text = export_nginx(
        table.routes,
        hub=hub,
        listen=listen,
        max_body_bytes=gw.max_body_bytes,
        max_header_bytes=gw.max_header_bytes,
    )
    if output is None:
        print(text, end="")
    else:
        output.write_text(text, encoding="utf-8")
        out_console.print(f"wrote {output}")
