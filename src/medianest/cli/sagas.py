"""``medianest sagas``: list sagas, show one, retry a compensation that failed.

Sagas live in the event store, so these commands need only the store, not the hub: the
store at ``--events URL`` (also ``$MEDIANEST_EVENTS__URL``), else the configured one, else
the main database. ``retry`` records a retry request on a ``compensation_failed`` saga; a
running ``workers`` instance picks it up at once and compensates again (the steps' code
runs there, not in this command). Exit codes: 0 done, 1 unknown saga or a saga that cannot
be retried, 2 bad options or configuration.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from medianest.cli.main import ConfigOption, out_console, run_async, settings_from
from medianest.config import Settings
from medianest.database import Database
from medianest.database import migrations_runner as migrations
from medianest.errors import BackendError
from medianest.events import EventStore, create_event_store
from medianest.events.backends.sql import async_url
from medianest.sagas import SagaOrchestrator, SagaRecord, SagaState, load, request_retry

T = TypeVar("T")

app = typer.Typer(
    name="sagas",
    help="List sagas, show one, and retry a compensation that failed.",
    no_args_is_help=True,
)

EventsOption = Annotated[
    str | None,
    typer.Option(
        "--events",
        envvar="MEDIANEST_EVENTS__URL",
        help="Event store URL (default: the configured store, else the main database).",
        show_default=False,
    ),
]
IdArgument = Annotated[str, typer.Argument(help="Saga id (from `medianest sagas list`).")]


def events_url(option: str | None, settings: Settings) -> str:
    """``--events``, else ``[events] url``, else the main database (the default home)."""
    return option or settings.events.url or settings.database_url


@contextlib.asynccontextmanager
async def _store(url: str) -> AsyncIterator[EventStore]:
    if url.startswith("memory:"):
        async with create_event_store(url) as store:
            yield store
        return
    async with Database(async_url(url)) as db:
        state = await migrations.status(db)
        if not state.up_to_date:
            raise BackendError(
                f"the database is not migrated (pending: {', '.join(state.pending)}); "
                "run `medianest migrate` first"
            )
        async with create_event_store(url, database=db) as store:
            yield store


def _run(
    option: str | None, config: Path | None, action: Callable[[EventStore], Awaitable[T]]
) -> T:
    url = events_url(option, settings_from(config))

    async def run() -> T:
        async with _store(url) as store:
            return await action(store)

    result: T = run_async(run())
    return result


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(text: str | None, width: int = 80) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("list")
def list_sagas(
    state: Annotated[
        SagaState | None, typer.Option("--state", help="Only sagas in this state.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="At most this many.")
    ] = 50,
    events: EventsOption = None,
    config: ConfigOption = None,
) -> None:
    """List sagas, newest first, with the error of those whose compensation failed."""
    sagas = _run(events, config, lambda store: SagaOrchestrator(store, []).list(state, limit))
    if not sagas:
        out_console.print("no sagas")
        return
    table = Table("id", "definition", "state", "updated", "error")
    for saga in sagas:
        error = f"step {saga.step}: {saga.error}" if saga.step and saga.error else saga.error
        table.add_row(
            escape(saga.id),
            escape(saga.definition),
            saga.state.value,
            _when(saga.updated_at),
            escape(_short(error)),
        )
    out_console.print(table)


def _print_record(record: SagaRecord) -> None:
    lines = [
        f"saga {record.id} ({record.definition})",
        f"state:    {record.state.value}",
        f"started:  {_when(record.started_at)}",
        f"updated:  {_when(record.updated_at)}",
    ]
    if record.error:
        lines.append(
            f"error:    {record.error}"
            + (f" (step {record.failed_step})" if record.failed_step else "")
        )
    lines.append(f"input:    {json.dumps(record.input, ensure_ascii=False)}")
    for line in lines:
        out_console.print(line, markup=False)
    table = Table("#", "step", "status", "attempts", "error", "compensation error")
    for step in record.steps:
        table.add_row(
            str(step.index + 1),
            escape(step.name),
            step.status,
            str(step.attempts),
            escape(_short(step.error, 60)),
            escape(_short(step.compensation_error, 60)),
        )
    out_console.print(table)
    history = Table("version", "event", "at", "data")
    for event in record.history:
        history.add_row(
            str(event.version),
            event.type,
            _when(event.at),
            escape(_short(json.dumps(event.data, ensure_ascii=False), 100)),
        )
    out_console.print(history)


@app.command()
def show(saga_id: IdArgument, events: EventsOption = None, config: ConfigOption = None) -> None:
    """Show one saga: its state, each step, and its whole history."""
    _print_record(_run(events, config, lambda store: load(store, saga_id)))


@app.command()
def retry(saga_id: IdArgument, events: EventsOption = None, config: ConfigOption = None) -> None:
    """Compensate a compensation_failed saga again (once its fault is fixed)."""
    record = _run(events, config, lambda store: request_retry(store, saga_id, by="cli"))
    out_console.print(
        f"Retry of saga {record.id} requested: it is {record.state.value} again; a workers "
        "instance resumes its compensation now.",
        markup=False,
    )
