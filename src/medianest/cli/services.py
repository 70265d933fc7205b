"""``medianest services``: list, register and deregister service instances in the registry.

The registry is the configured one (``[discovery] url``; the main database by default).
``register`` validates the definition first: a bad one exits 2 naming every bad field, and
nothing is written. Exit codes: 0 done, 1 unknown instance or registry failure, 2 bad
options or configuration.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from medianest.cli.main import ConfigOption, fail, out_console, run_async, settings_from
from medianest.config import Settings
from medianest.database import Database
from medianest.discovery import Criteria, ServiceRegistry, create_registry
from medianest.discovery.base import parse_instance
from medianest.errors import ValidationError

app = typer.Typer(
    name="services",
    help="List, register and deregister service instances in the registry.",
    no_args_is_help=True,
)


@contextlib.asynccontextmanager
async def open_registry(settings: Settings) -> AsyncIterator[ServiceRegistry]:
    found = settings.discovery
    url = found.url or settings.database_url
    options: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        if url.startswith(("sqlite", "postgres")):
            database = await stack.enter_async_context(Database(url))
            options = {"database": database}
        elif url.startswith("static"):
            options = {"instances": found.instances}
        registry = await stack.enter_async_context(create_registry(url, **options))
        yield registry


@app.command("list")
def list_services(
    name: Annotated[str | None, typer.Option("--name", help="Only this service.")] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="A constraint such as '>=1.2,<2'.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Every registered instance (unhealthy ones included) with its health."""
    settings = settings_from(config)
    try:
        criteria = Criteria(name=name, version=version, healthy_only=False)
    except ValidationError as exc:
        fail(exc.message, 2)

    async def run() -> list[Any]:
        async with open_registry(settings) as registry:
            return await registry.discover(criteria)

    found = run_async(run())
    if not found:
        out_console.print("no instances registered")
        return
    table = Table("service", "id", "version", "endpoints", "state", "ttl", "renewed")
    for reg in found:
        table.add_row(
            escape(reg.instance.name),
            escape(reg.instance.id),
            escape(reg.instance.version),
            escape(", ".join(reg.instance.endpoints)),
            reg.state.value + (f" ({escape(reg.reason)})" if reg.reason else ""),
            f"{reg.ttl:g}s" if reg.ttl else "-",
            reg.renewed_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
    out_console.print(table)


def _metadata(values: list[str] | None) -> dict[str, str]:
    pairs = {}
    for value in values or ():
        key, sep, item = value.partition("=")
        if not sep or not key:
            fail(f"--meta takes KEY=VALUE, not {value!r}", 2)
        pairs[key] = item
    return pairs


@app.command()
def register(
    name: Annotated[str, typer.Argument(help="Service name, e.g. `plex`.")],
    url: Annotated[list[str], typer.Option("--url", help="An endpoint URL (repeatable).")],
    instance_id: Annotated[
        str | None, typer.Option("--id", help="Instance id (default: <name>-<first host>).")
    ] = None,
    version: Annotated[str, typer.Option("--version", help="Its version.")] = "0",
    health_url: Annotated[
        str | None, typer.Option("--health-url", help="URL answering 2xx while healthy.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable).")] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="KEY=VALUE metadata (repeatable).")
    ] = None,
    weight: Annotated[int, typer.Option("--weight", help="Share of traffic.")] = 1,
    ttl: Annotated[
        float | None, typer.Option("--ttl", help="Seconds until it expires (default: never).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Register (or atomically replace) one instance."""
    settings = settings_from(config)
    default_id = f"{name}-{url[0].split('://')[-1].split('/')[0]}".replace(":", "-")
    try:
        instance = parse_instance(
            {
                "id": instance_id or default_id,
                "name": name,
                "version": version,
                "endpoints": url,
                "health_check_url": health_url,
                "tags": tag or [],
                "metadata": _metadata(meta),
                "weight": weight,
            }
        )
    except ValidationError as exc:
        details = "; ".join(f"{field}: {why}" for field, why in (exc.errors or {}).items())
        fail(f"{exc.message}: {details}", 2)

    async def run() -> None:
        async with open_registry(settings) as registry:
            await registry.register(instance, ttl=ttl)

    run_async(run())
    out_console.print(f"registered {instance.id} ({instance.name} {instance.version})")


@app.command()
def deregister(
    instance_id: Annotated[str, typer.Argument(help="The instance id.")],
    config: ConfigOption = None,
) -> None:
    """Remove one instance; exit 1 when it was not registered."""
    settings = settings_from(config)

    async def run() -> bool:
        async with open_registry(settings) as registry:
            return await registry.deregister(instance_id)

    if not run_async(run()):
        fail(f"no instance {instance_id!r} is registered", 1)
    out_console.print(f"deregistered {instance_id}")
