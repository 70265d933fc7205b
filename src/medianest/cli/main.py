"""``medianest``: serve the hub, migrate its database, diagnose its setup.

Exit codes: 0 success, 1 a check or operation failed, 2 bad usage or invalid configuration
(with a message naming each bad key), never a traceback for either.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from medianest import __version__
from medianest.config import Settings, load_settings
from medianest.errors import ConfigurationError, MediaNestError
from medianest.observability import configure_logging

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)

app = typer.Typer(
    name="medianest",
    help="MediaNest: an integration hub for home media stacks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML configuration file (default: $MEDIANEST_CONFIG, else ./medianest.toml).",
        envvar="MEDIANEST_CONFIG",
        show_default=False,
    ),
]


def report_error(message: str) -> None:
    """Print ``error: <message>`` to stderr; the message is text, never Rich markup
    (problems quote regexes and TOML tables whose brackets markup would swallow)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    report_error(message)
    raise typer.Exit(code)


def settings_from(config: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load settings (and set up logging to stderr from them) or exit 2 with the explanation."""
    try:
        settings = load_settings(config, overrides)
    except ConfigurationError as exc:
        report_error(exc.message)
        raise typer.Exit(2) from None
    configure_logging(settings.log.level, settings.log.format)
    return settings


def run_async(coro: Any) -> Any:
    """Run ``coro`` on uvloop when available, translating our errors into exit codes."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    try:
        return runner(coro)
    except ConfigurationError as exc:
        fail(exc.message, 2)
    except MediaNestError as exc:
        fail(exc.message, 1)


@app.command()
def version() -> None:
    """Print the MediaNest version."""
    out_console.print(f"medianest {__version__}")


def _register() -> None:
    from medianest.cli import (
        admin,
        demo,
        dlq,
        doctor,
        gateway,
        keys,
        migrate,
        sagas,
        serve,
        services,
    )

    app.command("serve")(serve.serve)
    app.command("demo")(demo.demo)
    app.command("simulate")(demo.simulate)
    app.add_typer(gateway.app, name="gateway")
    app.command("migrate")(migrate.migrate)
    app.command("doctor")(doctor.doctor)
    app.add_typer(keys.app, name="keys")
    app.add_typer(admin.app, name="admin")
    app.add_typer(services.app, name="services")
    app.add_typer(dlq.app, name="dlq")
    app.add_typer(sagas.app, name="sagas")


_register()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        sys.exit(130)
