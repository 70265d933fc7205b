"""Test-only hooks: stop or fail a ``request-media`` saga at a named point, by title.

The crash test runs the hub as a child process and must kill it at a *known* point of a
saga -- not "about when the step looked busy". With the environment variable
``MEDIANEST_TEST_SAGA_HOOKS`` set to JSON such as ::

    {"dir": "/tmp/run", "hooks": {"603": ["pause@create_in_overseerr:exit"],
                                  "604": ["fail@publish_created:enter",
                                          "pause@create_in_overseerr:undo-exit"]}}

the saga requesting TMDB id 603 writes the file ``/tmp/run/603@create_in_overseerr:exit``
when its step ``create_in_overseerr`` has done its work but before the orchestrator
records it, and then waits forever: the test sees the file and sends SIGKILL. ``fail``
raises :class:`HookFailure` (not retried: the saga compensates). Points are
``<step>:enter``, ``<step>:exit``, ``<step>:undo-enter`` and ``<step>:undo-exit``.

Unset (always, outside tests), :func:`hooks_from_env` returns None and the steps run
unwrapped.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from medianest.errors import ConfigurationError, MediaNestError
from medianest.sagas.base import StepContext

ENV = "MEDIANEST_TEST_SAGA_HOOKS"


class HookFailure(MediaNestError):
    """A failure asked for by a test hook."""


@dataclass(frozen=True)
class SagaHooks:
    """Hooks by TMDB id (module docstring)."""

    directory: Path
    by_tmdb: Mapping[int, frozenset[str]]

    async def at(self, ctx: StepContext, point: str) -> None:
        """Run the hooks of ``ctx``'s saga at ``point`` (``<step>:<phase>``)."""
        tmdb_id = ctx.input.get("tmdb_id")
        wanted = self.by_tmdb.get(tmdb_id) if isinstance(tmdb_id, int) else None
        if not wanted:
            return
        if f"fail@{point}" in wanted:
            raise HookFailure(f"test hook: fail at {point}")
        if f"pause@{point}" in wanted:
            marker = self.directory / f"{tmdb_id}@{point}"
            await asyncio.to_thread(marker.write_text, ctx.saga_id)
            await asyncio.Event().wait()


def hooks_from_env(environ: Mapping[str, str] | None = None) -> SagaHooks | None:
    """The hooks ``MEDIANEST_TEST_SAGA_HOOKS`` asks for, or None when it is unset."""
    raw = (os.environ if environ is None else environ).get(ENV)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        hooks = {int(k): frozenset(str(v) for v in vs) for k, vs in data["hooks"].items()}
        return SagaHooks(Path(data["dir"]), hooks)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"{ENV} is not valid hook JSON: {exc}") from exc
