"""``medianest serve``: run the hub under uvicorn (uvloop + httptools).

SIGINT / SIGTERM stop accepting connections, let in-flight requests finish within
``server.graceful_timeout`` seconds, run the lifespan shutdown (which logs
``medianest stopped``) and exit 0.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from medianest.cli.main import ConfigOption, settings_from
from medianest.config import Settings


class StopCleanlyServer(uvicorn.Server):
    """uvicorn's server, minus re-raising the stop signal after a graceful shutdown.

    uvicorn re-raises SIGTERM/SIGINT once it has drained, so the process dies *by* the signal
    (exit status -15). A graceful stop is a success here: the process exits 0.
    A second Ctrl-C still forces the exit (uvicorn's own ``handle_exit``).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class CompanionServer(uvicorn.Server):
    """A server that runs beside the hub's in one process and leaves signals to the hub's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_overrides(
    host: str | None, port: int | None, roles: str | None, data_dir: Path | None
) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    if roles is not None:
        server["roles"] = roles
    overrides: dict[str, Any] = {"server": server} if server else {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return overrides


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """How the hub is served: uvloop, httptools, our logging, graceful drain on SIGTERM."""
    return uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        proxy_headers=settings.server.proxy_headers,
        forwarded_allow_ips=settings.server.forwarded_allow_ips,
        timeout_graceful_shutdown=int(max(1, settings.server.graceful_timeout)),
        server_header=False,
    )


def serve(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option(help="Interface to bind [default: 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [default: 8080].")] = None,
    roles: Annotated[
        str | None,
        typer.Option(help="Comma-separated roles: gateway,api,realtime,workers [default: all]."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the hub keeps its files [default: ./data].")
    ] = None,
    demo_when_unconfigured: Annotated[
        bool,
        typer.Option(
            "--demo-when-unconfigured",
            help="With no [upstreams] configured, run `medianest demo` instead (make run).",
        ),
    ] = False,
) -> None:
    """Run the hub: every role in one process unless --roles says otherwise."""
    overrides = build_overrides(host, port, roles, data_dir)
    settings = settings_from(config, overrides)
    if demo_when_unconfigured and not settings.upstreams:
        import asyncio

        from medianest.cli.demo import run_demo

        asyncio.run(run_demo(lambda extra: settings_from(config, {**overrides, **extra})))
        return
    from medianest.app import create_app

    server = StopCleanlyServer(uvicorn_config(create_app(settings), settings))
    server.run()
    if not server.started:
        raise typer.Exit(1)
