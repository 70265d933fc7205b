"""Faithful simulators of the third-party services MediaNest talks to.

Plex Media Server, plex.tv, Overseerr / Jellyseerr and Uptime Kuma, as ASGI apps that follow
the real contracts in ``shared/contracts`` (paths, headers, status codes, paging, error
bodies, enums, and the traps listed in its NOTES.md). Tests, ``medianest demo`` and the
benchmarks run them over real sockets.

* :func:`build_simulator` ``(name, options)`` returns a :class:`SimulatorApp`: an ASGI app
  with ``.state`` (the service's control object), ``.faults`` (live
  :class:`~medianest.simulators.faults.FaultControl`) and ``.requests`` (the recorded
  requests). Names: ``plex``, ``plextv``, ``overseerr``, ``jellyseerr``, ``kuma``.
* :func:`serve_simulator` serves one with uvicorn inside a running event loop;
  :func:`run_simulator` does the same as a blocking call (for the CLI).
* Every simulator also answers ``/__sim__/faults``, ``/__sim__/requests`` and
  ``/__sim__/health`` (see :mod:`medianest.simulators.server`), so one running in another
  process can be steered over HTTP.

All simulators built from the same :class:`SimulatorOptions` agree with each other (same
catalogue, same ids, the plex.tv resources point at the Plex simulator).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from medianest.errors import ConfigurationError
from medianest.simulators.clock import ManualClock
from medianest.simulators.faults import FaultControl, FaultRule
from medianest.simulators.options import PlexAccount, SimulatorOptions
from medianest.simulators.server import RecordedRequest, SimulatorApp

__all__ = [
    "SIMULATORS",
    "FaultControl",
    "FaultRule",
    "ManualClock",
    "PlexAccount",
    "RecordedRequest",
    "SimulatorApp",
    "SimulatorOptions",
    "build_simulator",
    "run_simulator",
    "serve_simulator",
]


def _plex(options: SimulatorOptions) -> SimulatorApp[Any]:
    from medianest.simulators.plex import build_plex

    return build_plex(options)


def _plextv(options: SimulatorOptions) -> SimulatorApp[Any]:
    from medianest.simulators.plextv import build_plextv

    return build_plextv(options)


def _overseerr(options: SimulatorOptions) -> SimulatorApp[Any]:
    from medianest.simulators.overseerr import build_overseerr

    return build_overseerr(options)


def _jellyseerr(options: SimulatorOptions) -> SimulatorApp[Any]:
    from medianest.simulators.overseerr import build_overseerr

    return build_overseerr(options.model_copy(update={"flavour": "jellyseerr"}))


def _kuma(options: SimulatorOptions) -> SimulatorApp[Any]:
    from medianest.simulators.kuma import build_kuma

    return build_kuma(options)


#: Simulator name -> builder.
SIMULATORS: dict[str, Callable[[SimulatorOptions], SimulatorApp[Any]]] = {
    "plex": _plex,
    "plextv": _plextv,
    "overseerr": _overseerr,
    "jellyseerr": _jellyseerr,
    "kuma": _kuma,
}

#: Default ports of the real services (plex.tv has none; 32401 is a local stand-in).
DEFAULT_PORTS = {
    "plex": 32400,
    "plextv": 32401,
    "overseerr": 5055,
    "jellyseerr": 5055,
    "kuma": 3001,
}


def build_simulator(name: str, options: SimulatorOptions | None = None) -> SimulatorApp[Any]:
    """The simulator called ``name``, built from ``options`` (defaults if None).

    Raises :class:`~medianest.errors.ConfigurationError` for an unknown name.
    """
    try:
        builder = SIMULATORS[name]
    except KeyError:
        known = ", ".join(sorted(SIMULATORS))
        raise ConfigurationError(
            f"unknown simulator {name!r}; known: {known}",
            problems=[("simulator", repr(name), f"one of {known}")],
        ) from None
    return builder(options or SimulatorOptions())


async def serve_simulator(
    name: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    options: SimulatorOptions | None = None,
) -> None:
    """Serve simulator ``name`` with uvicorn until cancelled or told to exit."""
    import uvicorn

    app = build_simulator(name, options)
    config = uvicorn.Config(
        app, host=host, port=port or DEFAULT_PORTS[name], log_level="info", lifespan="off"
    )
    await uvicorn.Server(config).serve()


def run_simulator(
    name: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    options: SimulatorOptions | None = None,
) -> None:
    """Blocking :func:`serve_simulator`, for the ``medianest simulate`` command."""
    asyncio.run(serve_simulator(name, host, port, options))
